/**
 * The steps: named remote commands per host, pure data built from the settings, the release and what the host
 * holds. flow.ts puts them in phases; the runner executes those and the dry run prints them.
 */
import * as cmd from '../remote/commands.js'
import type { HistoryEntry, HostState, Layout } from '../remote/commands.js'
import { releasesToRemove } from '../remote/history.js'
import type { ReleaseSource } from '../release/source.js'
import type { DeploySettings } from '../settings.js'

// The release history's rules live with the history (remote/history.ts); these names stay importable from here.
export { historyOf, liveStack, releasesToRemove, rollbackTarget, wentLive } from '../remote/history.js'

export interface Step {
  name: string
  script: string
  /** The step reads the release archive (or the release's file list, the manifest) on stdin. */
  stdin?: 'archive' | 'tree'
  /** Lines of output that start with this are the step's answer (read by the runner, not logged). */
  answer?: string
  /** Run instead of this step when the manifest before it found no file to reuse (the whole release is sent). */
  fallback?: Step
  /** Sent on the step's stdin (a secret: never in its script, never printed). Not with `stdin`. */
  input?: string
  /** A manage.py command of this release: consecutive ones share one Python process when batched. */
  manage?: { release: string; args: string[]; python?: string }
  /** Set on a batch: the steps it runs, each reported by a `<mark> <name> <code>` line as it ends. */
  parts?: string[]
}

/**
 * The settings as they apply to a host with these roles (none given: web). A host without the `web` role serves
 * no HTTP: no Gunicorn probe or reload, no nginx, no health check before or after the switch. Its own roles'
 * `reload-command`s are kept (in the order of its roles); every other role's are dropped.
 */
export function forRoles(d: DeploySettings, roles: readonly string[] = ['web']): DeploySettings {
  const own = Object.fromEntries(
    roles.filter(r => r !== 'web' && d.roleReloadCommands[r]).map(r => [r, d.roleReloadCommands[r]])
  )
  if (roles.includes('web')) return { ...d, roleReloadCommands: own }
  return {
    ...d,
    roleReloadCommands: own,
    gunicornPidfile: undefined,
    gunicornService: undefined,
    reloadCommand: undefined,
    nginx: false,
    healthCheckUrl: undefined
  }
}

/**
 * Where a host builds `release`: in its own directory, or, when a release of that name is on the host already
 * (a re-deploy of an older name, maybe the rollback target), in `cmd.buildName(release)`, put in its place
 * only just before the switch (`place`), so a failure before then leaves the old one whole.
 */
export function buildDir(state: HostState, release: string): string {
  return state.releases.includes(release) ? cmd.buildName(release) : release
}

/**
 * Steps that make the release ready without touching what is live: a failure here changes nothing live.
 * With `reuseFrom` (the host's live release, once the manifest step found files to reuse) the upload takes
 * the unchanged files from it. `build` is the directory under releases/ they work in (see `buildDir`).
 */
export function updateSteps(
  d: DeploySettings,
  l: Layout,
  source: ReleaseSource,
  reuseFrom?: string,
  gated: 'with-gate' | 'without-gate' = 'with-gate',
  build = source.name
): Step[] {
  const r = build
  const reuse = reuseFrom ? { release: reuseFrom, python: d.remotePython } : undefined
  const steps: Step[] = [
    { name: 'prepare', script: cmd.prepare(l, source.name, r) },
    { name: 'upload', script: cmd.unpack(l, source.name, source.revision, reuse, r), stdin: 'archive' },
    { name: 'shared', script: cmd.linkShared(l, r, d.sharedPaths) },
    {
      name: 'virtualenv',

      script: cmd.venv(l, r, {
        key: source.venvKey,
        python: d.remotePython,
        venvOptions: d.venvOptions,
        pipArgs: d.pipArgs,
        hasRequirements: source.hasRequirements,
        deps: source.deps
      })
    }
  ]
  // Before the switch `current` may not exist yet (first deploy): the new release is the working directory.
  if (d.nginx) {
    steps.push({
      name: 'nginx-test',

      script: cmd.userCommand(cmd.releaseDir(l, r), d.nginxTestCommand)
    })
  }
  const manage = (name: string, args: string[]): Step => ({
    name,

    script: cmd.manage(l, r, args),
    manage: { release: r, args }
  })
  // A release whose settings do not import, or whose checks fail on the server, never goes live.
  steps.push(...preflightSteps(l, r, d.deployCheck, d.healthCheckUrl))
  // Migrations before collectstatic, as Django's docs order them; on a fleet the runner runs the gate (migrate
  // on the primary host, the health URL everywhere) once every host is ready.
  const gate = gated === 'with-gate' ? gateSteps(d, l, r, d.migrate) : []
  steps.push(...gate.filter(s => s.name === 'migrate'))
  if (d.collectstatic) {
    steps.push(manage('collectstatic', ['collectstatic', '--noinput']))
    // The release's files join the shared static directory before the switch: its pages find them at once.
    steps.push(python(l, r, 'static', cmd.STATIC_PY, cmd.staticArgs(l.static)))
  }
  steps.push(...gate.filter(s => s.name !== 'migrate'))
  return steps
}

/**
 * The last steps before anything live changes: the migrations (when `migrate`; on a fleet with one database,
 * on the primary host only, once every host is ready) and the health URL through the new release's Django (a
 * release that answers 500 is refused here, so it never serves a request).
 */
export function gateSteps(d: DeploySettings, l: Layout, release: string, migrate: boolean): Step[] {
  const steps: Step[] = []
  if (migrate) steps.push(migrateStep(d, l, release, 'before'))
  if (d.healthCheckUrl) {
    steps.push(
      // Django's test client needs no credentials: the URL goes without them (a command line is public).
      python(l, release, 'health-before-switch', cmd.HEALTH_BEFORE_SWITCH_PY, [
        cmd.healthTarget(d.healthCheckUrl).bare,
        String(d.healthCheckTimeout)
      ])
    )
  }
  return steps
}

/**
 * Django's migrate in the release (migrate.py): it prints its plan first (the summary lists it), holds the
 * database's migration lock on PostgreSQL and bounds lock waits. `before` the switch it holds back the
 * after-deploy migrations; the after-deploy phase runs the rest (`after`).
 */
export function migrateStep(d: DeploySettings, l: Layout, release: string, part: 'before' | 'after'): Step {
  const name = part === 'after' ? 'migrate-after-deploy' : 'migrate'
  return python(l, release, name, cmd.MIGRATE_PY, cmd.migrateArgs(part, d.migrations))
}

/**
 * Before a rollback to `target`, in the live release `live` (it has the files of every migration it applied):
 * the applied migrations `target` lacks, listed; a contract one refuses the rollback unless allowed.
 */
export function rollbackSchemaStep(d: DeploySettings, l: Layout, live: string, target: string): Step {
  return {
    name: 'rollback-schema',
    script: cmd.rollbackSchema(l, live, target, d.migrations.allowContractRollback)
  }
}

/** Hosts per batch of the switch: all at once, or `rolling` (a count, or a percentage rounded up). */
export function rollingBatches<T>(hosts: T[], rolling: DeploySettings['rolling']): T[][] {
  if (!rolling || hosts.length === 0) return [hosts]
  const size =
    'count' in rolling ? rolling.count : Math.max(1, Math.ceil((hosts.length * rolling.percent) / 100))
  const out: T[][] = []
  for (let i = 0; i < hosts.length; i += size) out.push(hosts.slice(i, i + size))
  return out
}

/**
 * `manage.py check` of the release and Django's deployment checks, with the server's settings: a release that
 * fails them never goes live.
 */
export function preflightSteps(
  l: Layout,
  release: string,
  deployCheck: DeploySettings['deployCheck'],
  siteUrl?: string
): Step[] {
  const steps: Step[] = [
    { name: 'preflight', script: cmd.manage(l, release, ['check']), manage: { release, args: ['check'] } }
  ]
  if (deployCheck !== 'off')
    steps.push(python(l, release, 'deploy-check', cmd.DEPLOY_CHECK_PY, cmd.deployCheckArgs(deployCheck)))
  const https = httpsSite(siteUrl)
  if (deployCheck !== 'off' && https)
    steps.push(python(l, release, 'proxy-check', cmd.PROXY_CHECK_PY, cmd.proxyCheckArgs(https, deployCheck)))
  return steps
}

/** The site's URL without credentials, when it is served over https (nginx ending TLS in front of Django). */
function httpsSite(url?: string): string | undefined {
  if (!url) return undefined
  const u = new URL(url)
  return u.protocol === 'https:' ? `${u.origin}${u.pathname}` : undefined
}

/**
 * Python run in the Django the preflight set up (one process with the manage.py steps around it). On its own
 * (the dry run's listing) the step still runs as written: Django is set up by `manage.py check` first.
 */
function python(l: Layout, release: string, name: string, code: string, args: string[]): Step {
  return {
    name,
    script: cmd.manageMany(l, release, 'step-done:', [
      { name: 'setup', args: ['check'] },
      { name, args, python: code }
    ]),
    manage: { release, args, python: code }
  }
}

/**
 * Makes `release` live: switch, reload, nginx, health, and then records it in the history as live (`record`:
 * a deploy's `live`, a rollback's `rollback`; none when putting back what was live). `previous` is what was
 * live (for the reload choice); `link` the exact link text to put back. `build`: where the release was built
 * (`buildDir`); built beside a release of the same name, it takes that one's place first.
 */
export function publishSteps(
  d: DeploySettings,
  l: Layout,
  release: string,
  previous?: string,
  record: HistoryEntry['event'] | null = 'live',
  link?: string,
  build = release
): Step[] {
  const steps: Step[] = []
  if (build !== release) steps.push({ name: 'place', script: cmd.place(l, release) })
  // Which virtualenv the running master runs must be read before `current` moves (see probeGunicorn).
  if (d.gunicornPidfile || d.gunicornService) {
    const master = d.gunicornPidfile ? { pidfile: d.gunicornPidfile } : { service: d.gunicornService! }
    steps.push({ name: 'gunicorn-probe', script: cmd.probeGunicorn(l, master) })
  }
  steps.push({ name: 'switch', script: cmd.switchTo(l, release, link) })
  if (d.collectstatic) steps.push({ name: 'static-live', script: cmd.liveStatic(l, release) })
  const reload = reloadStep(d, l, release, previous)
  if (reload) steps.push(reload)
  // The host's other roles (a worker, a scheduler): their own command, in `current`, after the switch.
  for (const [role, command] of Object.entries(d.roleReloadCommands))
    steps.push({ name: `reload-${role}`, script: cmd.userCommand(l.current, command) })
  if (d.nginx) {
    steps.push({
      name: 'nginx',

      script: cmd.userCommand(l.current, `${d.nginxTestCommand} && ${d.nginxReloadCommand}`)
    })
  }
  if (d.healthCheckUrl) {
    const { authorization } = cmd.healthTarget(d.healthCheckUrl)
    steps.push({
      name: 'health',
      script: cmd.healthCheck(l, release, d.healthCheckUrl, d.healthCheckTimeout),
      input: authorization && `${authorization}\n`
    })
  }
  if (record) steps.push({ name: 'record', script: cmd.recordLive(l, release, record) })
  return steps
}

function reloadStep(d: DeploySettings, l: Layout, release: string, previous?: string): Step | undefined {
  if (d.gunicornPidfile) {
    return {
      name: 'reload',

      script: cmd.reloadGunicorn(l, d.gunicornPidfile, release, previous)
    }
  }
  if (d.gunicornService) return { name: 'reload', script: cmd.reloadService(l, d.gunicornService, release) }
  if (d.reloadCommand) return { name: 'reload', script: cmd.userCommand(l.current, d.reloadCommand) }
  return undefined
}

/**
 * Puts `previous` back after a failed publish, at its exact old link (or takes `current` away when there was
 * none). It was live already: the history does not change. A `failed` release that replaced one of the same
 * name (`build` is not `failed`) gives that one its place back.
 */
export function revertSteps(
  d: DeploySettings,
  l: Layout,
  failed: string,
  previous?: string,
  previousLink?: string,
  build = failed
): Step[] {
  const steps: Step[] = previous
    ? publishSteps(d, l, previous, failed, null, previousLink).map(s => ({ ...s, name: `revert-${s.name}` }))
    : [{ name: 'revert', script: cmd.removeCurrent(l) }]
  if (build !== failed) steps.push({ name: 'revert-restore', script: cmd.restoreReplaced(l, failed) })
  return steps
}

export function cleanupStep(state: HostState, keep: number, live: string, l: Layout): Step {
  const remove = releasesToRemove(state, keep, live)
  const kept = [...state.releases, live].filter(r => !remove.includes(r))
  const script = `${cmd.cleanup(l, [...new Set(kept)], remove)}\n( ${cmd.pruneStatic(l, live, [...new Set(kept)])}\n)`
  return { name: 'cleanup', script }
}

/** A step as the dry run prints it. */
export function renderStep(s: Step): string {
  const stdin =
    s.stdin === 'archive'
      ? ' (release archive on stdin)'
      : s.stdin === 'tree'
        ? " (the release's file list on stdin)"
        : s.input
          ? ' (credentials on stdin, not shown)'
          : ''
  return `# ${s.name}${stdin}\n${s.script}`
}
