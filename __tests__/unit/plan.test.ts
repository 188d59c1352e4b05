import {
  buildDir,
  cleanupStep,
  forRoles,
  historyOf,
  liveStack,
  publishSteps,
  releasesToRemove,
  renderStep,
  revertSteps,
  rollbackTarget,
  updateSteps,
  migrateStep,
  rollingBatches,
  wentLive
} from '../../src/deploy/plan.js'
import {
  MIGRATE_PY,
  MIGRATION,
  WARN,
  layout,
  parseInspect,
  type HistoryEntry
} from '../../src/remote/commands.js'
import { MIGRATIONS_PY } from '../../src/remote/python/programs.js'
import type { DeploySettings } from '../../src/settings.js'

const d: DeploySettings = {
  path: '/srv/app',
  sharedPaths: ['.env'],
  remotePython: 'python3',
  venvOptions: [],
  pipArgs: [],
  migrate: true,
  migrateEveryHost: false,
  migrations: { lockTimeout: 5, afterDeploy: [], safety: 'warn', allowContractRollback: false },
  maxParallel: 10,
  collectstatic: false,
  nginx: true,
  nginxTestCommand: 'sudo -n nginx -t',
  nginxReloadCommand: 'sudo -n nginx -s reload',
  healthCheckUrl: 'http://127.0.0.1/health/',
  healthCheckTimeout: 10,
  deployCheck: 'warn',
  keepReleases: 2,
  lockTimeout: 10,
  dryRun: false,
  gunicornPidfile: '/run/gunicorn.pid',
  roleReloadCommands: {}
}
const source = {
  name: 'v2',
  revision: 'abc',
  treeish: 'HEAD',
  repoRoot: '/r',
  venvKey: 'k',
  hasRequirements: false,
  tree: ''
}
const live = (...names: string[]): HistoryEntry[] => names.map(release => ({ event: 'live', release }))

describe('steps', () => {
  it('prepares everything, checks the deploy settings and asks the health URL before anything goes live', () => {
    expect(updateSteps(d, layout(d.path), source).map(s => s.name)).toEqual([
      'prepare',
      'upload',
      'shared',
      'virtualenv',
      'nginx-test',
      'preflight',
      'deploy-check',
      'migrate',
      'health-before-switch'
    ])
    expect(publishSteps(d, layout(d.path), 'v2', 'v1').map(s => s.name)).toEqual([
      'gunicorn-probe',
      'switch',
      'reload',
      'nginx',
      'health',
      'record'
    ])
  })
  it('with collectstatic, the static files join <deploy-path>/static before the switch and take over after it', () => {
    const c = { ...d, collectstatic: true }
    const steps = updateSteps(c, layout(d.path), source)
    expect(steps.map(s => s.name).slice(-3)).toEqual(['collectstatic', 'static', 'health-before-switch'])
    expect(steps.find(s => s.name === 'static')?.manage).toMatchObject({
      release: 'v2',
      // The program's constants come first (static_files.py: warning marker, the release's static record).
      args: [WARN, '.django-deploy-static', '/srv/app/static']
    })
    const publish = publishSteps(c, layout(d.path), 'v2', 'v1').map(s => s.name)
    expect(publish.slice(0, 3)).toEqual(['gunicorn-probe', 'switch', 'static-live'])
    expect(revertSteps(c, layout(d.path), 'v2', 'v1').map(s => s.name)).toContain('revert-static-live')
  })
  it('an https site gets the TLS proxy check after the deploy check, with its URL but never its credentials', () => {
    const https = { ...d, healthCheckUrl: 'https://ops:s3cret@shop.example.com:8443/health/?x=1' }
    const steps = updateSteps(https, layout(d.path), source)
    expect(steps.map(s => s.name).slice(5, 8)).toEqual(['preflight', 'deploy-check', 'proxy-check'])
    const proxy = steps.find(s => s.name === 'proxy-check')!
    expect(proxy.manage?.args).toEqual([WARN, 'https://shop.example.com:8443/health/', 'warn'])
    expect(proxy.script).not.toContain('s3cret')
    expect(updateSteps(d, layout(d.path), source).map(s => s.name)).not.toContain('proxy-check')
    const off = updateSteps({ ...https, deployCheck: 'off' }, layout(d.path), source)
    expect(off.map(s => s.name)).not.toContain('proxy-check')
  })
  it('deploy-check: off leaves only manage.py check; fail passes its mode to the check', () => {
    const off = updateSteps({ ...d, deployCheck: 'off', healthCheckUrl: undefined }, layout(d.path), source)
    expect(off.map(s => s.name)).not.toContain('deploy-check')
    const fail = updateSteps({ ...d, deployCheck: 'fail' }, layout(d.path), source)
    expect(fail.find(s => s.name === 'deploy-check')?.manage?.args).toEqual([WARN, 'security.W018', 'fail'])
  })
  it('the pre-switch health step asks the URL with the health timeout, in the preflight Python process', () => {
    const steps = updateSteps(d, layout(d.path), source)
    const h = steps.find(s => s.name === 'health-before-switch')
    expect(h?.manage).toMatchObject({ release: 'v2', args: ['http://127.0.0.1/health/', '10'] })
    expect(h?.manage?.python).toContain('django.test import Client')
  })
  it('a first deploy with no reload or health input only switches (and records)', () => {
    const bare = { ...d, nginx: false, healthCheckUrl: undefined, gunicornPidfile: undefined }
    expect(publishSteps(bare, layout(d.path), 'v1').map(s => s.name)).toEqual(['switch', 'record'])
  })
  it('a revert puts back the exact old link and records nothing (the old release was live already)', () => {
    const steps = revertSteps(d, layout(d.path), 'v2', 'v1', '/srv/app/releases/v1')
    expect(steps.map(s => s.name)).toEqual([
      'revert-gunicorn-probe',
      'revert-switch',
      'revert-reload',
      'revert-nginx',
      'revert-health'
    ])
    expect(steps[1].script).toContain('ln -s /srv/app/releases/v1 /srv/app/current.tmp-v1')
  })
})

describe('migrate (issue 19)', () => {
  const m = {
    ...d.migrations,
    statementTimeout: 600,
    afterDeploy: ['shop.0004_drop', 'blog.0002_x'],
    safety: 'refuse' as const
  }
  it('before the switch: the plan marker, the timeouts, the names held back, the safety and the classifier, as argv', () => {
    const s = migrateStep({ ...d, migrations: m }, layout(d.path), 'v2', 'before')
    expect([s.name, s.manage?.python]).toEqual(['migrate', MIGRATE_PY])
    expect(s.manage?.args).toEqual([
      WARN,
      MIGRATION,
      'before',
      '5',
      '600',
      'shop.0004_drop,blog.0002_x',
      'refuse',
      MIGRATIONS_PY
    ])
  })
  it('after it: the rest, without judging (the classifier is not sent); with migration-safety off, never', () => {
    const after = migrateStep({ ...d, migrations: m }, layout(d.path), 'v2', 'after')
    expect([after.name, after.manage?.args.slice(2, 3), after.manage?.args.at(-1)]).toEqual([
      'migrate-after-deploy',
      ['after'],
      ''
    ])
    const off = migrateStep({ ...d, migrations: { ...m, safety: 'off' } }, layout(d.path), 'v2', 'before')
    expect(off.manage?.args.slice(-2)).toEqual(['off', ''])
  })
})

describe('a release name deployed again (issue 15)', () => {
  const l = layout(d.path)
  const state = parseInspect('current=v3\ncurrent-link=releases/v3\nrelease=v2\nrelease=v3\n')
  it('a new name is built in its own directory, with no extra step', () => {
    expect(buildDir(state, 'v4')).toBe('v4')
    expect(publishSteps(d, l, 'v4', 'v3', 'live', undefined, 'v4').map(s => s.name)[0]).toBe('gunicorn-probe')
  })
  it('a name on the server is built beside it, and takes its place only at publish, before the switch', () => {
    const build = buildDir(state, 'v2')
    expect(build).toBe('.build-v2')
    const update = updateSteps(d, l, source, 'v3', 'with-gate', build)
    // every step before the switch works in the build directory, never in releases/v2
    for (const s of update) {
      expect(s.script).not.toMatch(/releases\/v2(\/|\s|'|$)/m)
      if (s.manage) expect(s.manage.release).toBe('.build-v2')
    }
    expect(update[0].script).toContain('rm -rf /srv/app/releases/.build-v2\n')
    expect(update[0].script).toContain('= v2 ]')
    const publish = publishSteps(d, l, 'v2', 'v3', 'live', undefined, build)
    expect(publish.map(s => s.name).slice(0, 3)).toEqual(['place', 'gunicorn-probe', 'switch'])
    expect(publish[0].script).toContain('mv -T .build-v2 v2')
    const revert = revertSteps(d, l, 'v2', 'v3', 'releases/v3', build)
    expect(revert.map(s => s.name).slice(-2)).toEqual(['revert-health', 'revert-restore'])
    expect(revertSteps(d, l, 'v2', 'v3', 'releases/v3').map(s => s.name)).not.toContain('revert-restore')
  })
})

describe('health-check credentials (issue 15)', () => {
  const secret = "p@ss w'rd%"
  const url = `https://watch:${encodeURIComponent(secret)}@example.com/health/`
  const withCreds = { ...d, healthCheckUrl: url }
  it('reach no script, in no escaping: the health step gets them on stdin, the step before the switch not at all', () => {
    const l = layout(d.path)
    const steps = [...updateSteps(withCreds, l, source), ...publishSteps(withCreds, l, 'v2', 'v1')]
    const text = steps.map(renderStep).join('\n')
    for (const form of [
      secret,
      encodeURIComponent(secret),
      'p%40ss',
      "w'\\''rd",
      'watch:',
      Buffer.from(`watch:${secret}`).toString('base64')
    ])
      expect(text).not.toContain(form)
    expect(text).toContain('# health (credentials on stdin, not shown)')
    const health = steps.find(s => s.name === 'health')!
    expect(health.input).toBe(`Basic ${Buffer.from(`watch:${secret}`).toString('base64')}\n`)
    expect(steps.find(s => s.name === 'health-before-switch')?.manage?.args[0]).toBe(
      'https://example.com/health/'
    )
    expect(publishSteps(d, l, 'v2', 'v1').find(s => s.name === 'health')?.input).toBeUndefined()
  })
})

describe('roles', () => {
  const roles = {
    ...d,
    roleReloadCommands: { worker: 'sudo -n systemctl restart celery', beat: 'echo beat' }
  }
  it('a host with no roles is a web host: every web step, and no other role reload', () => {
    const web = forRoles(roles)
    expect(publishSteps(web, layout(d.path), 'v2', 'v1').map(s => s.name)).toEqual([
      'gunicorn-probe',
      'switch',
      'reload',
      'nginx',
      'health',
      'record'
    ])
  })
  it('a worker host runs no Gunicorn, nginx or health check, and its own reload-command after the switch', () => {
    const worker = forRoles(roles, ['worker'])
    expect(updateSteps(worker, layout(d.path), source).map(s => s.name)).toEqual([
      'prepare',
      'upload',
      'shared',
      'virtualenv',
      'preflight',
      'deploy-check',
      'migrate'
    ])
    const steps = publishSteps(worker, layout(d.path), 'v2', 'v1')
    expect(steps.map(s => s.name)).toEqual(['switch', 'reload-worker', 'record'])
    expect(steps[1].script).toContain('sudo -n systemctl restart celery')
    expect(steps[1].script).toContain('cd /srv/app/current\n')
    // Put back after a failure: the worker restarts on the old code too.
    expect(revertSteps(worker, layout(d.path), 'v2', 'v1').map(s => s.name)).toEqual([
      'revert-switch',
      'revert-reload-worker'
    ])
  })
  it('a host with web and worker roles does both, the web reload first', () => {
    const both = forRoles(roles, ['web', 'worker'])
    expect(publishSteps(both, layout(d.path), 'v2', 'v1').map(s => s.name)).toEqual([
      'gunicorn-probe',
      'switch',
      'reload',
      'reload-worker',
      'nginx',
      'health',
      'record'
    ])
  })
})

describe('history', () => {
  it('reads the history lines inspect prints, and knows a server that has none', () => {
    const s = parseInspect(
      [
        'current=v3',
        'current-link=releases/v3',
        'release=v1',
        'release=v2',
        'history-file=yes',
        'history=2026-12-01T10:00:00Z live v1',
        'history=2026-12-01T11:00:00Z live v3',
        'history=2026-12-01T12:00:00Z rollback v1',
        'history=garbage'
      ].join('\n')
    )
    expect(s).toMatchObject({ current: 'v3', currentLink: 'releases/v3', releases: ['v1', 'v2'] })
    expect(s.history).toEqual([...live('v1', 'v3'), { event: 'rollback', release: 'v1' }])
    expect(parseInspect('history-file=yes\n').history).toEqual([])
    expect(parseInspect('current=v1\n').history).toBeUndefined()
  })
  it('a server deployed before the history: the releases uploaded up to the live one went live', () => {
    expect(historyOf({ current: 'b', releases: ['a', 'b', 'c'] })).toEqual(live('a', 'b'))
    expect(historyOf({ releases: ['a'] })).toEqual([])
  })
  it('rolls back past a refused release to the one that was live before', () => {
    const state = { current: 'v3', releases: ['v2', 'v3-refused', 'v3'], history: live('v1', 'v2', 'v3') }
    expect(rollbackTarget(state)).toBe('v2')
    expect(wentLive(state, 'v3-refused')).toBe(false)
    expect(wentLive(state, 'v2')).toBe(true)
  })
  it('rolling back twice goes two releases back, not forward to the one just rolled away from', () => {
    const history: HistoryEntry[] = [...live('v1', 'v2', 'v3'), { event: 'rollback', release: 'v2' }]
    expect(liveStack(history, 'v2')).toEqual(['v1', 'v2'])
    expect(rollbackTarget({ current: 'v2', releases: ['v1', 'v2', 'v3'], history })).toBe('v1')
  })
  it('a release moved live by hand is the top; a target no longer on the server is skipped', () => {
    expect(liveStack(live('v1', 'v2'), 'v1')).toEqual(['v2', 'v1'])
    expect(rollbackTarget({ current: 'v3', releases: ['v1', 'v3'], history: live('v1', 'v2', 'v3') })).toBe(
      'v1'
    )
    expect(rollbackTarget({ current: 'v1', releases: ['v1'], history: live('v1') })).toBeUndefined()
  })
})

describe('cleanup', () => {
  it('keeps the releases that went live most recently; a refused one counts for nothing and goes', () => {
    const state = {
      current: 'v2',
      releases: ['v0', 'v1', 'v2', 'v3-refused'],
      history: live('v0', 'v1', 'v2')
    }
    expect(releasesToRemove(state, 3, 'v4')).toEqual(['v0', 'v3-refused'])
    expect(releasesToRemove(state, 1, 'v4')).toEqual(['v0', 'v1', 'v3-refused'])
  })
  it("prunes the shared static files by the kept releases, with the live release's Python", () => {
    const state = { current: 'v2', releases: ['v1', 'v2'], history: live('v1', 'v2') }
    const script = cleanupStep(state, 2, 'v3', layout('/srv/app')).script
    expect(script).toContain('rm -rf /srv/app/releases/v1\n')
    expect(script).toMatch(
      /\/srv\/app\/releases\/v3\/\.venv\/bin\/python -c '[^']*' django-deploy-warning: \.django-deploy-static prune \/srv\/app\/static \/srv\/app\/releases\/v2 \/srv\/app\/releases\/v3\n/
    )
  })
  it('never removes the live one nor the one to roll back to, even with keep 1', () => {
    const state = { current: 'v3', releases: ['v1', 'v2', 'v3', 'v4'] }
    expect(releasesToRemove(state, 1, 'v5')).toEqual(['v1', 'v2', 'v4'])
    expect(releasesToRemove({ releases: ['a', 'b'] }, 5, 'c')).toEqual(['a', 'b'])
  })
  it('counts a release once, at the last time it went live (a rollback makes it recent)', () => {
    const state = {
      current: 'v1',
      releases: ['v1', 'v2', 'v3'],
      history: [...live('v1', 'v2', 'v3'), { event: 'rollback' as const, release: 'v1' }]
    }
    // went live, most recent last: v2, v3, v1, v4 → keep 2: v1, v4 (v1 is also the one to roll back to)
    expect(releasesToRemove(state, 2, 'v4')).toEqual(['v2', 'v3'])
  })
})

describe('rollingBatches', () => {
  test('all at once, a count, or a percentage rounded up (at least one host per batch)', () => {
    const hosts = ['a', 'b', 'c', 'd', 'e']
    expect(rollingBatches(hosts, undefined)).toEqual([hosts])
    expect(rollingBatches(hosts, { count: 2 })).toEqual([['a', 'b'], ['c', 'd'], ['e']])
    expect(rollingBatches(hosts, { percent: 25 })).toEqual([['a', 'b'], ['c', 'd'], ['e']])
    expect(rollingBatches(hosts, { percent: 1 })).toEqual(hosts.map(h => [h]))
    expect(rollingBatches(hosts, { count: 9 })).toEqual([hosts])
  })
})
