/**
 * The SSH transport: the only module that opens connections. One connection per host for the whole deploy;
 * the host key is verified before authentication; the private key stays in memory; no agent, no forwarding.
 */
import { NodeSSH } from 'node-ssh'
import type { Readable } from 'node:stream'
import type { ClientChannel, ConnectConfig } from 'ssh2'
import type { Host, SshSettings } from '../settings.js'
import { parseKnownHosts, pinnedKeyTypes, verifyHostKey } from './hostkeys.js'
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

export class ConnectError extends Error {
  constructor(
    readonly host: string,
    message: string
  ) {
    super(`host ${host}: ${message}`)
    this.name = 'ConnectError'
  }
}

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
    const pins = { knownHosts: parseKnownHosts(s.knownHosts ?? ''), fingerprints: s.fingerprints }
    let via: NodeSSH | undefined
    let sock: ConnectConfig['sock']
    if (s.jumpHost) {
      const j = s.jumpHost
      via = await open({ host: j.host, port: j.port }, j.user, s, pins, `jump host ${j.host}`)
      try {
        sock = await new Promise((resolve, reject) =>
          via!.connection!.forwardOut('127.0.0.1', 0, host.host, host.port, (err, stream) =>
            err
              ? reject(new ConnectError(name, `jump host ${j.host} cannot reach it: ${err.message}`))
              : resolve(stream)
          )
        )
      } catch (e) {
        via.dispose()
        throw e
      }
    }
    try {
      const ssh = await open(host, host.user ?? s.user, s, pins, name, sock)
      return new Remote(name, ssh, via)
    } catch (e) {
      via?.dispose()
      throw e
    }
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

async function open(
  host: Host,
  user: string,
  s: SshSettings,
  pins: Parameters<typeof verifyHostKey>[3],
  label: string,
  sock?: ConnectConfig['sock']
): Promise<NodeSSH> {
  const ssh = new NodeSSH()
  let refusal: string | undefined
  const preferred = pinnedKeyTypes(pins.knownHosts, host.host, host.port)
  try {
    await ssh.connect({
      host: host.host,
      port: host.port,
      sock,
      username: user,
      privateKey: s.privateKey,
      passphrase: s.passphrase,
      readyTimeout: s.connectTimeout * 1000,
      keepaliveInterval: 10_000,
      keepaliveCountMax: 3,
      tryKeyboard: false,
      agentForward: false,
      ...(preferred.length ? { algorithms: { serverHostKey: { prepend: preferred } as never } } : {}),
      // Called during key exchange, before any authentication is attempted.
      hostVerifier: (key: Buffer) => {
        const v = verifyHostKey(key, host.host, host.port, pins)
        if (!v.ok) refusal = v.reason
        return v.ok
      }
    })
    return ssh
  } catch (e) {
    ssh.dispose()
    const msg = e instanceof Error ? e.message : String(e)
    if (refusal) throw new ConnectError(label, refusal)
    if (/authentication methods failed/i.test(msg)) {
      throw new ConnectError(
        label,
        `authentication as ${user} failed: the server does not accept ssh-key for that user (is its public key in ~${user}/.ssh/authorized_keys?)`
      )
    }
    if (/ECONNREFUSED/.test(msg))
      throw new ConnectError(label, `connection refused on port ${host.port}: is sshd running there?`)
    if (/Timed out|ETIMEDOUT/i.test(msg)) {
      throw new ConnectError(
        label,
        `no SSH handshake within ${s.connectTimeout} s (firewall, wrong port, or host down)`
      )
    }
    if (/ENOTFOUND|EAI_AGAIN/.test(msg)) throw new ConnectError(label, `host name does not resolve`)
    throw new ConnectError(label, msg)
  }
}
