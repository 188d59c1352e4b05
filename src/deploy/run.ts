/**
 * The runner: executes plans across hosts over SSH, holds the deploy lock, and rolls back. Phases run across
 * all hosts before the next begins, so no host goes live until every host has its release ready.
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { ReleaseSource } from '../release/source.js'
import { archive } from '../release/source.js'
import { parseRanges, parseTree, pathsAt, treeRecords } from '../release/incremental.js'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import type { DeployResult, StepResult } from '../report.js'
import { failureTail } from '../django/traceback.js'
import * as cmd from '../remote/commands.js'
import type { HostState, Layout } from '../remote/commands.js'
import { Remote, type Held } from '../remote/ssh.js'
import type { DeploySettings, Host, Settings } from '../settings.js'
import {
  batch,
  buildDir,
  cleanupStep,
  forRoles,
  preflightSteps,
  publishSteps,
  renderStep,
  revertSteps,
  rollbackTarget,
  rollingBatches,
  gateSteps,
  wentLive,
  updateSteps,
  type Step
} from './plan.js'

/** Where the runner writes: the job log in the action, a plain console in scripts and tests. */
export interface Log {
  startGroup(title: string): void
  endGroup(): void
  info(message: string): void
  warning(message: string): void
  /** A line printed by a server or the project: data, never a workflow command (default: `info`). */
  output?(line: string): void
  /** Ends any quiet part `output` opened (called when the runner is done). */
  flush?(): void
}

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

interface Target {
  host: Host
  remote: Remote
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
class HostLog implements Log {
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
async function eachAtMost<T>(items: T[], limit: number, f: (item: T) => Promise<void>): Promise<void> {
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

/** Database errors that say the tables are not there (SQLite, PostgreSQL, MySQL). */
const MISSING_TABLES = /no such table|relation "[^"]+" does not exist|Table '[^']+' doesn't exist/i

/**
 * A host's gate that fails because tables are missing, after only the primary host migrated: that host likely
 * has a database of its own. The error says so and names the setting that migrates every host.
 */
function hintOwnDatabase(e: unknown, migratedOnce: boolean): never {
  if (
    migratedOnce &&
    e instanceof StepError &&
    !(e instanceof ConnectionLost) &&
    MISSING_TABLES.test(e.lastLines)
  )
    throw new StepError(
      e.host,
      e.step,
      e.code,
      `${e.lastLines}\nThe database has tables missing on this host, but only the primary host ran the migrations: each host may have its own database (SQLite, or another DATABASES setting per host). \`migrate: every-host\` in deploy.yml migrates each one.`
    )
  throw e
}

/** Tries to reach a host again after a lost connection, host key verified each time. */
const RECONNECT_TRIES = 3

const TAIL = 15
/** Seconds the lock command may take beyond lock-timeout (its own wait) before the runner gives up on it. */
const LOCK_MARGIN = 15

type LockError = Error & { code?: number; output?: string; timedOut?: boolean }
/** A step's last lines kept for its error (a Python traceback's start among them), whatever it prints. */
const KEPT_LINES = 200
/** Characters kept of each of those lines. */
const KEPT_LINE = 2000
/** Characters of one step's output written to the job log; beyond them only the last KEPT_LINES are kept. */
const LOGGED_PER_STEP = 2 * 1024 * 1024

export class Runner {
  readonly steps: StepResult[] = []
  /** Warnings the hosts reported (WARN lines), `host: message`, for the summary. */
  readonly warnings: string[] = []
  /** Ends each step's output in a batch; unguessable, so no output of the project can fake a step's end. */
  private readonly mark = `django-deploy-step-${randomBytes(6).toString('hex')}:`
  /** Printed by the server when it refuses a step of this deploy (lease lost); an exit code would not do. */
  private readonly leaseMark = `django-deploy-lease-lost-${randomBytes(9).toString('hex')}`
  /** Set by `cancel()`: why the deploy stops (no new step starts, the running one is killed). */
  private cancelled?: string
  private readonly stopRunning = new Set<(why: 'cancel') => void>()

  /** Set by `fail()`: an internal error elsewhere in the action; whatever this deploy switched is put back. */
  private fatal?: string
  /** The hosts of the running session, and those whose `current` this deploy may have moved (not put back). */
  private targets: Target[] = []
  private readonly switched = new Set<Target>()

  constructor(
    private readonly settings: Settings,
    private readonly log: Log,
    /** For tests only: called after a host's switch, to inject a fault there. */
    private readonly faults: { afterSwitch?: () => Promise<void> | void } = {}
  ) {}

  /**
   * The last resort (an uncaught exception or unhandled rejection anywhere in the action): stops the deploy
   * as a cancel does; when the deploy's flow ends, every host it switched is put back (see `session`).
   */
  fail(why: string): void {
    this.fatal ??= why
    this.cancel(why)
  }

  /**
   * When the deploy's own flow does not end after `fail()`: puts back every host this deploy switched, lets
   * the locks go and returns what is known, for the report.
   */
  async rescue(release: string): Promise<DeployResult> {
    const result = this.emptyResult(release)
    const targets = this.targets
    await this.putBack(result)
    await this.close(targets)
    return result
  }

  /** After `fail()`: every host still switched goes back to what it served; the result says so. */
  private async putBack(result: DeployResult): Promise<void> {
    const hosts = [...this.switched]
    result.error = `${this.fatal}${result.error ? ` (${result.error})` : ''}`
    result.deployed = false
    if (!hosts.length) return
    this.log.warning(`${this.fatal}: putting back what this deploy switched`)
    const reverted = await this.revert(hosts, result.release)
    result.rolledBack = reverted.ok
    result.hosts = this.targets.map(t => ({
      host: t.remote.name,
      previous: t.state.current,
      live: this.switched.has(t) ? undefined : t.state.current,
      bytesSent: t.sent
    }))
  }

  private emptyResult(release: string): DeployResult {
    const dryRun = this.settings.deploy.dryRun
    return { release, deployed: false, rolledBack: false, dryRun, steps: this.steps, warnings: this.warnings }
  }

  /**
   * Connects to every host (host keys verified, at most max-parallel at once), takes the locks unless only
   * reading, one host after another in one sorted order (two fleets listed differently never deadlock), and
   * reads what each host holds.
   */
  private async open(lock: boolean): Promise<Target[]> {
    const s = this.settings
    const many = s.ssh.hosts.length > 1
    const targets: Target[] = []
    try {
      const slots = s.ssh.hosts.map(() => undefined as Target | undefined)
      await eachAtMost(
        s.ssh.hosts.map((host, i) => ({ host, i })),
        s.deploy.maxParallel,
        async ({ host, i }) => {
          const log = new HostLog(this.log, many)
          const t0 = Date.now()
          log.startGroup(`${Remote.label(host)}: connect`)
          try {
            const remote = await Remote.connect(host, s.ssh)
            slots[i] = {
              host,
              remote,
              state: { releases: [] },
              log,
              layout: cmd.layout(host.deployPath ?? s.deploy.path),
              d: forRoles(s.deploy, host.roles)
            }
            log.info(`${remote.name}: connected as ${host.user ?? s.ssh.user}, host key verified`)
            this.record(remote.name, 'connect', 'ok', t0)
          } finally {
            log.endGroup()
            log.flush()
          }
        }
      ).finally(() => targets.push(...slots.filter((t): t is Target => t !== undefined)))
      if (lock) {
        const order = [...targets].sort((a, b) =>
          a.remote.name < b.remote.name ? -1 : a.remote.name > b.remote.name ? 1 : 0
        )
        for (const t of order) await this.lock(t)
      }
      await this.everyHost(targets, async t => {
        t.state = cmd.parseInspect(await this.exec(t, { name: 'inspect', script: cmd.inspect(t.layout) }))
      })
      return targets
    } catch (e) {
      await this.close(targets)
      throw e
    }
  }

  /** Writes each host's kept lines, in host order (hosts worked on at once). */
  private flushLogs(targets: Target[]): void {
    for (const t of targets) t.log.flush()
  }

  /** Runs `f` on every host at once (at most max-parallel), then writes their logs; throws the first failure. */
  private async everyHost(targets: Target[], f: (t: Target) => Promise<void>): Promise<void> {
    try {
      await eachAtMost(targets, this.settings.deploy.maxParallel, f)
    } finally {
      this.flushLogs(targets)
    }
  }

  private async lock(t: Target): Promise<void> {
    const s = this.settings
    const holder = `${s.context.runUrl ?? `run on ${hostname()}`} (release ${s.deploy.releaseName ?? '?'}, since ${new Date().toISOString()})`
    const token = randomBytes(12).toString('hex')
    const t0 = Date.now()
    t.log.startGroup(`${t.remote.name}: lock`)
    try {
      t.log.info(`waiting up to ${s.deploy.lockTimeout} s for the deploy lock on ${t.layout.root}`)
      t.lock = await t.remote.hold(
        cmd.holdLock(t.layout, s.deploy.lockTimeout, holder, token),
        'locked',
        (s.deploy.lockTimeout + LOCK_MARGIN) * 1000
      )
      t.token = token
      // The lease ends on the server when these stop for LEASE_SECONDS (a frozen or vanished runner).
      const lock = t.lock
      t.renewal = setInterval(() => lock.send('renew'), cmd.RENEW_SECONDS * 1000)
      t.renewal.unref()
      t.log.info(
        `lock taken (a lease: renewed every ${cmd.RENEW_SECONDS} s, ended by the server after ${cmd.LEASE_SECONDS} s without renewal)`
      )
    } catch (e) {
      const { code, text } = this.lockFailure(t, e as LockError)
      this.record(t.remote.name, 'lock', 'failed', t0, text)
      throw new StepError(t.remote.name, 'lock', code, text)
    } finally {
      t.log.endGroup()
      t.log.flush()
    }
    this.record(t.remote.name, 'lock', 'ok', t0)
  }

  /** Why the lock was not taken: the holder's own words, or (it did not answer) the stage that hung. */
  private lockFailure(t: Target, err: LockError): { code: number; text: string } {
    const lines = (err.output ?? '').split('\n')
    const text = lines
      .filter(l => !l.startsWith(cmd.LOCK_STAGE))
      .join('\n')
      .trim()
    if (!err.timedOut) return { code: err.code ?? 1, text: text || err.message }
    const stage = lines
      .filter(l => l.startsWith(cmd.LOCK_STAGE))
      .pop()
      ?.slice(cmd.LOCK_STAGE.length)
    const l = t.layout
    const what =
      stage === 'mkdir'
        ? `\`mkdir -p ${l.root}\` hung (a hung file system under the deploy path, e.g. NFS?)`
        : stage === 'open'
          ? `opening the lock file ${l.lock} hung (a FIFO, or a hung file system?)`
          : stage === 'flock'
            ? `flock on ${l.lock} did not give up after lock-timeout (a hung file system?)`
            : stage === 'take'
              ? `taking over the lock (killing an earlier deploy's steps) hung`
              : `the lock command never started: the login shell (or a file it reads, like ~/.bashrc) did not return`
    const seconds = this.settings.deploy.lockTimeout + LOCK_MARGIN
    return { code: 124, text: `no lock after ${seconds} s (lock-timeout + ${LOCK_MARGIN} s): ${what}` }
  }

  /** Lets the lock go (or just forgets it when the connection is gone: the server ends the lease). */
  private async unlock(t: Target): Promise<void> {
    clearInterval(t.renewal)
    t.renewal = undefined
    const lock = t.lock
    t.lock = undefined
    await lock?.release('release').catch(() => undefined)
  }

  private async close(targets: Target[]): Promise<void> {
    await Promise.all(
      targets.map(async t => {
        await this.unlock(t)
        t.remote.dispose()
      })
    )
    this.flushLogs(targets)
  }

  /**
   * After a lost connection: connects again (host key verified again, at most RECONNECT_TRIES times), takes
   * the lock again and reads what the host serves now. Returns the live release.
   */
  private async reconnect(t: Target): Promise<string | undefined> {
    const why = t.remote.lost ?? 'connection lost'
    clearInterval(t.renewal)
    t.lock = undefined
    t.token = undefined
    t.remote.dispose()
    let last: Error | undefined
    for (let i = 1; i <= RECONNECT_TRIES; i++) {
      t.log.warning(`${t.remote.name}: ${why}; reconnecting (${i}/${RECONNECT_TRIES})`)
      try {
        t.remote = await Remote.connect(t.host, this.settings.ssh)
        t.log.info(`${t.remote.name}: connected again, host key verified`)
        await this.lock(t)
        const now = cmd.parseInspect(
          await this.exec(t, { name: 'inspect', script: cmd.inspect(t.layout) }, undefined, true)
        )
        t.log.info(`${t.remote.name}: live release now: ${now.current ?? 'none'}`)
        return now.current
      } catch (e) {
        last = e as Error
        await this.unlock(t)
        t.remote.dispose()
        await new Promise(r => setTimeout(r, 1000 * i))
      }
    }
    throw new Error(
      `host ${t.remote.name}: ${why}, and ${RECONNECT_TRIES} attempts to reconnect failed (last: ${last?.message}); what it serves is unknown`
    )
  }

  /**
   * Stops the deploy (the runner was cancelled): the running step's processes are killed on the server, no
   * further step starts except putting back what was live.
   */
  cancel(why: string): void {
    if (this.cancelled) return
    this.cancelled = why
    this.log.warning(`${why}: stopping the deploy`)
    for (const f of [...this.stopRunning]) f('cancel')
  }

  private record(
    host: string,
    step: string,
    outcome: StepResult['outcome'],
    t0: number,
    detail?: string
  ): void {
    this.steps.push({ host, step, outcome, durationMs: Date.now() - t0, detail })
  }

  /**
   * Runs one step (or a batch of steps in one round trip) on one host, each step in its own log group and
   * recorded with its duration; throws StepError naming the step that failed, with its last lines.
   */
  private async exec(
    t: Target,
    step: Step,
    source?: ReleaseSource,
    evenIfCancelled = false
  ): Promise<string> {
    const host = t.remote.name
    if (this.cancelled && !evenIfCancelled) throw new StepError(host, step.name, 130, this.cancelled)
    const parts = step.parts ?? [step.name]
    let part = 0
    let partStart = Date.now()
    let lines: string[] = []
    let logged = 0
    let unlogged = 0
    let failedCode: number | undefined
    const finish = (name: string, code: number, why = ''): void => {
      const seconds = ((Date.now() - partStart) / 1000).toFixed(1)
      if (unlogged)
        t.log.info(`(${unlogged} more lines of output not shown: ${LOGGED_PER_STEP} characters are)`)
      if (code === 0) {
        t.log.info(`✓ ${name} (${seconds} s)`)
        if (name !== 'inspect') this.record(host, name, 'ok', partStart)
      } else {
        t.log.info(`✗ ${name} failed after ${seconds} s (exit ${code})${why ? ` ${why}` : ''}`)
        this.record(
          host,
          name,
          'failed',
          partStart,
          `exit ${code}${why ? `, ${why}` : ''}\n${failureTail(lines, TAIL)}`
        )
      }
      t.log.endGroup()
    }
    const show = (line: string): void => {
      // A copy of at most KEPT_LINE characters: a piece of a huge line must not keep the whole of it alive.
      lines.push(line.length > KEPT_LINE ? Buffer.from(`${line.slice(0, KEPT_LINE)}…`).toString() : line)
      if (lines.length > KEPT_LINES) lines.shift()
      if (logged >= LOGGED_PER_STEP) unlogged++
      else if (line.startsWith(cmd.WARN)) {
        const warning = `${host}: ${line.slice(cmd.WARN.length).trim()}`
        this.warnings.push(warning)
        t.log.warning(warning)
      } else if (t.log.output) t.log.output(line)
      else t.log.info(line)
      logged += line.length
    }
    t.log.startGroup(`${host}: ${parts[0]}`)
    let upload: Awaited<ReturnType<typeof archive>> | undefined
    if (step.stdin === 'archive' && source) upload = await archive(source, t.reuse)
    // git failing (a missing object, a failing LFS or other filter) fails the step; its message is kept.
    const archiveFailed = upload?.done.then(
      () => undefined,
      (e: Error) => e.message
    )
    // Each step gets command-timeout seconds (the clock restarts at each step of a batch). A timed-out or
    // cancelled step's process group is killed on the server, then its channel closed.
    const limit = this.settings.ssh.commandTimeout
    const abort = new AbortController()
    let stopped: 'timeout' | 'cancel' | undefined
    let timer: NodeJS.Timeout | undefined
    const stop = (why: 'timeout' | 'cancel'): void => {
      if (stopped) return
      stopped = why
      clearTimeout(timer)
      void (async () => {
        if (t.token) {
          await t.remote.run(cmd.killSteps(t.layout, t.token), { signal: AbortSignal.timeout(10_000) })
          // The step's command ends once its group is gone; its channel is closed regardless.
          await new Promise(r => setTimeout(r, 3000).unref())
        }
        abort.abort()
      })()
    }
    const arm = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => stop('timeout'), limit * 1000)
    }
    arm()
    this.stopRunning.add(stop)
    const script = t.token ? cmd.fenced(t.layout, t.token, step.script, this.leaseMark) : step.script
    let refused = false
    const r = await t.remote
      .run(script, {
        stdin: upload?.stream ?? step.input,
        signal: abort.signal,
        onLine: raw => {
          if (raw === this.leaseMark) return void (refused = true)
          // A step's output without a final new line runs into the marker that follows it.
          const at = raw.indexOf(`${this.mark} `)
          const line = at >= 0 ? raw.slice(0, at) : raw
          if (at > 0) show(line)
          if (at >= 0) {
            const [, name, code] = raw.slice(at).split(' ')
            if (name !== parts[part] || failedCode !== undefined) return
            // A failed step is closed when the command ends, so output still in flight joins its last lines.
            if (Number(code) !== 0) {
              failedCode = Number(code)
              return
            }
            finish(name, 0)
            part += 1
            partStart = Date.now()
            lines = []
            logged = unlogged = 0
            arm()
            if (part < parts.length) t.log.startGroup(`${host}: ${parts[part]}`)
            return
          }
          show(line)
        }
      })
      .finally(() => {
        clearTimeout(timer)
        this.stopRunning.delete(stop)
        // The command ended: an archive it did not read (a refused release) must not keep git blocked.
        upload?.stop()
      })
    const gitError = await archiveFailed
    if (r.code === 0 && !stopped && !r.lost && !gitError) {
      if (upload) {
        t.sent = upload.bytes()
        const files = parseTree(source!.tree).length
        const reused = t.reuse?.length ?? 0
        t.log.info(
          `${host}: ${(upload.bytes() / 1024).toFixed(1)} KiB sent for ${files - reused} of ${files} files${reused ? `; ${reused} unchanged, taken from ${t.state.current}` : ''}`
        )
      }
      // Steps that ran without a batch's marker (a single step) end with the command.
      while (part < parts.length) {
        finish(parts[part], 0)
        if (++part < parts.length) t.log.startGroup(`${host}: ${parts[part]}`)
      }
      return r.stdout
    }
    const failed = parts[Math.min(part, parts.length - 1)]
    if (stopped) {
      const code = stopped === 'timeout' ? 124 : 130
      const why =
        stopped === 'timeout'
          ? `timed out after ${limit} s (command-timeout): its processes on the server were killed`
          : `${this.cancelled}: its processes on the server were killed`
      finish(failed, code, why)
      throw new StepError(host, failed, code, [...lines.slice(-TAIL), why].join('\n'))
    }
    if (r.lost) {
      const why = `connection lost (${r.lost}): what the step did on the server is unknown`
      finish(failed, 255, why)
      throw new ConnectionLost(host, failed, 255, [...lines.slice(-TAIL), why].join('\n'))
    }
    if (gitError) {
      for (const line of gitError.split('\n')) show(line)
      finish(failed, r.code || 1, 'the release archive could not be made')
      throw new StepError(host, failed, r.code || 1, lines.slice(-TAIL).join('\n'))
    }
    finish(failed, r.code)
    const Err = refused ? LeaseLost : StepError
    throw new Err(host, failed, r.code, failureTail(lines, TAIL))
  }

  /**
   * Finds the files of the release that the host's live release holds unchanged (verified there), so the
   * upload leaves them out. Any failure here only costs bytes: the whole release is sent.
   */
  private async findReusable(t: Target, source: ReleaseSource): Promise<void> {
    const live = t.state.current
    t.reuse = undefined
    if (!live || live === source.name) return
    const t0 = Date.now()
    const host = t.remote.name
    const d = this.settings.deploy
    let answer = ''
    const script = cmd.reusableFiles(t.layout, source.name, live, d.remotePython)
    const r = await t.remote.run(t.token ? cmd.fenced(t.layout, t.token, script, this.leaseMark) : script, {
      stdin: Readable.from([gzipSync(source.tree)]),
      signal: AbortSignal.timeout(this.settings.ssh.commandTimeout * 1000),
      onLine: line => {
        if (line.startsWith(cmd.WARN)) {
          const warning = `${host}: ${line.slice(cmd.WARN.length).trim()}`
          this.warnings.push(warning)
          t.log.warning(warning)
        } else if (line.startsWith('reuse=')) answer = line.slice('reuse='.length)
      }
    })
    try {
      if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`)
      const paths = pathsAt(source.tree, parseRanges(answer, treeRecords(source.tree).length))
      t.reuse = paths.length ? paths : undefined
      this.record(host, 'manifest', 'ok', t0)
    } catch (e) {
      t.log.warning(
        `${host}: could not compare with the live release, sending every file: ${(e as Error).message}`
      )
      this.record(host, 'manifest', 'failed', t0, (e as Error).message)
    }
  }

  /**
   * Connects (and locks, unless dry), runs `body`, and always closes; any error ends up in `result.error`,
   * never thrown, so the report is written whatever happened.
   */
  private async session(
    release: string,
    body: (targets: Target[], result: DeployResult) => Promise<void>
  ): Promise<DeployResult> {
    const result = this.emptyResult(release)
    let targets: Target[] = []
    try {
      targets = this.targets = await this.open(!result.dryRun)
      await body(targets, result)
    } catch (e) {
      result.error ??= (e as Error).message
    } finally {
      if (this.fatal) await this.putBack(result)
      await this.close(targets)
    }
    return result
  }

  /** Deploys a release to every host; a failure before the switch changes nothing live, after it rolls back. */
  async deploy(source: ReleaseSource): Promise<DeployResult> {
    const d = this.settings.deploy
    return this.session(source.name, async (targets, result) => {
      result.previousRelease = targets[0]?.state.current
      for (const t of targets) t.build = buildDir(t.state, source.name)
      if (d.dryRun) {
        result.plan = Object.fromEntries(
          targets.map(t => [
            t.remote.name,
            [
              ...updateSteps(t.d, t.layout, source, undefined, 'with-gate', t.build),
              ...publishSteps(t.d, t.layout, source.name, t.state.current, 'live', undefined, t.build),
              cleanupStep(t.state, d.keepReleases, source.name, t.layout)
            ].map(renderStep)
          ])
        )
        return
      }
      for (const t of targets) {
        const silent = (t.host.roles ?? []).filter(r => r !== 'web' && !t.d.roleReloadCommands[r])
        if (silent.length)
          this.log.warning(
            `${t.remote.name}: no reload-command for role ${silent.join(', ')} (a mapping of role to command in deploy.yml): what it runs keeps the code it started with`
          )
      }
      // Phase 1, every host at once: the release made ready. A fleet sharing one database migrates once, on
      // the primary host, when every host is ready; then the health URL through each host's new release.
      const once = targets.length > 1 && d.migrate && !d.migrateEveryHost
      const gated = targets.length > 1 ? 'without-gate' : 'with-gate'
      await this.everyHost(targets, async t => {
        await this.findReusable(t, source)
        await this.exec(
          t,
          batch(
            updateSteps(t.d, t.layout, source, t.reuse && t.state.current, gated, t.build),
            t.layout,
            this.mark
          ),
          source
        )
      })
      if (gated === 'without-gate') {
        const primary = targets.find(t => t.host.primary) ?? targets[0]
        const gate = (t: Target, migrate: boolean): Promise<string> =>
          this.exec(t, batch(gateSteps(t.d, t.layout, t.build!, migrate), t.layout, this.mark))
        if (once) {
          this.log.info(`${primary.remote.name}: the primary host runs the migrations, once for the fleet`)
          await this.everyHost([primary], async t => void (await gate(t, true)))
        }
        // A host with nothing to check here (a worker, when the primary migrated) has no gate round trip.
        const rest = (once ? targets.filter(t => t !== primary) : targets).filter(
          t => gateSteps(t.d, t.layout, t.build!, !once).length > 0
        )
        if (rest.length)
          await this.everyHost(
            rest,
            async t => void (await gate(t, !once).catch(e => hintOwnDatabase(e, once)))
          )
      }
      const failure = await this.publish(targets, source.name)
      this.describeHosts(result, targets, source.name, failure)
      if (failure) {
        result.error = failure.error
        result.rolledBack = failure.revertedOk
        // After a lost connection or a failed revert, what is live is read from the hosts, not assumed.
        if (failure.live) {
          result.deployed = failure.live.every(l => l === source.name)
          if (result.deployed) result.rolledBack = false
        }
        return
      }
      result.deployed = true
      await this.everyHost(targets, async t => {
        try {
          await this.exec(t, cleanupStep(t.state, d.keepReleases, source.name, t.layout))
        } catch (e) {
          t.log.warning(`cleanup of old releases failed, the deploy stands: ${(e as Error).message}`)
        }
      })
    })
  }

  /** Each host's release before and after, for the report; `previousRelease` names each when hosts differ. */
  private describeHosts(
    result: DeployResult,
    targets: Target[],
    release: string,
    failure?: { revertedOk: boolean; live?: (string | undefined)[] }
  ): void {
    result.hosts = targets.map((t, i) => ({
      host: t.remote.name,
      previous: t.state.current,
      live: failure
        ? failure.live
          ? failure.live[i]
          : failure.revertedOk
            ? t.state.current
            : undefined
        : release,
      bytesSent: t.sent
    }))
    const previous = new Set(targets.map(t => t.state.current ?? ''))
    if (previous.size > 1)
      result.previousRelease = targets.map(t => `${t.remote.name}=${t.state.current ?? ''}`).join('\n')
  }

  /**
   * Makes `release` live on every host at once, or in `rolling` batches, each gated by its health check; on a
   * failure puts every host that was touched (earlier batches included) back on what it served. Returns the
   * failure, if any, and whether the revert succeeded everywhere.
   */
  private async publish(
    targets: Target[],
    release: string,
    record: 'live' | 'rollback' = 'live'
  ): Promise<{ error: string; revertedOk: boolean; live?: (string | undefined)[] } | undefined> {
    const touched: Target[] = []
    /** Hosts that refused (another deploy holds their lock now): nothing changed there, nothing to put back. */
    const refused = new Set<Target>()
    const batches = rollingBatches(targets, this.settings.deploy.rolling)
    try {
      for (const [i, hosts] of batches.entries()) {
        if (batches.length > 1)
          this.log.info(
            `switch, batch ${i + 1} of ${batches.length}: ${hosts.map(t => t.remote.name).join(', ')}`
          )
        await this.everyHost(hosts, async t => {
          touched.push(t)
          this.switched.add(t)
          await this.exec(
            t,
            batch(
              publishSteps(t.d, t.layout, release, t.state.current, record, undefined, t.build ?? release),
              t.layout,
              this.mark
            )
          ).catch(e => {
            if (e instanceof LeaseLost) {
              refused.add(t)
              this.switched.delete(t)
            }
            throw e
          })
          await this.faults.afterSwitch?.()
        })
      }
      return undefined
    } catch (e) {
      const error = (e as Error).message
      // A host that refused (its lease lost: another deploy may hold its lock now) is left alone; every other
      // host this deploy switched is put back.
      const reverted = await this.revert(
        touched.filter(t => !refused.has(t)),
        release
      )
      const uncertain = e instanceof ConnectionLost || refused.size > 0 || !reverted.ok
      return {
        error,
        revertedOk: reverted.ok,
        live: uncertain ? await this.liveReleases(targets) : undefined
      }
    }
  }

  /** What each host serves now, read from `current` (reconnecting where the connection is gone). */
  private async liveReleases(targets: Target[]): Promise<(string | undefined)[]> {
    const live = new Map<Target, string | undefined>()
    await this.everyHost(targets, async t => {
      try {
        if (t.remote.lost) live.set(t, await this.reconnect(t))
        else {
          const out = await this.exec(t, { name: 'inspect', script: cmd.inspect(t.layout) }, undefined, true)
          live.set(t, cmd.parseInspect(out).current)
        }
      } catch (e) {
        t.log.warning(`${t.remote.name}: cannot read what is live: ${(e as Error).message}`)
      }
    })
    return targets.map(t => live.get(t))
  }

  /**
   * Puts each host back on the release that was live before; ok when every host is back and healthy. A host
   * whose connection was lost is reached again first (with the lock taken again); when it turns out `current`
   * never moved there, nothing is put back.
   */
  private async revert(targets: Target[], failed: string): Promise<{ ok: boolean }> {
    let ok = true
    await this.everyHost(targets, async t => {
      try {
        if (t.remote.lost) {
          const live = await this.reconnect(t)
          if (live !== failed) {
            t.log.info(
              `${t.remote.name}: ${failed} did not go live here (live: ${live ?? 'none'}): nothing to put back`
            )
            // Built beside a release of the same name and put in its place before the connection went: that
            // one goes back (a no-op when `place` never ran).
            if (t.build && t.build !== failed) {
              const restore = { name: 'revert-restore', script: cmd.restoreReplaced(t.layout, failed) }
              await this.exec(t, restore, undefined, true)
            }
            this.switched.delete(t)
            return
          }
        }
        t.log.warning(`${t.remote.name}: rolling back to ${t.state.current ?? 'no release (first deploy)'}`)
        // Cancelled, the job is killed within seconds: the release goes back and Gunicorn is signalled at once;
        // the slower health check is left out (that release served until just now).
        const steps = revertSteps(
          t.d,
          t.layout,
          failed,
          t.state.current,
          t.state.currentLink,
          t.build ?? failed
        ).filter(s => !(this.cancelled && s.name === 'revert-health'))
        await this.exec(t, batch(steps, t.layout, this.mark), undefined, true)
        this.switched.delete(t)
      } catch (e) {
        ok = false
        t.log.warning(`${t.remote.name}: rollback failed: ${(e as Error).message}`)
      }
    })
    return { ok }
  }

  /**
   * mode: rollback — makes `release-name`, else the release that was live before the live one, live again. A
   * `release-name` that never went live on a host passes the preflight there first. `onTarget` hears the release
   * chosen and the commit it was built from (its REVISION on the first host; undefined if unreadable) before
   * anything changes, e.g. to record a GitHub deployment of that commit.
   */
  async rollback(
    onTarget?: (release: string, revision: string | undefined) => Promise<void>
  ): Promise<DeployResult> {
    const d = this.settings.deploy
    return this.session('', async (targets, result) => {
      for (const t of targets) {
        const to = d.releaseName ?? rollbackTarget(t.state)
        if (!to) {
          throw new Error(
            `host ${t.remote.name}: no release before ${t.state.current ?? '(none)'} to roll back to`
          )
        }
        if (!t.state.releases.includes(to)) {
          throw new Error(
            `host ${t.remote.name}: release ${to} is not on the server (present: ${t.state.releases.join(', ') || 'none'})`
          )
        }
        if (result.release && result.release !== to) {
          throw new Error(
            `hosts disagree on the release to roll back to (${result.release} vs ${to}); set release-name`
          )
        }
        result.release = to
        result.previousRelease = t.state.current
      }
      if (onTarget && !d.dryRun) await onTarget(result.release, await revisionOf(targets[0], result.release))
      if (d.dryRun) {
        result.plan = Object.fromEntries(
          targets.map(t => [
            t.remote.name,
            publishSteps(t.d, t.layout, result.release, t.state.current).map(renderStep)
          ])
        )
        return
      }
      await this.everyHost(targets, async t => {
        if (wentLive(t.state, result.release)) return
        t.log.info(`${t.remote.name}: ${result.release} never went live here: preflight first`)
        await this.exec(
          t,
          batch(
            preflightSteps(t.layout, result.release, this.settings.deploy.deployCheck),
            t.layout,
            this.mark
          )
        )
      })
      const failure = await this.publish(targets, result.release, 'rollback')
      this.describeHosts(result, targets, result.release, failure)
      if (failure) {
        result.error = failure.error
        return
      }
      result.deployed = true
      result.rolledBack = true
    })
  }
}

/** The commit a release on the host was built from, or undefined when its REVISION cannot be read. */
async function revisionOf(t: Target, release: string): Promise<string | undefined> {
  // Only a record for GitHub: a host that cannot say leaves the workflow's commit there, it never stops the rollback.
  const r = await t.remote
    .run(cmd.readRevision(t.layout, release), { signal: AbortSignal.timeout(30_000) })
    .catch(() => undefined)
  const revision = r?.stdout.trim() ?? ''
  return r?.code === 0 && /^[0-9a-f]{7,64}$/.test(revision) ? revision : undefined
}
