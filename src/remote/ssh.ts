/**
 * The SSH transport: the only module that opens connections. One connection per host for the whole deploy;
 * the host key is verified before authentication; the private key stays in memory; no agent, no forwarding.
 */
import { NodeSSH } from 'node-ssh'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import type { ClientChannel } from 'ssh2'
import type { Host, SshSettings } from '../settings.js'
import { connectHost } from './connect.js'
import { shellLine } from './quote.js'

export interface ExecResult {
  code: number
  stdout: string
  stderr: string
  /** Set when the connection was lost while the command ran (or before it started): why. */
  lost?: string
}

export interface RunOptions {
  /** Sent to the command's stdin; a stream is destroyed when the command ends, read or not. */
  stdin?: Readable | string
  /** Aborting closes the command's channel and ends `run` at once (the caller kills its processes first). */
  signal?: AbortSignal
  /** Called with every complete output line, as it arrives. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void
  /** The names of the steps the script runs, in order: unused here; a scripted test transport answers by them. */
  steps?: readonly string[]
}

/** What the runner uses of a connection: the seam where the unit tests put a scripted fake (`Remote` is real). */
export interface Connection {
  /** `host` or `host:port`, for messages. */
  readonly name: string
  /** Why the connection is gone, once it is. */
  readonly lost: string | undefined
  run(script: string, o?: RunOptions): Promise<ExecResult>
  hold(script: string, ready: string, timeoutMs: number): Promise<Held>
  dispose(): void
}

/** Opens a connection to a host (the runner receives one: `Remote.connect`, or a test's fake). */
export type Connect = (host: Host, s: SshSettings) => Promise<Connection>

/** A command that holds something on the server (the lock's lease) while it runs. */
export interface Held {
  /** Sends one line to the command's stdin (a renewal); false once the command or the connection is gone. */
  send(line: string): boolean
  /** Sends `last` (if any), closes stdin and waits (at most 5 s) for the command to end. */
  release(last?: string): Promise<void>
  /** Resolves with why, when the command ends or the connection is lost. */
  ended: Promise<string>
}

/** The longest line passed on whole: a longer one (a command printing without new lines) comes in pieces. */
export const MAX_LINE = 64 * 1024
/** What `run` keeps of a command's stdout and stderr: their last characters (a command may print gigabytes). */
export const KEPT_OUTPUT = 1024 * 1024

function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; flush(): void } {
  const decoder = new StringDecoder('utf8')
  let rest = ''
  return {
    push(chunk) {
      const parts = (rest + decoder.write(chunk)).split('\n')
      rest = parts.pop() ?? ''
      parts.forEach(onLine)
      while (rest.length > MAX_LINE) {
        onLine(rest.slice(0, MAX_LINE))
        rest = rest.slice(MAX_LINE)
      }
    },
    flush() {
      rest += decoder.end()
      if (rest) onLine(rest)
      rest = ''
    }
  }
}

/** A string that keeps only the last `max` characters of what is appended (memory stays bounded). */
class Tail {
  private parts: string[] = []
  private size = 0
  constructor(private readonly max: number) {}
  add(s: string): void {
    this.parts.push(s)
    this.size += s.length
    if (this.size > 2 * this.max) this.trim()
  }
  private trim(): void {
    const all = this.parts.join('')
    const kept = all.length > this.max ? all.slice(-this.max) : all
    this.parts = [kept]
    this.size = kept.length
  }
  toString(): string {
    this.trim()
    return this.parts[0] ?? ''
  }
}

export class Remote implements Connection {
  private lostError?: Error
  private readonly lostListeners = new Set<(e: Error) => void>()

  private constructor(
    /** `host` or `host:port`, for messages. */
    readonly name: string,
    private readonly ssh: NodeSSH,
    private readonly via?: NodeSSH
  ) {
    // node-ssh listens for `error` only while connecting: without a listener of our own, an ECONNRESET or a
    // keepalive timeout later is an uncaught exception that kills the action (no revert, no report).
    guard(ssh, e => this.lose(e), 'connection')
    if (via) guard(via, e => this.lose(e), 'jump host connection')
  }

  /** Why the connection is gone, once it is. */
  get lost(): string | undefined {
    return this.lostError?.message
  }

  private lose(e: Error): void {
    if (this.lostError) return
    this.lostError = e
    for (const f of [...this.lostListeners]) f(e)
  }

  static label(host: Host): string {
    return host.port === 22 ? host.host : `${host.host}:${host.port}`
  }

  static async connect(host: Host, s: SshSettings): Promise<Remote> {
    const name = Remote.label(host)
    const { ssh, via } = await connectHost(host, s, name)
    return new Remote(name, ssh, via)
  }

  /**
   * Runs a POSIX sh script; never throws: a non-zero exit, a lost connection (`lost`) and an abort are
   * results the caller decides about. The stdin stream is destroyed when the command ends, so a producer
   * (git archive) waiting on a full pipe is never left behind.
   */
  async run(script: string, o: RunOptions = {}): Promise<ExecResult> {
    const stream = typeof o.stdin === 'string' ? undefined : o.stdin
    const out = lineSplitter(l => o.onLine?.(l, 'stdout'))
    const err = lineSplitter(l => o.onLine?.(l, 'stderr'))
    const stdout = new Tail(KEPT_OUTPUT)
    const stderr = new Tail(KEPT_OUTPUT)
    const client = this.ssh.connection
    if (this.lostError || !client) {
      stream?.destroy()
      const why = this.lostError?.message ?? 'not connected'
      return { code: 255, stdout: '', stderr: why, lost: why }
    }
    return new Promise<ExecResult>(resolve => {
      let channel: ClientChannel | undefined
      let settled = false
      let exit: number | undefined
      const finish = (r: Partial<ExecResult>): void => {
        if (settled) return
        settled = true
        this.lostListeners.delete(onLost)
        o.signal?.removeEventListener('abort', onAbort)
        if (stream) {
          stream.unpipe()
          stream.destroy()
        }
        out.flush()
        err.flush()
        resolve({
          code: exit ?? 255,
          stdout: stdout.toString(),
          stderr: stderr.toString(),
          ...r
        })
      }
      const onLost = (e: Error): void => finish({ code: 255, lost: e.message })
      const onAbort = (): void => {
        try {
          channel?.close()
        } catch {
          // the channel is gone already
        }
        finish({})
      }
      this.lostListeners.add(onLost)
      o.signal?.addEventListener('abort', onAbort)
      if (o.signal?.aborted) return onAbort()
      try {
        client.exec(shellLine(script), (e, ch) => {
          if (e) return finish({ code: 255, stderr: e.message, lost: this.lostError?.message })
          channel = ch
          if (settled) return void ch.close()
          ch.on('data', (c: Buffer) => {
            stdout.add(c.toString('utf8'))
            out.push(c)
          })
          ch.stderr.on('data', (c: Buffer) => {
            stderr.add(c.toString('utf8'))
            err.push(c)
          })
          ch.on('exit', (code: number | null, signal?: string) => {
            exit = code ?? (signal ? 128 + (SIGNALS[signal] ?? 1) : 255)
          })
          // A channel closed without an exit status may be the connection going: let its close/error name it.
          ch.on('close', () =>
            exit === undefined ? setTimeout(() => finish({ lost: this.lostError?.message }), 300) : finish({})
          )
          ch.on('error', () => undefined)
          if (typeof o.stdin === 'string') ch.end(o.stdin)
          else if (stream) {
            stream.on('error', () => ch.end())
            stream.pipe(ch)
          } else ch.end()
        })
      } catch (e) {
        finish({
          code: 255,
          stderr: (e as Error).message,
          lost: this.lostError?.message ?? (e as Error).message
        })
      }
    })
  }

  /**
   * Starts a script that keeps running (and holding whatever it took) until released or the connection ends.
   * Resolves once the script prints `ready`; rejects with its output if it exits (or the connection goes) first,
   * or (`timedOut`, its channel closed) when `ready` has not come within `timeoutMs`.
   */
  async hold(script: string, ready: string, timeoutMs: number): Promise<Held> {
    const client = this.ssh.connection
    if (!client || this.lostError)
      throw new Error(`host ${this.name}: not connected (${this.lost ?? 'closed'})`)
    let output = ''
    let held = false
    let channel: ClientChannel | undefined
    let timer: NodeJS.Timeout | undefined
    return new Promise<Held>((resolve, reject) => {
      // A hung file system (NFS) or a login shell that never returns must not hang the job.
      timer = setTimeout(() => {
        if (held) return
        reject(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { timedOut: true, output }))
        try {
          channel?.close()
        } catch {
          // gone already
        }
      }, timeoutMs)
      client.exec(shellLine(script), (e, ch) => {
        if (e) return reject(e)
        channel = ch
        this.holding(ch, ready, resolve, reject, {
          add: chunk => (output = (output + chunk).slice(-64 * 1024)),
          get: () => output,
          held: () => (held = true)
        })
      })
    }).finally(() => clearTimeout(timer))
  }

  /** The channel of `hold`: resolves with the Held once `ready` is printed, rejects if it ends before. */
  private holding(
    channel: ClientChannel,
    ready: string,
    resolve: (h: Held) => void,
    reject: (e: Error) => void,
    out: { add(chunk: string): void; get(): string; held(): void }
  ): void {
    let held = false
    let open = true
    let endWhy = 'ended'
    const ended = new Promise<string>(r => {
      const onLost = (err: Error): void => {
        open = false
        r(`connection lost: ${err.message}`)
      }
      this.lostListeners.add(onLost)
      channel.on('close', () => {
        open = false
        this.lostListeners.delete(onLost)
        r(endWhy)
      })
    })
    const fail = (message: string, code: number): void =>
      reject(Object.assign(new Error(message), { code, output: out.get() }))
    void ended.then(why => {
      if (!held) fail(out.get().trim() || why, 255)
    })
    const seen = (chunk: Buffer): void => {
      out.add(chunk.toString('utf8'))
      if (held || !out.get().split('\n').includes(ready)) return
      held = true
      out.held()
      resolve({
        send: line => {
          if (!open) return false
          try {
            return channel.write(`${line}\n`) || true
          } catch {
            return false
          }
        },
        release: async last => {
          if (open) {
            try {
              channel.end(last === undefined ? undefined : `${last}\n`)
            } catch {
              // gone already
            }
          }
          // Wait for the lock to be let go, but never hold the process open once it has been.
          let timer: NodeJS.Timeout | undefined
          await Promise.race([ended, new Promise(r => (timer = setTimeout(r, 5000)))])
          clearTimeout(timer)
        },
        ended
      })
    }
    channel.on('data', seen)
    channel.stderr.on('data', seen)
    channel.on('error', () => undefined)
    channel.on('exit', (code: number | null) => {
      const text = out.get().trim()
      endWhy = `exit ${code}${text ? `: ${text.split('\n').slice(-3).join(' ')}` : ''}`
      if (!held) fail(text || `exit ${code}`, code ?? 255)
    })
  }

  dispose(): void {
    this.lose(new Error('closed by the action'))
    this.ssh.dispose()
    this.via?.dispose()
  }
}

const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, PIPE: 13, TERM: 15 }

/** Permanent listeners on a connection: its end or failure reaches `onLost` instead of the process. */
function guard(ssh: NodeSSH, onLost: (e: Error) => void, what: string): void {
  const c = ssh.connection
  if (!c) return
  c.on('error', (e: Error) => onLost(new Error(`${what} failed: ${e.message}`)))
  c.on('close', () => onLost(new Error(`${what} closed`)))
}
