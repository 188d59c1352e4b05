/**
 * The runner of `mode: setup`: on every host at once (at most max-parallel), connected as the administrator with
 * the host key verified as for deploys, the phases inspect → plan (pure, setup/plan.ts) → diff → apply. Nothing
 * is written before every item of the host was inspected and none is refused; a dry run stops after the diffs.
 * A host's failure ends that host's setup only (the others finish theirs); the result says which.
 */
import { Executor } from '../deploy/step.js'
import { eachAtMost, HostLog, type Log, type Target } from '../deploy/target.js'
import * as cmd from '../remote/commands.js'
import { asRoot, setupDiff } from '../remote/setup.js'
import { Remote, type Connect, type Connection } from '../remote/ssh.js'
import type { SetupHostResult, SetupResult } from '../report.js'
import type { Host, Settings } from '../settings.js'
import type { Step } from '../deploy/plan.js'
import {
  desired,
  inspected,
  inspectScript,
  KEY_BLOB,
  osProblem,
  parseFacts,
  planHost,
  renderSteps,
  setupSteps,
  type PlanItem
} from './plan.js'

export class SetupRunner {
  private readonly x: Executor

  constructor(
    private readonly settings: Settings,
    private readonly log: Log,
    private readonly connect: Connect = (host, ssh) => Remote.connect(host, ssh)
  ) {
    this.x = new Executor(settings)
  }

  cancel(why: string): void {
    this.log.warning(`${why}: stopping setup (the running step ends; no further step starts)`)
    this.x.cancel(why)
  }

  async run(): Promise<SetupResult> {
    const s = this.settings.setup!
    const dryRun = this.settings.deploy.dryRun
    const hosts = this.settings.ssh.hosts
    const results: SetupHostResult[] = hosts.map(h => ({ host: Remote.label(h), items: [], changed: false }))
    const plans: string[][] = hosts.map(() => [])
    await eachAtMost(
      hosts.map((host, i) => ({ host, i })),
      this.settings.deploy.maxParallel,
      async ({ host, i }) => {
        const log = new HostLog(this.log, hosts.length > 1)
        try {
          plans[i] = await this.host(host, results[i], log)
        } catch (e) {
          results[i].error = (e as Error).message
          log.warning(`${results[i].host}: ${results[i].error}`)
        } finally {
          log.flush()
        }
      }
    )
    const failed = results.filter(r => r.error)
    return {
      app: s.app,
      dryRun,
      hosts: results,
      steps: this.x.steps,
      siteUrl: `https://${s.domains[0]}/`,
      plan: dryRun
        ? [
            {
              phase: 'setup',
              onFailure: 'stop',
              batches: [results.map((r, i) => ({ host: r.host, steps: plans[i] }))]
            }
          ]
        : undefined,
      error: failed.length
        ? `setup failed on ${failed.length} of ${results.length} host${results.length > 1 ? 's' : ''}: ${failed.map(r => r.error).join('\n')}`
        : undefined
    }
  }

  /** One host: inspect, plan, diffs, then (not dry, nothing refused) the steps. Returns the steps, rendered. */
  private async host(host: Host, result: SetupHostResult, log: HostLog): Promise<string[]> {
    const s = this.settings.setup!
    const ssh = { ...this.settings.ssh, user: s.user, privateKey: s.privateKey, passphrase: undefined }
    const user = host.user ?? this.settings.ssh.user
    const deployPath = host.deployPath ?? this.settings.deploy.path
    log.startGroup(`${Remote.label(host)}: connect`)
    let remote: Connection
    try {
      remote = await this.connect({ ...host, user: s.user }, ssh)
      log.info(
        `${remote.name}: connected as ${s.user}${s.user === 'root' ? '' : ' (commands through sudo -n)'}, host key verified`
      )
    } finally {
      log.endGroup()
    }
    const t: Target = {
      host,
      remote,
      state: { releases: [] },
      log,
      layout: cmd.layout(deployPath),
      d: this.settings.deploy
    }
    try {
      const d = desired(s, user, deployPath)
      const run = (step: Step): Promise<string> =>
        this.x.exec(t, { ...step, script: asRoot(s.user, step.script) })
      const facts = parseFacts(
        await run({ name: 'inspect', script: inspectScript(d, KEY_BLOB(s.publicKey)) }),
        inspected(d).length
      )
      result.os = facts.os
      const bad = osProblem(facts.os)
      if (bad) throw new Error(bad)
      const items = planHost(d, facts)
      for (const item of items) {
        const diff = await this.diff(item, run)
        result.items.push({ item: item.item, status: item.status, why: item.why, diff })
      }
      this.tell(log, remote.name, items)
      const refused = items.filter(i => i.status === 'refused')
      if (refused.length)
        throw new Error(`refused, nothing was changed: ${refused.map(i => `${i.item}: ${i.why}`).join('; ')}`)
      const steps = setupSteps(d, items, facts, s.publicKey)
      if (this.settings.deploy.dryRun || !steps.length) return renderSteps(steps)
      result.changed = true
      for (const step of steps) await run(step)
      return renderSteps(steps)
    } finally {
      remote.dispose()
    }
  }

  /** A file's unified diff, computed on the server from the new content on stdin (a secret's: none). */
  private async diff(item: PlanItem, run: (step: Step) => Promise<string>): Promise<string | undefined> {
    const m = item.file
    if (!m || item.status === 'unchanged') return undefined
    if (m.secret) return '(a secret: its content is not shown)'
    return run({ name: `diff ${m.item}`, script: setupDiff(m.path, item.exists ?? false), input: m.content })
  }

  private tell(log: HostLog, name: string, items: PlanItem[]): void {
    const changed = items.filter(i => i.status !== 'unchanged')
    if (!changed.length) return log.info(`${name}: no changes: every item is as setup would make it`)
    for (const i of changed) log.info(`${name}: ${i.item}: ${i.status}${i.why ? ` (${i.why})` : ''}`)
  }
}
