/**
 * The SSH transport: the only module that opens connections. One connection per host for the whole deploy;
 * the host key is verified before authentication; the private key stays in memory; no agent, no forwarding.
 */
import { NodeSSH } from 'node-ssh'
import type { Readable } from 'node:stream'
import type { ClientChannel } from 'ssh2'
import type { Host, SshSettings } from '../settings.js'
import { connectHost } from './connect.js'
import { shellLine } from './quote.js'

export interface ExecResult {
  code: number
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface RunOptions {
  stdin?: Readable | string
  timeoutMs?: number
  /** Called with every complete output line, as it arrives. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void
}

export { ConnectError } from './connect.js'

function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; flush(): void } {
  let rest = ''
  return {
    push(chunk) {
      const parts = (rest + chunk.toString('utf8')).split('\n')
      rest = parts.pop() ?? ''
      parts.forEach(onLine)
    },
    flush() {
      if (rest) onLine(rest)
      rest = ''
    }
  }
}

export class Remote {
  private constructor(
    /** `host` or `host:port`, for messages. */
    readonly name: string,
    private readonly ssh: NodeSSH,
    private readonly via?: NodeSSH
  ) {}

  static label(host: Host): string {
    return host.port === 22 ? host.host : `${host.host}:${host.port}`
  }

  static async connect(host: Host, s: SshSettings): Promise<Remote> {
    const name = Remote.label(host)
    const { ssh, via } = await connectHost(host, s, name)
    return new Remote(name, ssh, via)
  }

  /** Runs a POSIX sh script; never throws for a non-zero exit (the caller decides what failure means). */
  async run(script: string, o: RunOptions = {}): Promise<ExecResult> {
    let channel: ClientChannel | undefined
    let timedOut = false
    const out = lineSplitter(l => o.onLine?.(l, 'stdout'))
    const err = lineSplitter(l => o.onLine?.(l, 'stderr'))
    const timer =
      o.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true
            channel?.signal('KILL')
            channel?.close()
          }, o.timeoutMs)
    try {
      const r = await this.ssh.execCommand(shellLine(script), {
        stdin: o.stdin,
        noTrim: true,
        onChannel: c => (channel = c),
        onStdout: c => out.push(c),
        onStderr: c => err.push(c)
      })
      out.flush()
      err.flush()
      return { code: timedOut ? 124 : (r.code ?? 255), stdout: r.stdout, stderr: r.stderr, timedOut }
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Starts a script that keeps running (and holding whatever it took) until `release()` closes its stdin, or
   * the connection ends. Resolves once the script prints `ready`; rejects with its output if it exits first.
   */
  async hold(script: string, ready: string): Promise<{ release(): Promise<void> }> {
    const connection = this.ssh.connection
    if (!connection) throw new Error(`host ${this.name}: not connected`)
    return new Promise((resolve, reject) => {
      connection.exec(shellLine(script), (e, channel) => {
        if (e) return reject(e)
        let output = ''
        let held = false
        const ended = new Promise<void>(r => channel.on('close', () => r()))
        const seen = (chunk: Buffer): void => {
          output += chunk.toString('utf8')
          if (!held && output.split('\n').includes(ready)) {
            held = true
            resolve({
              release: async () => {
                channel.end()
                // Wait for the lock to be let go, but never hold the process open once it has been.
                let timer: NodeJS.Timeout | undefined
                await Promise.race([ended, new Promise(r => (timer = setTimeout(r, 5000)))])
                clearTimeout(timer)
              }
            })
          }
        }
        channel.on('data', seen)
        channel.stderr.on('data', seen)
        channel.on('exit', (code: number | null) => {
          if (!held)
            reject(Object.assign(new Error(output.trim() || `exit ${code}`), { code: code ?? 255, output }))
        })
      })
    })
  }

  dispose(): void {
    this.ssh.dispose()
    this.via?.dispose()
  }
}
