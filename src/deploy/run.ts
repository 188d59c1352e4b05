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
import * as cmd from '../remote/commands.js'
import type { HostState, Layout } from '../remote/commands.js'
import { Remote } from '../remote/ssh.js'
import type { Settings } from '../settings.js'
import {
  batch,
  cleanupStep,
  preflightSteps,
  publishSteps,
  renderStep,
  revertSteps,
  rollbackTarget,
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

interface Target {
  remote: Remote
  state: HostState
  lock?: { release(): Promise<void> }
  /** Files of the release this host has, unchanged, in its live release: not uploaded again. */
  reuse?: string[]
}

const TAIL = 15

export class Runner {
  readonly steps: StepResult[] = []
  /** Warnings the hosts reported (WARN lines), `host: message`, for the summary. */
  readonly warnings: string[] = []
  private readonly layout: Layout
  /** Ends each step's output in a batch; unguessable, so no output of the project can fake a step's end. */
  private readonly mark = `django-deploy-step-${randomBytes(6).toString('hex')}:`

  constructor(
    private readonly settings: Settings,
    private readonly log: Log
  ) {
    this.layout = cmd.layout(settings.deploy.path)
  }

  /** Connects to every host (host keys verified), and takes the lock unless only reading. */
  private async open(lock: boolean): Promise<Target[]> {
    const s = this.settings
    const targets: Target[] = []
    try {
      for (const host of s.ssh.hosts) {
        const t0 = Date.now()
        this.log.startGroup(`${Remote.label(host)}: connect`)
        const remote = await Remote.connect(host, s.ssh).finally(() => this.log.endGroup())
        this.log.info(`${remote.name}: connected as ${host.user ?? s.ssh.user}, host key verified`)
        const target: Target = { remote, state: { releases: [] } }
        targets.push(target)
        this.record(remote.name, 'connect', 'ok', t0)
        if (lock) await this.lock(target)
        const inspected = await this.exec(target, {
          name: 'inspect',

          script: cmd.inspect(this.layout)
        })
        target.state = cmd.parseInspect(inspected)
      }
      return targets
    } catch (e) {
      await this.close(targets)
      throw e
    }
  }

  private async lock(t: Target): Promise<void> {
    const s = this.settings
    const holder = `${s.context.runUrl ?? `run on ${hostname()}`} (release ${s.deploy.releaseName ?? '?'}, since ${new Date().toISOString()})`
    const t0 = Date.now()
    this.log.startGroup(`${t.remote.name}: lock`)
    try {
      this.log.info(`waiting up to ${s.deploy.lockTimeout} s for the deploy lock on ${s.deploy.path}`)
      t.lock = await t.remote.hold(cmd.holdLock(this.layout, s.deploy.lockTimeout, holder), 'locked')
      this.log.info('lock taken')
    } catch (e) {
      const err = e as Error & { code?: number; output?: string }
      this.record(t.remote.name, 'lock', 'failed', t0, err.message)
      throw new StepError(t.remote.name, 'lock', err.code ?? 1, err.message)
    } finally {
      this.log.endGroup()
    }
    this.record(t.remote.name, 'lock', 'ok', t0)
  }

  private async close(targets: Target[]): Promise<void> {
    for (const t of targets) {
      await t.lock?.release().catch(() => undefined)
      t.remote.dispose()
    }
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
  private async exec(t: Target, step: Step, source?: ReleaseSource): Promise<string> {
    const host = t.remote.name
    const parts = step.parts ?? [step.name]
    let part = 0
    let partStart = Date.now()
    let lines: string[] = []
    let failedCode: number | undefined
    const finish = (name: string, code: number, why = ''): void => {
      const seconds = ((Date.now() - partStart) / 1000).toFixed(1)
      if (code === 0) {
        this.log.info(`✓ ${name} (${seconds} s)`)
        if (name !== 'inspect') this.record(host, name, 'ok', partStart)
      } else {
        this.log.info(`✗ ${name} failed after ${seconds} s (exit ${code})${why ? ` ${why}` : ''}`)
        this.record(
          host,
          name,
          'failed',
          partStart,
          `exit ${code}${why ? `, ${why}` : ''}\n${lines.slice(-TAIL).join('\n')}`
        )
      }
      this.log.endGroup()
    }
    const show = (line: string): void => {
      lines.push(line)
      if (line.startsWith(cmd.WARN)) {
        const warning = `${host}: ${line.slice(cmd.WARN.length).trim()}`
        this.warnings.push(warning)
        this.log.warning(warning)
      } else if (this.log.output) this.log.output(line)
      else this.log.info(line)
    }
    this.log.startGroup(`${host}: ${parts[0]}`)
    let upload: Awaited<ReturnType<typeof archive>> | undefined
    if (step.stdin === 'archive' && source) upload = await archive(source, t.reuse)
    const r = await t.remote.run(step.script, {
      stdin: upload?.stream,
      timeoutMs: this.settings.ssh.commandTimeout * 1000,
      onLine: raw => {
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
          if (part < parts.length) this.log.startGroup(`${host}: ${parts[part]}`)
          return
        }
        show(line)
      }
    })
    if (upload) {
      await upload.done
      const files = parseTree(source!.tree).length
      const reused = t.reuse?.length ?? 0
      this.log.info(
        `${host}: ${(upload.bytes() / 1024).toFixed(1)} KiB sent for ${files - reused} of ${files} files${reused ? `; ${reused} unchanged, taken from ${t.state.current}` : ''}`
      )
    }
    if (r.code === 0) {
      // Steps that ran without a batch's marker (a single step) end with the command.
      while (part < parts.length) {
        finish(parts[part], 0)
        if (++part < parts.length) this.log.startGroup(`${host}: ${parts[part]}`)
      }
      return r.stdout
    }
    const failed = parts[Math.min(part, parts.length - 1)]
    finish(failed, r.code, r.timedOut ? `timed out after ${this.settings.ssh.commandTimeout} s` : '')
    throw new StepError(host, failed, r.code, lines.slice(-TAIL).join('\n'))
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
    const r = await t.remote.run(cmd.reusableFiles(this.layout, source.name, live, d.remotePython), {
      stdin: Readable.from([gzipSync(source.tree)]),
      timeoutMs: this.settings.ssh.commandTimeout * 1000,
      onLine: line => {
        if (line.startsWith(cmd.WARN)) {
          const warning = `${host}: ${line.slice(cmd.WARN.length).trim()}`
          this.warnings.push(warning)
          this.log.warning(warning)
        } else if (line.startsWith('reuse=')) answer = line.slice('reuse='.length)
      }
    })
    try {
      if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`)
      const paths = pathsAt(source.tree, parseRanges(answer, treeRecords(source.tree).length))
      t.reuse = paths.length ? paths : undefined
      this.record(host, 'manifest', 'ok', t0)
    } catch (e) {
      this.log.warning(
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
    const dryRun = this.settings.deploy.dryRun
    const result: DeployResult = {
      release,
      deployed: false,
      rolledBack: false,
      dryRun,
      steps: this.steps,
      warnings: this.warnings
    }
    let targets: Target[] = []
    try {
      targets = await this.open(!dryRun)
      await body(targets, result)
    } catch (e) {
      result.error ??= (e as Error).message
    } finally {
      await this.close(targets)
    }
    return result
  }

  /** Deploys a release to every host; a failure before the switch changes nothing live, after it rolls back. */
  async deploy(source: ReleaseSource): Promise<DeployResult> {
    const d = this.settings.deploy
    return this.session(source.name, async (targets, result) => {
      result.previousRelease = targets[0]?.state.current
      if (d.dryRun) {
        result.plan = Object.fromEntries(
          targets.map(t => [
            t.remote.name,
            [
              ...updateSteps(d, this.layout, source),
              ...publishSteps(d, this.layout, source.name, t.state.current),
              cleanupStep(t.state, d.keepReleases, source.name, this.layout)
            ].map(renderStep)
          ])
        )
        return
      }
      for (const t of targets) {
        await this.findReusable(t, source)
        await this.exec(
          t,
          batch(updateSteps(d, this.layout, source, t.reuse && t.state.current), this.layout, this.mark),
          source
        )
      }
      const failure = await this.publish(targets, source.name)
      if (failure) {
        result.error = failure.error
        result.rolledBack = failure.revertedOk
        return
      }
      result.deployed = true
      for (const t of targets) {
        try {
          await this.exec(t, cleanupStep(t.state, d.keepReleases, source.name, this.layout))
        } catch (e) {
          this.log.warning(`cleanup of old releases failed, the deploy stands: ${(e as Error).message}`)
        }
      }
    })
  }

  /**
   * Makes `release` live host by host; on a failure puts every host that was touched back on what it served.
   * Returns the failure, if any, and whether the revert succeeded everywhere.
   */
  private async publish(
    targets: Target[],
    release: string,
    record: 'live' | 'rollback' = 'live'
  ): Promise<{ error: string; revertedOk: boolean } | undefined> {
    const touched: Target[] = []
    try {
      for (const t of targets) {
        touched.push(t)
        await this.exec(
          t,
          batch(
            publishSteps(this.settings.deploy, this.layout, release, t.state.current, record),
            this.layout,
            this.mark
          )
        )
      }
      return undefined
    } catch (e) {
      return { error: (e as Error).message, revertedOk: await this.revert(touched, release) }
    }
  }

  /** Puts each host back on the release that was live before; true when every host is back and healthy. */
  private async revert(targets: Target[], failed: string): Promise<boolean> {
    let ok = true
    for (const t of targets) {
      this.log.warning(`${t.remote.name}: rolling back to ${t.state.current ?? 'no release (first deploy)'}`)
      try {
        await this.exec(
          t,
          batch(
            revertSteps(this.settings.deploy, this.layout, failed, t.state.current, t.state.currentLink),
            this.layout,
            this.mark
          )
        )
      } catch (e) {
        ok = false
        this.log.warning(`${t.remote.name}: rollback failed: ${(e as Error).message}`)
      }
    }
    return ok
  }

  /**
   * mode: rollback — makes `release-name`, else the release that was live before the live one, live again. A
   * `release-name` that never went live on a host passes the preflight there first.
   */
  async rollback(): Promise<DeployResult> {
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
      if (d.dryRun) {
        result.plan = Object.fromEntries(
          targets.map(t => [
            t.remote.name,
            publishSteps(d, this.layout, result.release, t.state.current).map(renderStep)
          ])
        )
        return
      }
      for (const t of targets) {
        if (wentLive(t.state, result.release)) continue
        this.log.info(`${t.remote.name}: ${result.release} never went live here: preflight first`)
        await this.exec(
          t,
          batch(
            preflightSteps(this.layout, result.release, this.settings.deploy.deployCheck),
            this.layout,
            this.mark
          )
        )
      }
      const failure = await this.publish(targets, result.release, 'rollback')
      if (failure) {
        result.error = failure.error
        return
      }
      result.deployed = true
      result.rolledBack = true
    })
  }
}
