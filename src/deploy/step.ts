/**
 * Runs one step (or a batch of steps in one round trip) on one host: fenced with the lock's lease, bounded by
 * command-timeout, stopped by a cancel (its processes killed on the server), each step in its own log group and
 * recorded with its duration. Every remote step of a deploy goes through here.
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import { failureTail } from '../django/traceback.js'
import type { ReleaseSource } from '../release/source.js'
import { archive } from '../release/source.js'
import { parseTree } from '../release/incremental.js'
import * as cmd from '../remote/commands.js'
import type { MigrationRun, StepResult } from '../report.js'
import type { Settings } from '../settings.js'
import { BatchParser, newMark } from './batch.js'
import type { Step } from './plan.js'
import { ConnectionLost, LeaseLost, StepError, type Target } from './target.js'

const TAIL = 15
/** A step's last lines kept for its error (a Python traceback's start among them), whatever it prints. */
const KEPT_LINES = 200
/** Characters kept of each of those lines. */
const KEPT_LINE = 2000
/** Characters of one step's output written to the job log; beyond them only the last KEPT_LINES are kept. */
const LOGGED_PER_STEP = 2 * 1024 * 1024

type Upload = Awaited<ReturnType<typeof archive>>

/** The log group, record and kept lines of the step of a batch running now. */
class PartLog {
  lines: string[] = []
  private start = Date.now()
  private logged = 0
  private unlogged = 0
  constructor(
    private readonly x: Executor,
    private readonly t: Target,
    first: string
  ) {
    t.log.startGroup(`${t.remote.name}: ${first}`)
  }

  show(line: string, answer?: string): void {
    // A copy of at most KEPT_LINE characters: a piece of a huge line must not keep the whole of it alive.
    this.lines.push(line.length > KEPT_LINE ? Buffer.from(`${line.slice(0, KEPT_LINE)}…`).toString() : line)
    if (this.lines.length > KEPT_LINES) this.lines.shift()
    if (answer && line.startsWith(answer)) return
    if (this.logged >= LOGGED_PER_STEP) this.unlogged++
    else if (line.startsWith(cmd.WARN)) this.x.warn(this.t, line.slice(cmd.WARN.length).trim())
    else if (line.startsWith(cmd.MIGRATION)) this.x.migration(this.t, line.slice(cmd.MIGRATION.length))
    else if (this.t.log.output) this.t.log.output(line)
    else this.t.log.info(line)
    this.logged += line.length
  }

  /** Ends the step's group; `next` opens the following step's. */
  finish(name: string, code: number, why = '', next?: string): void {
    const seconds = ((Date.now() - this.start) / 1000).toFixed(1)
    const host = this.t.remote.name
    if (this.unlogged)
      this.t.log.info(`(${this.unlogged} more lines of output not shown: ${LOGGED_PER_STEP} characters are)`)
    if (code === 0) {
      this.t.log.info(`✓ ${name} (${seconds} s)`)
      if (name !== 'inspect') this.x.record(host, name, 'ok', this.start)
    } else {
      this.t.log.info(`✗ ${name} failed after ${seconds} s (exit ${code})${why ? ` ${why}` : ''}`)
      const detail = `exit ${code}${why ? `, ${why}` : ''}\n${failureTail(this.lines, TAIL)}`
      this.x.record(host, name, 'failed', this.start, detail)
    }
    this.t.log.endGroup()
    this.lines = []
    this.logged = this.unlogged = 0
    this.start = Date.now()
    if (next) this.t.log.startGroup(`${host}: ${next}`)
  }
}

export class Executor {
  readonly steps: StepResult[] = []
  /** Warnings the hosts reported (WARN lines), `host: message`, for the summary. */
  readonly warnings: string[] = []
  /** The migrations each host's migrate applies (or applied), in order, as it announced them. */
  readonly migrations: MigrationRun[] = []
  /** Ends each step's output in a batch (batch.ts). */
  readonly mark = newMark()
  /** Printed by the server when it refuses a step of this deploy (lease lost); an exit code would not do. */
  private readonly leaseMark = `django-deploy-lease-lost-${randomBytes(9).toString('hex')}`
  /** Set by `cancel()`: why the deploy stops (no new step starts, the running one is killed). */
  cancelled?: string
  private readonly stopRunning = new Set<(why: 'cancel') => void>()

  constructor(private readonly settings: Settings) {}

  cancel(why: string): void {
    this.cancelled = why
    for (const f of [...this.stopRunning]) f('cancel')
  }

  warn(t: Target, message: string): void {
    const warning = `${t.remote.name}: ${message}`
    this.warnings.push(warning)
    t.log.warning(warning)
  }

  /** A migration a host's migrate announced (a MIGRATION line), for the summary and the job log. */
  migration(t: Target, json: string): void {
    try {
      const m = JSON.parse(json) as Omit<MigrationRun, 'host'>
      this.migrations.push({ host: t.remote.name, ...m })
      t.log.info(`migration to apply (${m.when}): ${m.app}.${m.name}: ${m.operations.join('; ')}`)
    } catch {
      t.log.info(`${cmd.MIGRATION}${json}`)
    }
  }

  record(host: string, step: string, outcome: StepResult['outcome'], t0: number, detail?: string): void {
    this.steps.push({ host, step, outcome, durationMs: Date.now() - t0, detail })
  }

  /** The step's stdin: the release archive (leaving out the files to reuse), the release's file list, its input. */
  private async stdinOf(
    t: Target,
    step: Step,
    source?: ReleaseSource
  ): Promise<{ upload?: Upload; stdin?: Readable | string }> {
    if (step.stdin === 'archive' && source) {
      const upload = await archive(source, t.reuse)
      return { upload, stdin: upload.stream }
    }
    if (step.stdin === 'tree' && source) return { stdin: Readable.from([gzipSync(source.tree)]) }
    return { stdin: step.input }
  }

  /**
   * Each step gets command-timeout seconds (the clock restarts at each step of a batch, `arm`). A timed-out or
   * cancelled step's process group is killed on the server, then its channel closed.
   */
  private stopper(t: Target): {
    abort: AbortController
    arm(): void
    stopped(): 'timeout' | 'cancel' | undefined
    done(): void
  } {
    const abort = new AbortController()
    let stopped: 'timeout' | 'cancel' | undefined
    let timer: NodeJS.Timeout | undefined
    const stop = (why: 'timeout' | 'cancel'): void => {
      if (stopped) return
      stopped = why
      clearTimeout(timer)
      void (async () => {
        if (t.token) {
          await t.remote.run(cmd.killSteps(t.layout, t.token), {
            signal: AbortSignal.timeout(10_000),
            steps: ['kill-steps']
          })
          // The step's command ends once its group is gone; its channel is closed regardless.
          await new Promise(r => setTimeout(r, 3000).unref())
        }
        abort.abort()
      })()
    }
    const arm = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => stop('timeout'), this.settings.ssh.commandTimeout * 1000)
    }
    this.stopRunning.add(stop)
    arm()
    return {
      abort,
      arm,
      stopped: () => stopped,
      done: () => {
        clearTimeout(timer)
        this.stopRunning.delete(stop)
      }
    }
  }

  /**
   * Runs the step on the host; throws StepError naming the step that failed, with its last lines (ConnectionLost,
   * LeaseLost for those). Returns the command's stdout.
   */
  async exec(t: Target, step: Step, source?: ReleaseSource, evenIfCancelled = false): Promise<string> {
    const host = t.remote.name
    if (this.cancelled && !evenIfCancelled) throw new StepError(host, step.name, 130, this.cancelled)
    const parser = new BatchParser(this.mark, step.parts ?? [step.name])
    const log = new PartLog(this, t, parser.parts[0])
    const { upload, stdin } = await this.stdinOf(t, step, source)
    // git failing (a missing object, a failing LFS or other filter) fails the step; its message is kept.
    const archiveFailed = upload?.done.then(
      () => undefined,
      (e: Error) => e.message
    )
    const stop = this.stopper(t)
    const script = t.token ? cmd.fenced(t.layout, t.token, step.script, this.leaseMark) : step.script
    let refused = false
    const r = await t.remote
      .run(script, {
        stdin,
        signal: stop.abort.signal,
        steps: parser.parts,
        onLine: raw => {
          if (raw === this.leaseMark) return void (refused = true)
          const { output, ended } = parser.feed(raw)
          if (output !== undefined) log.show(output, step.answer)
          if (!ended) return
          log.finish(ended, 0, '', parser.parts[parser.part])
          stop.arm()
        }
      })
      .finally(() => {
        stop.done()
        // The command ended: an archive it did not read (a refused release) must not keep git blocked.
        upload?.stop()
      })
    const gitError = await archiveFailed
    const stopped = stop.stopped()
    if (r.code === 0 && !stopped && !r.lost && !gitError) {
      if (upload) this.uploaded(t, upload, source!)
      // Steps that ran without a batch's marker (a single step) end with the command.
      while (parser.part < parser.parts.length)
        log.finish(parser.parts[parser.part], 0, '', parser.parts[++parser.part])
      return r.stdout
    }
    const failed = parser.current
    if (stopped) {
      const code = stopped === 'timeout' ? 124 : 130
      const why =
        stopped === 'timeout'
          ? `timed out after ${this.settings.ssh.commandTimeout} s (command-timeout): its processes on the server were killed`
          : `${this.cancelled}: its processes on the server were killed`
      const tail = [...log.lines.slice(-TAIL), why].join('\n')
      log.finish(failed, code, why)
      throw new StepError(host, failed, code, tail)
    }
    if (r.lost) {
      const why = `connection lost (${r.lost}): what the step did on the server is unknown`
      const tail = [...log.lines.slice(-TAIL), why].join('\n')
      log.finish(failed, 255, why)
      throw new ConnectionLost(host, failed, 255, tail)
    }
    if (gitError) {
      for (const line of gitError.split('\n')) log.show(line)
      const tail = log.lines.slice(-TAIL).join('\n')
      log.finish(failed, r.code || 1, 'the release archive could not be made')
      throw new StepError(host, failed, r.code || 1, tail)
    }
    const tail = failureTail(log.lines, TAIL)
    log.finish(failed, r.code)
    const Err = refused ? LeaseLost : StepError
    throw new Err(host, failed, r.code, tail)
  }

  private uploaded(t: Target, upload: Upload, source: ReleaseSource): void {
    t.sent = upload.bytes()
    const files = parseTree(source.tree).length
    const reused = t.reuse?.length ?? 0
    t.log.info(
      `${t.remote.name}: ${(upload.bytes() / 1024).toFixed(1)} KiB sent for ${files - reused} of ${files} files${reused ? `; ${reused} unchanged, taken from ${t.state.current}` : ''}`
    )
  }
}
