/**
 * The runner driven through a scripted fake transport (helpers/fake-remote.ts): the fleet and revert rules in
 * milliseconds, without root. The e2e tests run the same rules against real servers.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deployFlow, planOf } from '../../src/deploy/flow.js'
import { forRoles } from '../../src/deploy/plan.js'
import { Runner, type Log } from '../../src/deploy/run.js'
import { MIGRATION, layout } from '../../src/remote/commands.js'
import type { ReleaseSource } from '../../src/release/source.js'
import { previousReleases } from '../../src/report.js'
import { loadSettings, type DeploySettings, type Settings } from '../../src/settings.js'
import { FakeFleet, type FakeHostState, type FakeScript } from '../helpers/fake-remote.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-runner-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const git = (...args: string[]): string =>
  execFileSync('git', ['-C', dir, ...args], { encoding: 'utf8' }).trim()
git('init', '-q')
writeFileSync(join(dir, 'manage.py'), 'print("hi")\n')
git('add', '.')
git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
const source: ReleaseSource = {
  name: 'v2',
  revision: git('rev-parse', 'HEAD'),
  treeish: 'HEAD',
  repoRoot: dir,
  venvKey: 'k',
  hasRequirements: false,
  tree: ''
}

execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key'), '-C', 't'])
const base = loadSettings({
  input: n =>
    ({
      mode: 'deploy',
      hosts: 'web1',
      user: 'deploy',
      'ssh-key': readFileSync(join(dir, 'key'), 'utf8'),
      'host-fingerprint': `SHA256:${'A'.repeat(43)}`,
      'deploy-path': '/srv/app',
      'health-check-url': 'http://127.0.0.1/health/'
    })[n as string] ?? '',
  env: { GITHUB_WORKSPACE: dir, GITHUB_EVENT_NAME: 'push', GITHUB_REF: 'refs/tags/v2', GITHUB_SHA: 'abcdef1' }
})

const NAMES = ['web1', 'web2', 'web3']

function settings(deploy: Partial<DeploySettings> = {}, hosts = NAMES): Settings {
  return {
    ...base,
    ssh: {
      ...base.ssh,
      hosts: hosts.map(host => ({ host, port: 22, primary: host === 'web2' || undefined }))
    },
    deploy: { ...base.deploy, gunicornPidfile: undefined, reloadCommand: 'true', nginx: false, ...deploy }
  }
}

const quiet: Log = { startGroup() {}, endGroup() {}, info() {}, warning() {} }

/** Hosts that all serve v1 (deployed before, once). */
function servingV1(hosts = NAMES): Record<string, FakeHostState> {
  return Object.fromEntries(
    hosts.map(h => [
      h,
      { releases: ['v1'], current: 'v1', history: [{ event: 'live' as const, release: 'v1' }] }
    ])
  )
}

async function deploy(
  script: FakeScript,
  deploy: Partial<DeploySettings> = {},
  states = servingV1()
): Promise<{ fleet: FakeFleet; r: Awaited<ReturnType<Runner['deploy']>> }> {
  const fleet = new FakeFleet(states, script)
  const r = await new Runner(settings(deploy), quiet, {}, fleet.connect).deploy(source)
  return { fleet, r }
}

/** What migrate.py prints for a migration it applies now (`before-switch`) or holds back (`after-deploy`). */
const announce = (when: 'before-switch' | 'after-deploy', name = '0004_drop_note'): string =>
  `${MIGRATION}${JSON.stringify({ app: 'shop', name, when, class: 'contract', operations: ['Remove field note from order (contract)'] })}`

const live = (fleet: FakeFleet): (string | undefined)[] => NAMES.map(h => fleet.hosts.get(h)!.current)

test('a fleet: every host updated, migrations once on the primary, the health URL on the others, then the switch', async () => {
  const { fleet, r } = await deploy({})
  expect(r.error).toBeUndefined()
  expect(r.deployed).toBe(true)
  expect(live(fleet)).toEqual(['v2', 'v2', 'v2'])
  expect(fleet.stepsOn('web2').filter(s => s === 'migrate')).toHaveLength(1)
  for (const h of ['web1', 'web3']) {
    const steps = fleet.stepsOn(h)
    expect(steps).not.toContain('migrate')
    expect(steps.indexOf('health-before-switch')).toBeLessThan(steps.indexOf('switch'))
  }
  // Phases across all hosts: no gate before every host is updated, no switch before every gate passed.
  const order = fleet.calls.map(c => c.steps[0])
  const lastUpdate = Math.max(...fleet.calls.map((c, i) => (c.steps.includes('virtualenv') ? i : -1)))
  const migrate = fleet.calls.findIndex(c => c.steps.includes('migrate'))
  const gates = fleet.calls
    .map((c, i) => (c.steps[0] === 'health-before-switch' ? i : -1))
    .filter(i => i >= 0)
  expect(gates).toHaveLength(2)
  expect(lastUpdate).toBeLessThan(migrate)
  expect(migrate).toBeLessThan(Math.min(...gates))
  expect(Math.max(...gates)).toBeLessThan(order.indexOf('switch'))
})

test('one host fails in phase 1: nobody switches', async () => {
  const { fleet, r } = await deploy({
    fail: [{ host: 'web3', step: 'virtualenv', output: 'pip: no such package' }]
  })
  expect(r.deployed).toBe(false)
  expect(r.error).toMatch(/host web3: step virtualenv failed \(exit 1\):\npip: no such package/)
  for (const h of NAMES) expect(fleet.stepsOn(h)).not.toContain('switch')
  expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
  expect(r.steps).toContainEqual(
    expect.objectContaining({ host: 'web3', step: 'virtualenv', outcome: 'failed' })
  )
})

test('a rolling batch fails: every host switched, earlier batches included, is back', async () => {
  const { fleet, r } = await deploy({ fail: [{ host: 'web3', step: 'health' }] }, { rolling: { count: 1 } })
  expect(r.deployed).toBe(false)
  expect(r.rolledBack).toBe(true)
  expect(r.error).toMatch(/host web3: step health failed/)
  for (const h of NAMES) expect(fleet.stepsOn(h)).toContain('revert-switch')
  expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
  // Batch after batch: web1 switched before web2, web2 before web3.
  const switched = fleet.calls.filter(c => c.steps.includes('switch')).map(c => c.host)
  expect(switched).toEqual(NAMES)
})

test('a lost lease on one host: that host is left alone, the others are still put back', async () => {
  const { fleet, r } = await deploy({ leaseLost: [{ host: 'web2', step: 'switch' }] })
  expect(r.deployed).toBe(false)
  expect(r.error).toMatch(/host web2: step switch failed \(exit 76\)/)
  expect(fleet.stepsOn('web2')).not.toContain('revert-switch')
  for (const h of ['web1', 'web3']) expect(fleet.stepsOn(h)).toContain('revert-switch')
  expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
  // What web2 serves was read again (another deploy may hold it now), not assumed.
  expect(r.hosts?.map(h => h.live)).toEqual(['v1', 'v1', 'v1'])
})

test('the connection goes after the switch: the host is reached again and put back', async () => {
  const { fleet, r } = await deploy({ drop: [{ host: 'web1', step: 'health', after: true }] })
  expect(r.deployed).toBe(false)
  expect(r.error).toMatch(/host web1: step health failed \(exit 255\)[\s\S]*connection lost/)
  expect(fleet.connects.filter(h => h === 'web1')).toHaveLength(2)
  const after = fleet.calls.slice(
    fleet.calls.findIndex(c => c.host === 'web1' && c.steps.includes('health')) + 1
  )
  expect(after.filter(c => c.host === 'web1').map(c => c.steps[0])).toEqual([
    'lock',
    'inspect',
    'revert-switch',
    // After a lost connection, what each host serves is read, not assumed.
    'inspect'
  ])
  expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
  expect(r.rolledBack).toBe(true)
})

test('the connection goes before the switch happened there: reached again, nothing to put back on that host', async () => {
  const { fleet, r } = await deploy({ drop: [{ host: 'web1', step: 'switch' }] })
  expect(r.deployed).toBe(false)
  expect(fleet.connects.filter(h => h === 'web1')).toHaveLength(2)
  expect(fleet.stepsOn('web1')).not.toContain('revert-switch')
  expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
})

test('the dry run lists exactly the steps the real run runs, on the same hosts, phase by phase', async () => {
  const dry = await deploy({}, { dryRun: true })
  expect(dry.fleet.calls.flatMap(c => c.steps)).not.toContain('switch')
  const planned = planOf(
    deployFlow(
      settings().deploy,
      source,
      NAMES.map(name => ({
        name,
        primary: name === 'web2',
        d: forRoles(settings().deploy),
        layout: layout('/srv/app'),
        state: { releases: ['v1'], current: 'v1', history: [{ event: 'live', release: 'v1' }] }
      }))
    )
  )
  expect(dry.r.plan).toEqual(planned)
  const stepNames = (lines: string[]): string[] => lines.map(l => /^# (\S+)/.exec(l)![1])
  // The primary's migrate holds a migration back: the after-deploy phase the dry run lists runs.
  const real = await deploy({
    answers: [{ host: 'web2', step: 'migrate', output: announce('after-deploy') }]
  })
  const ran = real.fleet.calls.filter(c => c.steps[0] !== 'lock' && c.steps[0] !== 'inspect')
  const listed = dry.r.plan!.flatMap(p =>
    p.batches.flat().map(h => ({ host: h.host, steps: stepNames(h.steps) }))
  )
  for (const h of NAMES)
    expect(ran.filter(c => c.host === h).flatMap(c => c.steps)).toEqual(
      listed.filter(l => l.host === h).flatMap(l => l.steps)
    )
  expect(dry.r.plan!.map(p => [p.phase, p.onFailure])).toEqual([
    ['update', 'stop'],
    ['gate-primary', 'stop'],
    ['gate', 'stop'],
    ['publish', 'revert'],
    ['after-deploy', 'warn'],
    ['cleanup', 'warn']
  ])
})

test('a rollback runs the preflight only where its release never went live, and the dry run says so', async () => {
  const states = (): Record<string, FakeHostState> => ({
    web1: {
      releases: ['v1', 'v2'],
      current: 'v2',
      history: [
        { event: 'live', release: 'v1' },
        { event: 'live', release: 'v2' }
      ]
    },
    web2: {
      releases: ['v1', 'v2'],
      current: 'v2',
      history: [
        { event: 'live', release: 'v1' },
        { event: 'live', release: 'v2' }
      ]
    },
    // v1 was uploaded here but never went live (a host added later).
    web3: { releases: ['v1', 'v2'], current: 'v2', history: [{ event: 'live', release: 'v2' }] }
  })
  const run = async (
    dryRun: boolean
  ): Promise<{ fleet: FakeFleet; r: Awaited<ReturnType<Runner['rollback']>> }> => {
    const fleet = new FakeFleet(states())
    const heard: string[] = []
    const runner = new Runner(settings({ releaseName: 'v1', dryRun }), quiet, {}, fleet.connect)
    const r = await runner.rollback(async release => void heard.push(release))
    expect(heard).toEqual(dryRun ? [] : ['v1'])
    return { fleet, r }
  }
  const real = await run(false)
  expect(real.r.error).toBeUndefined()
  expect(real.r.rolledBack).toBe(true)
  expect(live(real.fleet)).toEqual(['v1', 'v1', 'v1'])
  expect(real.fleet.stepsOn('web1')).not.toContain('preflight')
  const web3 = real.fleet.stepsOn('web3')
  expect(web3.indexOf('preflight')).toBeGreaterThan(-1)
  expect(web3.indexOf('preflight')).toBeLessThan(web3.indexOf('switch'))
  const dry = await run(true)
  expect(dry.r.plan!.map(p => [p.phase, p.batches.flat().map(h => h.host)])).toEqual([
    // The database the hosts share, checked once (on the primary) in the live release.
    ['schema', ['web2']],
    ['preflight', ['web3']],
    ['publish', NAMES]
  ])
  for (const h of NAMES)
    expect(
      dry.r
        .plan!.flatMap(p => p.batches.flat())
        .filter(x => x.host === h)
        .flatMap(x => x.steps.map(s => /^# (\S+)/.exec(s)![1]))
    ).toEqual(real.fleet.stepsOn(h).filter(s => !['lock', 'inspect', 'read-revision'].includes(s)))
})

test('a gate failing on missing tables after only the primary migrated says each host may have its own database', async () => {
  const { r } = await deploy({
    fail: [
      {
        host: 'web3',
        step: 'health-before-switch',
        output: 'django.db.utils.OperationalError: no such table: app_item'
      }
    ]
  })
  expect(r.error).toMatch(/only the primary host ran the migrations[\s\S]*migrate: every-host/)
  expect(r.deployed).toBe(false)
})

test('previous-release: the one release every host served, or a host=release line each when they differed', async () => {
  const same = await deploy({})
  expect(previousReleases(same.r)).toBe('v1')
  const states = servingV1()
  states.web3 = { releases: ['v0'], current: 'v0', history: [{ event: 'live', release: 'v0' }] }
  const mixed = await deploy({}, {}, states)
  expect(mixed.r.deployed).toBe(true)
  expect(previousReleases(mixed.r)).toBe('web1=v1\nweb2=v1\nweb3=v0')
})

describe('the after-deploy phase', () => {
  const heldBack = { answers: [{ host: 'web2', step: 'migrate', output: announce('after-deploy') }] }

  test('runs the held-back migrations once, on the primary, after every host switched', async () => {
    const { fleet, r } = await deploy(heldBack)
    expect(r.deployed).toBe(true)
    const order = fleet.calls.flatMap(c => c.steps.map(s => `${c.host} ${s}`))
    const after = order.indexOf('web2 migrate-after-deploy')
    expect(order.filter(s => s.endsWith(' migrate-after-deploy'))).toEqual(['web2 migrate-after-deploy'])
    for (const h of NAMES) expect(order.indexOf(`${h} record`)).toBeLessThan(after)
    expect(r.migrations).toEqual([
      expect.objectContaining({ host: 'web2', app: 'shop', name: '0004_drop_note', when: 'after-deploy' })
    ])
  })

  test('is left out when the migrate before the switch held nothing back', async () => {
    const { fleet, r } = await deploy({
      answers: [{ host: 'web2', step: 'migrate', output: announce('before-switch', '0003_add_note') }]
    })
    expect(r.deployed).toBe(true)
    expect(fleet.calls.flatMap(c => c.steps)).not.toContain('migrate-after-deploy')
    expect(r.migrations?.map(m => m.when)).toEqual(['before-switch'])
  })

  test('a failure there is a warning: the release stands on every host, nothing is rolled back', async () => {
    const { fleet, r } = await deploy({
      ...heldBack,
      fail: [
        { host: 'web2', step: 'migrate-after-deploy', output: 'canceling statement due to lock timeout' }
      ]
    })
    expect(r.error).toBeUndefined()
    expect([r.deployed, r.rolledBack]).toEqual([true, false])
    expect(live(fleet)).toEqual(['v2', 'v2', 'v2'])
    for (const h of NAMES) expect(fleet.stepsOn(h).filter(s => s.startsWith('revert'))).toEqual([])
    expect(r.warnings).toEqual([
      expect.stringMatching(
        /^web2: the after-deploy migrations failed; every host serves v2 and nothing was rolled back[\s\S]*migrate-after-deploy failed[\s\S]*lock timeout/
      )
    ])
    // Cleanup still runs after it.
    expect(fleet.stepsOn('web1')).toContain('cleanup')
  })

  test('with migrate: every-host, each host runs its own', async () => {
    const answers = NAMES.map(host => ({ host, step: 'migrate', output: announce('after-deploy') }))
    const { fleet } = await deploy({ answers }, { migrateEveryHost: true })
    for (const h of NAMES) expect(fleet.stepsOn(h)).toContain('migrate-after-deploy')
  })
})

describe('a rollback and the schema', () => {
  const servingV2 = (): Record<string, FakeHostState> =>
    Object.fromEntries(
      NAMES.map(h => [
        h,
        {
          releases: ['v1', 'v2'],
          current: 'v2',
          history: [
            { event: 'live' as const, release: 'v1' },
            { event: 'live' as const, release: 'v2' }
          ]
        }
      ])
    )
  const rollback = async (script: FakeScript, deploy: Partial<DeploySettings> = {}) => {
    const fleet = new FakeFleet(servingV2(), script)
    const r = await new Runner(
      settings({ releaseName: 'v1', ...deploy }),
      quiet,
      {},
      fleet.connect
    ).rollback()
    return { fleet, r }
  }

  test('the live release lists the applied migrations the target lacks, once, before anything changes', async () => {
    const plan = (await rollback({}, { dryRun: true })).r.plan!
    const schema = plan[0].batches.flat()
    expect([plan[0].phase, plan[0].onFailure, schema.map(h => h.host)]).toEqual(['schema', 'stop', ['web2']])
    // Run in v2 (it has the migrations' files), about v1's directory, the rollback not forced.
    expect(schema[0].steps[0]).toMatch(
      /^# rollback-schema\n[\s\S]*\ncd \/srv\/app\/releases\/v2\n[\s\S]*"\/srv\/app\/releases\/v1","v1","false",/
    )
    const forced = (
      await rollback(
        {},
        { dryRun: true, migrations: { ...base.deploy.migrations, allowContractRollback: true } }
      )
    ).r.plan!
    expect(forced[0].batches[0][0].steps[0]).toMatch(/"\/srv\/app\/releases\/v1","v1","true",/)
  })

  test('refused there (a contract migration v1 does not have): no host changes', async () => {
    const why = 'rollback to v1 refused: the database has migrations applied that v1 does not have'
    const { fleet, r } = await rollback({ fail: [{ host: 'web2', step: 'rollback-schema', output: why }] })
    expect([r.deployed, r.rolledBack]).toEqual([false, false])
    expect(r.error).toMatch(/host web2: step rollback-schema failed \(exit 1\):\nrollback to v1 refused/)
    expect(live(fleet)).toEqual(['v2', 'v2', 'v2'])
    for (const h of NAMES) expect(fleet.stepsOn(h)).not.toContain('switch')
  })

  test('expand-only migrations it lacks are listed in the result, and the rollback goes on', async () => {
    const line = `${MIGRATION}${JSON.stringify({ app: 'shop', name: '0003_add_note', when: 'not-in-target', class: 'expand', operations: ['Add field note to order'] })}`
    const { fleet, r } = await rollback({
      answers: [{ host: 'web2', step: 'rollback-schema', output: line }]
    })
    expect(r.deployed).toBe(true)
    expect(live(fleet)).toEqual(['v1', 'v1', 'v1'])
    expect(r.migrations).toEqual([expect.objectContaining({ name: '0003_add_note', when: 'not-in-target' })])
  })

  test('with migrate: false (the schema is not ours to judge) there is no schema phase', async () => {
    const plan = (await rollback({}, { dryRun: true, migrate: false })).r.plan!
    expect(plan.map(p => p.phase)).toEqual(['publish'])
  })
})
