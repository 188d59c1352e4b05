/**
 * A scripted stand-in for the SSH transport (`Connect`), for unit tests of the runner: it answers the scripts the
 * runner sends by the step names the runner passes along (`RunOptions.steps`), printing each batch's end markers
 * as a server's shell would, and keeps what each host holds (`current`, its releases) so that inspect, a revert
 * and a reconnect see what the steps did. A script makes a step fail on a host, drops the connection at a step,
 * or has the server refuse a step because the lease was lost.
 */
import type { Connect, Connection, ExecResult, Held, RunOptions } from '../../src/remote/ssh.js'
import { LEASE_LOST } from '../../src/remote/commands.js'
import type { Host } from '../../src/settings.js'

export interface FakeHostState {
  releases: string[]
  current?: string
  history?: Array<{ event: 'live' | 'rollback'; release: string }>
}

export interface Rule {
  host: string
  step: string
}

export interface FakeScript {
  /** The step fails (every time it runs there), printing `output`. */
  fail?: Array<Rule & { code?: number; output?: string }>
  /** The connection goes while the step runs (once); `after`: once the step did its work. */
  drop?: Array<Rule & { after?: boolean }>
  /** The server refuses the step: this deploy's lease is gone (once). */
  leaseLost?: Rule[]
  /** The step prints `output` (every time it runs there) instead of what it would print (e.g. setup's inspect). */
  answers?: Array<Rule & { output: string }>
}

const label = (h: Host): string => (h.port === 22 ? h.host : `${h.host}:${h.port}`)

export class FakeFleet {
  readonly hosts = new Map<string, FakeHostState>()
  /** Every command the runner sent, in order: the host, the steps it ran, the script and its stdin (a string). */
  readonly calls: Array<{ host: string; steps: string[]; script?: string; stdin?: string }> = []
  /** Connections opened, by host name, in order. */
  readonly connects: string[] = []

  constructor(
    states: Record<string, FakeHostState>,
    readonly script: FakeScript = {}
  ) {
    for (const [name, s] of Object.entries(states)) this.hosts.set(name, s)
  }

  readonly connect: Connect = async (host: Host) => {
    const name = label(host)
    this.connects.push(name)
    if (!this.hosts.has(name)) throw new Error(`fake: no host ${name}`)
    return new FakeConnection(name, this)
  }

  /** The steps each host ran, in order (batches flattened), without the runner's own reads. */
  stepsOn(host: string): string[] {
    return this.calls.filter(c => c.host === host).flatMap(c => c.steps)
  }

  take(kind: 'drop' | 'leaseLost', host: string, step: string): (Rule & { after?: boolean }) | undefined {
    const list = this.script[kind] ?? []
    const at = list.findIndex(r => r.host === host && r.step === step)
    return at >= 0 ? list.splice(at, 1)[0] : undefined
  }
}

class FakeConnection implements Connection {
  lost: string | undefined

  constructor(
    readonly name: string,
    private readonly fleet: FakeFleet
  ) {}

  private get state(): FakeHostState {
    return this.fleet.hosts.get(this.name)!
  }

  async run(script: string, o: RunOptions = {}): Promise<ExecResult> {
    if (typeof o.stdin === 'object') o.stdin.resume()
    if (this.lost) return { code: 255, stdout: '', stderr: this.lost, lost: this.lost }
    const steps = [...(o.steps ?? ['?'])]
    this.fleet.calls.push({
      host: this.name,
      steps,
      script,
      stdin: typeof o.stdin === 'string' ? o.stdin : undefined
    })
    const mark = /django-deploy-step-[0-9a-f]{12}:/.exec(script)?.[0]
    const leaseMark = /django-deploy-lease-lost-[0-9a-f]{18}/.exec(script)?.[0]
    let stdout = ''
    const say = (line: string): void => {
      stdout += `${line}\n`
      o.onLine?.(line, 'stdout')
    }
    for (const step of steps) {
      if (this.fleet.take('leaseLost', this.name, step)) {
        if (leaseMark) o.onLine?.(leaseMark, 'stderr')
        return { code: LEASE_LOST, stdout, stderr: 'this deploy no longer holds the deploy lock' }
      }
      const drop = this.fleet.take('drop', this.name, step)
      if (drop) {
        if (drop.after) this.effect(step, script, say)
        this.lost = 'connection reset (fake)'
        return { code: 255, stdout, stderr: '', lost: this.lost }
      }
      const fail = this.fleet.script.fail?.find(r => r.host === this.name && r.step === step)
      if (fail) {
        const code = fail.code ?? 1
        for (const line of (fail.output ?? `${step} failed`).split('\n')) say(line)
        if (mark) say(`${mark} ${step} ${code}`)
        return { code, stdout, stderr: '' }
      }
      const answer = this.fleet.script.answers?.find(r => r.host === this.name && r.step === step)
      if (answer) answer.output.split('\n').forEach(say)
      else this.effect(step, script, say)
      if (mark) say(`${mark} ${step} 0`)
    }
    return { code: 0, stdout, stderr: '' }
  }

  /** What a step changes on the host, and what it prints. */
  private effect(step: string, script: string, say: (line: string) => void): void {
    const s = this.state
    const name = step.replace(/^revert-/, '')
    if (name === 'switch') s.current = /current\.tmp-([A-Za-z0-9._-]+)/.exec(script)?.[1]
    else if (step === 'revert') s.current = undefined
    else if (step === 'record' && s.current) (s.history ??= []).push({ event: 'live', release: s.current })
    else if (step === 'place' || step === 'prepare') {
      const release = /releases\/([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(script)?.[1]
      if (release && !s.releases.includes(release)) s.releases.push(release)
    } else if (step === 'inspect') {
      if (s.current) say(`current=${s.current}`)
      if (s.current) say(`current-link=releases/${s.current}`)
      for (const r of s.releases) say(`release=${r}`)
      if (s.history) say('history-file=yes')
      for (const h of s.history ?? []) say(`history=2026-01-01T00:00:00Z ${h.event} ${h.release}`)
    } else if (step === 'manifest') say('reuse=')
    else if (step === 'read-revision') say('0123456789abcdef0123456789abcdef01234567')
  }

  async hold(): Promise<Held> {
    if (this.lost) throw new Error(`host ${this.name}: not connected (${this.lost})`)
    this.fleet.calls.push({ host: this.name, steps: ['lock'] })
    return { send: () => !this.lost, release: async () => undefined, ended: new Promise(() => undefined) }
  }

  dispose(): void {
    this.lost ??= 'closed by the action'
  }
}
