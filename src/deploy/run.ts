/**
 * The runner: executes a flow (flow.ts: phases, hosts in batches, steps per host, what a failure does) across
 * the hosts over the connection it was given, holds the deploy lock, and puts back what it switched when a
 * publish fails. Phases run across all hosts before the next begins, so no host goes live until every host
 * has its release ready.
 */
import type { ReleaseSource } from '../release/source.js'
import { parseRanges, pathsAt, treeRecords } from '../release/incremental.js'
import type { DeployResult } from '../report.js'
import * as cmd from '../remote/commands.js'
import { Remote, type Connect } from '../remote/ssh.js'
import type { Settings } from '../settings.js'
import { batch } from './batch.js'
import { deployFlow, planOf, rollbackFlow, type FlowHost, type Phase } from './flow.js'
import { Hosts } from './hosts.js'
import { buildDir, revertSteps, rollbackTarget, type Step } from './plan.js'
import { Executor } from './step.js'
import { ConnectionLost, LeaseLost, StepError, type Log, type Target } from './target.js'

export type { Log } from './target.js'

/** Database errors that say the tables are not there (SQLite, PostgreSQL, MySQL). */
const MISSING_TABLES = /no such table|relation "[^"]+" does not exist|Table '[^']+' doesn't exist/i

/**
 * A host's gate that fails because tables are missing, after only the primary host migrated: that host likely
 * has a database of its own. The error says so and names the setting that migrates every host.
 */
function hintOwnDatabase(e: unknown): never {
  if (e instanceof StepError && !(e instanceof ConnectionLost) && MISSING_TABLES.test(e.lastLines))
    throw new StepError(
      e.host,
      e.step,
      e.code,
      `${e.lastLines}\nThe database has tables missing on this host, but only the primary host ran the migrations: each host may have its own database (SQLite, or another DATABASES setting per host). \`migrate: every-host\` in deploy.yml migrates each one.`
    )
  throw e
}

/** A publish that failed: why, whether every host is back, and (when uncertain) what each host serves now. */
interface Failure {
  error: string
  revertedOk: boolean
  live?: (string | undefined)[]
}

export class Runner {
  private readonly x: Executor
  private readonly hosts: Hosts
  /** Set by `fail()`: an internal error elsewhere in the action; whatever this deploy switched is put back. */
  private fatal?: string
  /** The hosts of the running session, and those whose `current` this deploy may have moved (not put back). */
  private targets: Target[] = []
  private readonly switched = new Set<Target>()

  constructor(
    private readonly settings: Settings,
    private readonly log: Log,
    /** For tests only: called after a host's switch, to inject a fault there. */
    private readonly faults: { afterSwitch?: () => Promise<void> | void } = {},
    /** Opens a connection to a host: SSH, or a scripted fake in the unit tests. */
    connect: Connect = (host, ssh) => Remote.connect(host, ssh)
  ) {
    this.x = new Executor(settings)
    this.hosts = new Hosts(settings, log, this.x, connect)
  }

  /**
   * The last resort (an uncaught exception or unhandled rejection anywhere in the action): stops the deploy
   * as a cancel does; when the deploy's flow ends, every host it switched is put back (see `session`).
   */
  fail(why: string): void {
    this.fatal ??= why
    this.cancel(why)
  }

  /**
   * Stops the deploy (the runner was cancelled): the running step's processes are killed on the server, no
   * further step starts except putting back what was live.
   */
  cancel(why: string): void {
    if (this.x.cancelled) return
    this.log.warning(`${why}: stopping the deploy`)
    this.x.cancel(why)
  }

  /**
   * When the deploy's own flow does not end after `fail()`: puts back every host this deploy switched, lets
   * the locks go and returns what is known, for the report.
   */
  async rescue(release: string): Promise<DeployResult> {
    const result = this.emptyResult(release)
    const targets = this.targets
    await this.putBack(result)
    await this.hosts.close(targets)
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
    const { steps, warnings, migrations } = this.x
    return { release, deployed: false, rolledBack: false, dryRun, steps, warnings, migrations }
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
    const targets: Target[] = (this.targets = [])
    try {
      await this.hosts.open(!result.dryRun, targets)
      await body(targets, result)
    } catch (e) {
      result.error ??= (e as Error).message
    } finally {
      if (this.fatal) await this.putBack(result)
      await this.hosts.close(targets)
    }
    return result
  }

  /** The hosts as the flow sees them. */
  private flowHosts(targets: Target[]): FlowHost[] {
    return targets.map(t => ({
      name: t.remote.name,
      primary: t.host.primary,
      d: t.d,
      layout: t.layout,
      state: t.state
    }))
  }

  /** Deploys a release to every host; a failure before the switch changes nothing live, after it rolls back. */
  async deploy(source: ReleaseSource): Promise<DeployResult> {
    const d = this.settings.deploy
    return this.session(source.name, async (targets, result) => {
      result.previousRelease = targets[0]?.state.current
      for (const t of targets) t.build = buildDir(t.state, source.name)
      const phases = deployFlow(d, source, this.flowHosts(targets))
      if (d.dryRun) return void (result.plan = planOf(phases))
      for (const t of targets) {
        const silent = (t.host.roles ?? []).filter(r => r !== 'web' && !t.d.roleReloadCommands[r])
        if (silent.length)
          this.log.warning(
            `${t.remote.name}: no reload-command for role ${silent.join(', ')} (a mapping of role to command in deploy.yml): what it runs keeps the code it started with`
          )
      }
      const failure = await this.run(phases, targets, source.name, source)
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
    })
  }

  /**
   * Runs the phases in order: each batch's hosts at once. A failure stops the flow (`stop`: thrown), reverts
   * what the phase switched (`revert`: returned), or is a warning (`warn`).
   */
  private async run(
    phases: Phase[],
    targets: Target[],
    release: string,
    source?: ReleaseSource
  ): Promise<Failure | undefined> {
    const byName = new Map(targets.map(t => [t.remote.name, t]))
    for (const phase of phases) {
      if (phase.onlyIfHeldBack && !this.x.migrations.some(m => m.when === 'after-deploy')) continue
      if (phase.note) this.log.info(phase.note)
      if (phase.onFailure === 'revert') {
        const failure = await this.publish(phase, byName, targets, release)
        if (failure) return failure
        continue
      }
      await this.hosts.every(
        phase.batches.flat().map(h => byName.get(h.host)!),
        async t => {
          const own = phase.batches.flat().find(h => h.host === t.remote.name)!
          if (own.note) t.log.info(own.note)
          try {
            await this.steps$(t, own.steps, source)
          } catch (e) {
            if (phase.onFailure === 'warn')
              return this.x.warn(t, `${phase.warns ?? `${phase.name} failed`}: ${(e as Error).message}`)
            if (phase.migratedOnce) hintOwnDatabase(e)
            throw e
          }
        }
      )
    }
    return undefined
  }

  /**
   * A host's steps of one phase, in as few round trips as it can: all in one batch, but a step whose answer
   * shapes the next ones (the manifest) runs on its own first.
   */
  private async steps$(t: Target, steps: Step[], source?: ReleaseSource): Promise<void> {
    let rest = steps
    const first = rest[0]
    if (first?.answer) {
      await this.manifest(t, first, source!)
      rest = rest.slice(1)
    }
    if (!rest.length) return
    const chosen = rest.map(s => (s.fallback && !t.reuse ? s.fallback : s))
    await this.x.exec(t, batch(chosen, t.layout, this.x.mark), source)
  }

  /**
   * Finds the files of the release that the host's live release holds unchanged (verified there), so the
   * upload leaves them out. Any failure here only costs bytes: the whole release is sent.
   */
  private async manifest(t: Target, step: Step, source: ReleaseSource): Promise<void> {
    t.reuse = undefined
    try {
      const out = await this.x.exec(t, step, source)
      const answer = out
        .split('\n')
        .find(l => l.startsWith(step.answer!))
        ?.slice(step.answer!.length)
      const paths = pathsAt(source.tree, parseRanges(answer ?? '', treeRecords(source.tree).length))
      t.reuse = paths.length ? paths : undefined
    } catch (e) {
      if (this.x.cancelled) throw e
      t.log.warning(
        `${t.remote.name}: could not compare with the live release, sending every file: ${(e as Error).message}`
      )
    }
  }

  /**
   * Makes the release live on every host of the phase, batch after batch, each gated by its health check; on a
   * failure puts every host that was touched (earlier batches included) back on what it served. Returns the
   * failure, if any, and whether the revert succeeded everywhere.
   */
  private async publish(
    phase: Phase,
    byName: Map<string, Target>,
    targets: Target[],
    release: string
  ): Promise<Failure | undefined> {
    const touched: Target[] = []
    /** Hosts that refused (another deploy holds their lock now): nothing changed there, nothing to put back. */
    const refused = new Set<Target>()
    const batches = phase.batches
    try {
      for (const [i, hosts] of batches.entries()) {
        if (batches.length > 1)
          this.log.info(`switch, batch ${i + 1} of ${batches.length}: ${hosts.map(h => h.host).join(', ')}`)
        await this.hosts.every(
          hosts.map(h => byName.get(h.host)!),
          async t => {
            touched.push(t)
            this.switched.add(t)
            const own = hosts.find(h => h.host === t.remote.name)!
            await this.steps$(t, own.steps).catch(e => {
              if (e instanceof LeaseLost) {
                refused.add(t)
                this.switched.delete(t)
              }
              throw e
            })
            await this.faults.afterSwitch?.()
          }
        )
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
    await this.hosts.every(targets, async t => {
      try {
        live.set(
          t,
          t.remote.lost ? await this.hosts.reconnect(t) : (await this.hosts.inspect(t, true)).current
        )
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
    await this.hosts.every(targets, async t => {
      try {
        if (t.remote.lost && !(await this.wentLiveAfterAll(t, failed))) return
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
        ).filter(s => !(this.x.cancelled && s.name === 'revert-health'))
        await this.x.exec(t, batch(steps, t.layout, this.x.mark), undefined, true)
        this.switched.delete(t)
      } catch (e) {
        ok = false
        t.log.warning(`${t.remote.name}: rollback failed: ${(e as Error).message}`)
      }
    })
    return { ok }
  }

  /**
   * A host whose connection was lost: reached again, is `failed` live there? When not, nothing is put back but
   * a release of the same name it replaced before the connection went (a no-op when `place` never ran).
   */
  private async wentLiveAfterAll(t: Target, failed: string): Promise<boolean> {
    const live = await this.hosts.reconnect(t)
    if (live === failed) return true
    t.log.info(
      `${t.remote.name}: ${failed} did not go live here (live: ${live ?? 'none'}): nothing to put back`
    )
    if (t.build && t.build !== failed) {
      const restore = { name: 'revert-restore', script: cmd.restoreReplaced(t.layout, failed) }
      await this.x.exec(t, restore, undefined, true)
    }
    this.switched.delete(t)
    return false
  }

  /** Each host's release before and after, for the report. */
  private describeHosts(result: DeployResult, targets: Target[], release: string, failure?: Failure): void {
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
    // Hosts that served different releases have no one previous release (report.ts `previousReleases`).
    if (new Set(targets.map(t => t.state.current ?? '')).size > 1) result.previousRelease = undefined
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
      result.release = rollbackRelease(targets, d.releaseName)
      result.previousRelease = targets[0]?.state.current
      const phases = rollbackFlow(d, result.release, this.flowHosts(targets))
      if (d.dryRun) return void (result.plan = planOf(phases))
      if (onTarget) await onTarget(result.release, await revisionOf(targets[0], result.release))
      const failure = await this.run(phases, targets, result.release)
      this.describeHosts(result, targets, result.release, failure)
      if (failure) return void (result.error = failure.error)
      result.deployed = true
      result.rolledBack = true
    })
  }
}

/** The release every host goes back to: `release-name`, or each host's previous one (they must agree). */
function rollbackRelease(targets: Target[], name: string | undefined): string {
  let release = ''
  for (const t of targets) {
    const to = name ?? rollbackTarget(t.state)
    if (!to)
      throw new Error(
        `host ${t.remote.name}: no release before ${t.state.current ?? '(none)'} to roll back to`
      )
    if (!t.state.releases.includes(to)) {
      throw new Error(
        `host ${t.remote.name}: release ${to} is not on the server (present: ${t.state.releases.join(', ') || 'none'})`
      )
    }
    if (release && release !== to)
      throw new Error(`hosts disagree on the release to roll back to (${release} vs ${to}); set release-name`)
    release = to
  }
  return release
}

/** The commit a release on the host was built from, or undefined when its REVISION cannot be read. */
async function revisionOf(t: Target, release: string): Promise<string | undefined> {
  // Only a record for GitHub: a host that cannot say leaves the workflow's commit there, it never stops the
  // rollback (`run` never throws: an error is its result).
  const r = await t.remote.run(cmd.readRevision(t.layout, release), {
    signal: AbortSignal.timeout(30_000),
    steps: ['read-revision']
  })
  const revision = r.stdout.trim()
  return r.code === 0 && /^[0-9a-f]{7,64}$/.test(revision) ? revision : undefined
}
