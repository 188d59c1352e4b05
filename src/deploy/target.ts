/**
 * What the runner keeps per host (`Target`), where its lines go (`HostLog`), the errors a step ends with, and
 * the bounded parallelism the phases use.
 */
import type { Log } from '../github/log.js'
import type { HostState, Layout } from '../remote/commands.js'
import type { Connection, Held } from '../remote/ssh.js'
import type { DeploySettings, Host } from '../settings.js'

/** Where the runner writes: the job log in the action, a plain console in scripts and tests (one type, the log edge's). */
export type { Log }

export class StepError extends Error {
  constructor(
    readonly host: string,
    readonly step: string,
    readonly code: number,
    readonly lastLines: string
  ) {
    super(`host ${host}: step ${step} failed (exit ${code})${lastLines ? `:\n${lastLines}` : ''}`)
    this.name = 'StepError'
  }
}

/** The connection to the host went while a step ran: the step's outcome on the server is unknown. */
export class ConnectionLost extends StepError {}

/**
 * The deploy no longer holds the lock's lease: the server refused the step, nothing was changed. Known by the
 * deploy's lease marker on the step's output, never by its exit code (a project command may exit with any).
 */
export class LeaseLost extends StepError {}

export interface Target {
  host: Host
  remote: Connection
  /** What the host held when the deploy began (the revert puts this back). */
  state: HostState
  /** The lock's lease while held: its token (every step is fenced with it) and the renewal timer. */
  lock?: Held
  token?: string
  renewal?: NodeJS.Timeout
  /** Files of the release this host has, unchanged, in its live release: not uploaded again. */
  reuse?: string[]
  /** Where the release is built on this host, under releases/ (plan.ts `buildDir`); a deploy sets it. */
  build?: string
  /** Where this host's lines go: the job log itself, or (hosts worked on at once) a buffer of its own. */
  log: HostLog
  /** This host's deploy-path (its own, or the input's). */
  layout: Layout
  /** The deploy settings as they apply to this host's roles (a worker runs no nginx, health check, Gunicorn). */
  d: DeploySettings
  /** Bytes of the release archive sent to this host. */
  sent?: number
}

/**
 * A host's part of the job log. With one host it writes through; with several, worked on at once, each host's
 * lines are kept and written in one piece, host after host, when a phase ends, so groups never interleave.
 */
export class HostLog implements Log {
  private kept: Array<() => void> = []
  constructor(
    private readonly to: Log,
    private readonly buffered: boolean
  ) {}
  private put(f: () => void): void {
    if (this.buffered) this.kept.push(f)
    else f()
  }
  startGroup(title: string): void {
    this.put(() => this.to.startGroup(title))
  }
  endGroup(): void {
    this.put(() => this.to.endGroup())
  }
  info(message: string): void {
    this.put(() => this.to.info(message))
  }
  warning(message: string): void {
    this.put(() => this.to.warning(message))
  }
  output(line: string): void {
    this.put(() => (this.to.output ? this.to.output(line) : this.to.info(line)))
  }
  /** Writes what was kept. */
  flush(): void {
    const kept = this.kept
    this.kept = []
    for (const f of kept) f()
  }
}

/**
 * Runs `f` on the items, at most `limit` at a time; after a failure starts no new one, waits for those running,
 * then throws the first failure.
 */
export async function eachAtMost<T>(items: T[], limit: number, f: (item: T) => Promise<void>): Promise<void> {
  const failures: unknown[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length && failures.length === 0) {
      const item = items[next++]
      await f(item).catch(e => failures.push(e))
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failures.length) throw failures[0]
}
