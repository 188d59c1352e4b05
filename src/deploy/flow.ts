/**
 * The flow, as data: the phases of a deploy or a rollback, each with its hosts (in batches), the steps each
 * host runs and what a failure does. A pure function of the settings, the release and what each host holds
 * (read once connected, locked and inspected). The runner executes the list; the dry run prints the same list.
 *
 *   deploy:   update (manifest, upload, virtualenv, checks; one host: migrate and health too)
 *             → gate on the primary (a fleet sharing one database: migrate, once)
 *             → gate on the others (health through the new release before anything switches)
 *             → publish (switch, reload, health; in rolling batches)
 *             → after-deploy (the migrations held back until every host serves the new release; once) → cleanup
 *   rollback: schema (in the live release, once: the applied migrations the target lacks; contract ones refuse)
 *             → preflight (only where the target never went live) → publish
 */
import * as cmd from '../remote/commands.js'
import type { HostState, Layout } from '../remote/commands.js'
import type { ReleaseSource } from '../release/source.js'
import type { PlannedPhase } from '../report.js'
import type { DeploySettings } from '../settings.js'
import {
  buildDir,
  cleanupStep,
  gateSteps,
  migrateStep,
  preflightSteps,
  publishSteps,
  renderStep,
  rollbackSchemaStep,
  rollingBatches,
  updateSteps,
  wentLive,
  type Step
} from './plan.js'

/**
 * What a failure in the phase does: `stop` the deploy (nothing live changed yet), `revert` every host this
 * phase switched (earlier batches included) to what it served, or `warn` and go on (the deploy stands).
 */
export type OnFailure = 'stop' | 'revert' | 'warn'

/** A host as the flow sees it, once inspected. */
export interface FlowHost {
  name: string
  primary?: boolean
  /** The deploy settings as they apply to this host's roles (plan.ts `forRoles`). */
  d: DeploySettings
  layout: Layout
  state: HostState
}

export interface HostSteps {
  host: string
  steps: Step[]
  /** Said in the job log before the host's steps. */
  note?: string
}

export interface Phase {
  name: 'update' | 'gate-primary' | 'gate' | 'schema' | 'preflight' | 'publish' | 'after-deploy' | 'cleanup'
  /** Batches run one after another; the hosts of one batch at once (at most max-parallel). */
  batches: HostSteps[][]
  onFailure: OnFailure
  /** Said in the job log before the phase. */
  note?: string
  /** With `warn`: what the warning says, before the error. */
  warns?: string
  /**
   * Runs only when a migrate before the switch held migrations back (after-deploy-migrations, or marked the
   * django-safemigrate way: only the server's Django knows).
   */
  onlyIfHeldBack?: boolean
  /** A gate after only the primary host migrated: missing tables hint at a database per host. */
  migratedOnce?: boolean
}

const all = (hosts: FlowHost[], steps: (h: FlowHost) => Step[]): HostSteps[][] => [
  hosts.map(h => ({ host: h.name, steps: steps(h) }))
]

/** The phases of deploying `source` (the global settings `d`) to the hosts. */
export function deployFlow(d: DeploySettings, source: ReleaseSource, hosts: FlowHost[]): Phase[] {
  const fleet = hosts.length > 1
  const once = fleet && d.migrate && !d.migrateEveryHost
  const build = (h: FlowHost): string => buildDir(h.state, source.name)
  const primary = hosts.find(h => h.primary) ?? hosts[0]
  const phases: Phase[] = [
    { name: 'update', batches: all(hosts, h => update(d, source, h, fleet)), onFailure: 'stop' }
  ]
  if (fleet) {
    if (once)
      phases.push({
        name: 'gate-primary',
        batches: all([primary], h => gateSteps(h.d, h.layout, build(h), true)),
        onFailure: 'stop',
        note: `${primary.name}: the primary host runs the migrations, once for the fleet`
      })
    // A host with nothing to check here (a worker, when the primary migrated) has no gate round trip.
    const rest = (once ? hosts.filter(h => h !== primary) : hosts).filter(
      h => gateSteps(h.d, h.layout, build(h), !once).length > 0
    )
    if (rest.length)
      phases.push({
        name: 'gate',
        batches: all(rest, h => gateSteps(h.d, h.layout, build(h), !once)),
        onFailure: 'stop',
        migratedOnce: once
      })
  }
  phases.push(publish(d, hosts, source.name, 'live', build))
  if (d.migrate)
    phases.push({
      name: 'after-deploy',
      batches: all(d.migrateEveryHost ? hosts : [primary], h => [
        migrateStep(h.d, h.layout, source.name, 'after')
      ]),
      onFailure: 'warn',
      warns: `the after-deploy migrations failed; every host serves ${source.name} and nothing was rolled back: fix the cause, then run them (manage.py migrate in the live release) or deploy again`,
      note: `every host serves ${source.name}: the migrations held back until now run${d.migrateEveryHost ? '' : `, on ${primary.name}`}`,
      onlyIfHeldBack: true
    })
  phases.push({
    name: 'cleanup',
    batches: all(hosts, h => [cleanupStep(h.state, d.keepReleases, source.name, h.layout)]),
    onFailure: 'warn',
    warns: 'cleanup of old releases failed, the deploy stands'
  })
  return phases
}

/**
 * A host's update: the manifest (which files its live release has unchanged, so the upload leaves them out)
 * and the steps that make the release ready without touching what is live. One host alone also migrates and
 * asks the health URL here; a fleet does that in its gates, once every host is ready.
 */
function update(d: DeploySettings, source: ReleaseSource, h: FlowHost, fleet: boolean): Step[] {
  const gated = fleet ? 'without-gate' : 'with-gate'
  const build = buildDir(h.state, source.name)
  const plain = updateSteps(h.d, h.layout, source, undefined, gated, build)
  const live = h.state.current
  if (!live || live === source.name) return plain
  const manifest: Step = {
    name: 'manifest',
    script: cmd.reusableFiles(h.layout, source.name, live, d.remotePython),
    stdin: 'tree',
    answer: 'reuse='
  }
  const reusing = updateSteps(h.d, h.layout, source, live, gated, build)
  return [
    manifest,
    ...reusing.map((s, i) => (s.script === plain[i].script ? s : { ...s, fallback: plain[i] }))
  ]
}

function publish(
  d: DeploySettings,
  hosts: FlowHost[],
  release: string,
  record: 'live' | 'rollback',
  build: (h: FlowHost) => string
): Phase {
  return {
    name: 'publish',
    batches: rollingBatches(hosts, d.rolling).map(batch =>
      batch.map(h => ({
        host: h.name,
        steps: publishSteps(h.d, h.layout, release, h.state.current, record, undefined, build(h))
      }))
    ),
    onFailure: 'revert'
  }
}

/** The phases of making `release` live again (mode: rollback): its preflight where it never went live. */
export function rollbackFlow(d: DeploySettings, release: string, hosts: FlowHost[]): Phase[] {
  const fresh = hosts.filter(h => !wentLive(h.state, release))
  const phases: Phase[] = []
  // The database as the live release left it: what the target would run against (one database: checked once).
  const primary = hosts.find(h => h.primary) ?? hosts[0]
  const schema = (d.migrateEveryHost ? hosts : [primary]).filter(
    h => h.state.current && h.state.current !== release
  )
  if (d.migrate && schema.length)
    phases.push({
      name: 'schema',
      batches: all(schema, h => [rollbackSchemaStep(h.d, h.layout, h.state.current!, release)]),
      onFailure: 'stop'
    })
  if (fresh.length)
    phases.push({
      name: 'preflight',
      batches: [
        fresh.map(h => ({
          host: h.name,
          steps: preflightSteps(h.layout, release, d.deployCheck),
          note: `${h.name}: ${release} never went live here: preflight first`
        }))
      ],
      onFailure: 'stop'
    })
  phases.push(publish(d, hosts, release, 'rollback', () => release))
  return phases
}

/** The phases as the dry run prints them (and the summary lists them). */
export function planOf(phases: Phase[]): PlannedPhase[] {
  return phases.map(p => ({
    phase: p.name,
    onFailure: p.onFailure,
    batches: p.batches.map(b => b.map(h => ({ host: h.host, steps: h.steps.map(render) })))
  }))
}

function render(s: Step): string {
  const text = renderStep(s)
  return s.fallback
    ? `${text}\n# (when the manifest finds no file to reuse, instead:)\n${s.fallback.script}`
    : text
}
