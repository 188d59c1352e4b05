/**
 * The plan: named steps per host, pure data built from the settings, the release and what the host holds.
 * The runner executes it; the dry run prints it.
 */
import * as cmd from '../remote/commands.js'
import type { HostState, Layout } from '../remote/commands.js'
import type { ReleaseSource } from '../release/source.js'
import type { DeploySettings } from '../settings.js'

export interface Step {
  name: string
  script: string
  /** The step reads the release archive on stdin. */
  stdin?: 'archive'
  /** A manage.py command of this release: consecutive ones share one Python process when batched. */
  manage?: { release: string; args: string[] }
  /** Set on a batch: the steps it runs, each reported by a `<mark> <name> <code>` line as it ends. */
  parts?: string[]
}

/** Steps that make the release ready without touching what is live: a failure here changes nothing live. */
export function updateSteps(d: DeploySettings, l: Layout, source: ReleaseSource): Step[] {
  const r = source.name
  const steps: Step[] = [
    { name: 'prepare', script: cmd.prepare(l, r) },
    { name: 'upload', script: cmd.unpack(l, r, source.revision), stdin: 'archive' },
    { name: 'shared', script: cmd.linkShared(l, r, d.sharedPaths) },
    {
      name: 'virtualenv',

      script: cmd.venv(l, r, {
        key: source.venvKey,
        python: d.remotePython,
        venvOptions: d.venvOptions,
        pipArgs: d.pipArgs,
        hasRequirements: source.hasRequirements
      })
    }
  ]
  // Before the switch `current` may not exist yet (first deploy): the new release is the working directory.
  if (d.nginx) {
    steps.push({
      name: 'nginx-test',

      script: cmd.userCommand(cmd.releasePath(l, r), d.nginxTestCommand)
    })
  }
  const manage = (name: string, args: string[]): Step => ({
    name,

    script: cmd.manage(l, r, args),
    manage: { release: r, args }
  })
  // A release whose settings do not import, or whose checks fail on the server, never goes live.
  steps.push(manage('preflight', ['check']))
  if (d.migrate) steps.push(manage('migrate', ['migrate', '--noinput']))
  if (d.collectstatic) steps.push(manage('collectstatic', ['collectstatic', '--noinput']))
  return steps
}

/** Makes `release` live: switch, reload, nginx, health. `previous` is what was live (for the reload choice). */
export function publishSteps(d: DeploySettings, l: Layout, release: string, previous?: string): Step[] {
  const steps: Step[] = [{ name: 'switch', script: cmd.switchTo(l, release) }]
  const reload = reloadStep(d, l, release, previous)
  if (reload) steps.push(reload)
  if (d.nginx) {
    steps.push({
      name: 'nginx',

      script: cmd.userCommand(l.current, `${d.nginxTestCommand} && ${d.nginxReloadCommand}`)
    })
  }
  if (d.healthCheckUrl) {
    steps.push({
      name: 'health',

      script: cmd.healthCheck(l, release, d.healthCheckUrl, d.healthCheckTimeout)
    })
  }
  return steps
}

function reloadStep(d: DeploySettings, l: Layout, release: string, previous?: string): Step | undefined {
  if (d.gunicornPidfile) {
    return {
      name: 'reload',

      script: cmd.reloadGunicorn(l, d.gunicornPidfile, release, previous)
    }
  }
  if (d.gunicornService) return { name: 'reload', script: cmd.reloadService(d.gunicornService) }
  if (d.reloadCommand) return { name: 'reload', script: cmd.userCommand(l.current, d.reloadCommand) }
  return undefined
}

/** Puts `previous` back after a failed publish (or takes `current` away when there was none). */
export function revertSteps(d: DeploySettings, l: Layout, failed: string, previous?: string): Step[] {
  if (!previous) return [{ name: 'revert', script: cmd.removeCurrent(l) }]
  return publishSteps(d, l, previous, failed).map(s => ({ ...s, name: `revert-${s.name}` }))
}

/**
 * Releases to delete: all but the newest `keep` uploads, never the live one nor the one live before it.
 */
export function releasesToRemove(state: HostState, keep: number, live: string, previous?: string): string[] {
  const ordered = state.releases.includes(live) ? state.releases : [...state.releases, live]
  const keepSet = new Set([...ordered.slice(-keep), live, previous])
  return ordered.filter(r => !keepSet.has(r))
}

/** The release uploaded before `release` that is still there: what `mode: rollback` goes back to. */
export function releaseBefore(state: HostState, release?: string): string | undefined {
  const i = release ? state.releases.indexOf(release) : -1
  return i > 0 ? state.releases[i - 1] : undefined
}

export function cleanupStep(
  state: HostState,
  keep: number,
  live: string,
  l: Layout,
  previous?: string
): Step {
  const remove = releasesToRemove(state, keep, live, previous)
  const kept = [...state.releases, live].filter(r => !remove.includes(r))
  return { name: 'cleanup', script: cmd.cleanup(l, [...new Set(kept)], remove) }
}

/** A step as the dry run prints it. */
export function renderStep(s: Step): string {
  return `# ${s.name}${s.stdin ? ' (release archive on stdin)' : ''}\n${s.script}`
}

/**
 * Joins steps into one remote command (one round trip instead of one per step; consecutive manage.py commands
 * in one Python process), each step still reported on its own by a `<mark> <name> <code>` line.
 */
export function batch(steps: Step[], l: Layout, mark: string): Step {
  const lines: string[] = []
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]
    if (s.manage) {
      const group = [s]
      while (steps[i + 1]?.manage?.release === s.manage.release) group.push(steps[++i])
      const commands = group.map(g => ({ name: g.name, args: g.manage!.args }))
      lines.push(`( ${cmd.manageMany(l, s.manage.release, mark, commands)}\n) </dev/null || exit $?`)
    } else {
      lines.push(
        `( ${s.script}\n) ${s.stdin ? '' : '</dev/null'}`,
        `rc=$?; echo "${mark} ${s.name} $rc"; [ $rc -eq 0 ] || exit $rc`
      )
    }
  }
  return {
    name: steps.map(s => s.name).join(', '),
    script: lines.join('\n'),
    stdin: steps.some(s => s.stdin) ? 'archive' : undefined,
    parts: steps.map(s => s.name)
  }
}
