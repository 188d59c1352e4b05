/**
 * The dry run shows the flow the real run executes: on a fleet of three hosts (one primary, one database), the
 * same steps on the same hosts in the same order, for a deploy and for a rollback (with its preflight on a host
 * where the target never went live).
 */
import { jest } from '@jest/globals'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdirSync, mkdtempSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deployInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startFleet, type Fleet, type FleetHost } from '../../sandbox/fleet.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'

jest.setTimeout(300_000)

let fleet: Fleet
let repo: Repo
let db: string
let www: string
const servers: ChildProcess[] = []
/** Answered in every host's namespace by a plain HTTP server: the health check after the switch. */
const HEALTH = 'http://127.0.0.1:18471/health/'
const live = (h: FleetHost): string => readlinkSync(join(h.deployPath, 'current'))
const name = (h: FleetHost): string => `${h.host}:${h.sshPort}`

/** deploy.yml listing the hosts given (the second of the fleet is primary). */
function writeConfig(hosts: FleetHost[]): void {
  const entries = hosts.map(
    h =>
      `  - { host: "${name(h)}", user: ${h.user}, deploy-path: "${h.deployPath}"${h === fleet.hosts[1] ? ', primary: true' : ''} }`
  )
  repo.write('deploy.yml', `hosts:\n${entries.join('\n')}\n`)
  repo.commit('fleet config')
}

function run(
  mode: 'deploy' | 'rollback',
  release: string,
  extra: Record<string, string> = {}
): Promise<ActionRun> {
  const h = fleet.hosts[0]
  return runAction(
    {
      ...deployInputs(h, {
        mode,
        checks: 'none',
        'release-name': release,
        'health-check-url': HEALTH,
        ...extra
      }),
      hosts: '',
      user: '',
      'deploy-path': '',
      'known-hosts': fleet.hosts.map(x => x.knownHosts).join('\n')
    },
    { workspace: repo.dir, env: { GITHUB_REF: `refs/tags/${release}` }, timeoutMs: 240_000 }
  )
}

/** Host → the steps the dry run lists for it, in the order of its phases (`plan N/M phase: host` groups). */
function planned(log: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const g of log.matchAll(/^::group::plan \d+\/\d+ [^:]+: (\S+)\n([\s\S]*?)^::endgroup::/gm)) {
    const steps = [...g[2].matchAll(/^# ([a-z][a-z0-9-]*)(?: \(.*\))?$/gm)].map(m => m[1])
    out.set(g[1], [...(out.get(g[1]) ?? []), ...steps])
  }
  return out
}

/** Host → the steps the real run ran there (its `host: step` groups), without connecting, locking, reading. */
function ran(log: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const m of log.matchAll(/^::group::(\S+): (\S+)$/gm)) {
    if (['connect', 'lock', 'inspect'].includes(m[2])) continue
    out.set(m[1], [...(out.get(m[1]) ?? []), m[2]])
  }
  return out
}

/** The order steps ran across hosts: each phase's steps everywhere before the next phase's anywhere. */
const phaseOrder = (log: string): string[] =>
  [...log.matchAll(/^::group::plan \d+\/\d+ ([^,:]+)/gm)].map(m => m[1]).filter((p, i, a) => a[i - 1] !== p)

beforeAll(async () => {
  fleet = await startFleet(3, { name: 'ddflow', net: 241 })
  db = mkdtempSync(join(tmpdir(), 'dd-flow-db-'))
  chmodSync(db, 0o777)
  repo = new Repo()
  for (const h of fleet.hosts) await writeServerEnv(h, { database: `${db}/db.sqlite3`, allowedHosts: '*' })
  www = mkdtempSync(join(tmpdir(), 'dd-flow-www-'))
  mkdirSync(join(www, 'health'))
  for (const x of fleet.hosts) {
    const p = spawn(
      '/usr/bin/ip',
      ['netns', 'exec', x.netns, 'python3', '-u', '-m', 'http.server', '18471', '--bind', '127.0.0.1'],
      { cwd: www, stdio: ['ignore', 'pipe', 'pipe'] }
    )
    servers.push(p)
    await once(p.stdout!, 'data')
  }
}, 180_000)

afterAll(async () => {
  for (const p of servers) p.kill()
  if (www) rmSync(www, { recursive: true, force: true })
  await fleet?.stop()
  repo?.remove()
  if (db) rmSync(db, { recursive: true, force: true })
}, 120_000)

const breakSettings = (h: FleetHost): Promise<void> =>
  writeServerEnv(h, {
    database: `${db}/db.sqlite3`,
    allowedHosts: '*',
    extra: 'DJANGO_SECURE=1\nSECURE_HSTS_SECONDS=soon\n'
  })

test('a fleet deploy: the dry run lists the steps the real run runs, on the same hosts, in the same order', async () => {
  const [a, b, c] = fleet.hosts
  // vA live on the first two hosts only.
  writeConfig([a, b])
  expectOk(await run('deploy', 'vA'))
  writeConfig(fleet.hosts)

  const dry = await run('deploy', 'v2', { 'dry-run': 'true' })
  expectOk(dry)
  const real = await run('deploy', 'v2')
  expectOk(real)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v2')
  const plan = planned(dry.log)
  expect([...plan.keys()].sort()).toEqual(fleet.hosts.map(name).sort())
  // The after-deploy phase runs only when the migrate before the switch held migrations back (none here).
  expect(plan.get(name(b))).toContain('migrate-after-deploy')
  const runs = (h: FleetHost): string[] => plan.get(name(h))!.filter(s => s !== 'migrate-after-deploy')
  for (const h of fleet.hosts) expect(ran(real.log).get(name(h))).toEqual(runs(h))
  // The fleet's gate: migrate on the primary only, in a phase of its own; the health URL through each other host.
  expect(plan.get(name(b))!.filter(s => s === 'migrate')).toHaveLength(1)
  for (const h of [a, c]) {
    expect(plan.get(name(h))).not.toContain('migrate')
    expect(plan.get(name(h))).toContain('health-before-switch')
  }
  expect(phaseOrder(dry.log)).toEqual([
    'update',
    'gate-primary',
    'gate',
    'publish',
    'after-deploy',
    'cleanup'
  ])
})

test('a rollback: the dry run lists the preflight where the target never went live, then the switch everywhere', async () => {
  const [a, b, c] = fleet.hosts
  // vA uploaded to the third host but refused there (its settings fail the preflight): it never went live there.
  await breakSettings(c)
  writeConfig([c])
  expect((await run('deploy', 'vA')).code).not.toBe(0)
  await writeServerEnv(c, { database: `${db}/db.sqlite3`, allowedHosts: '*' })
  writeConfig(fleet.hosts)

  const dry = await run('rollback', 'vA', { 'dry-run': 'true' })
  expectOk(dry)
  const real = await run('rollback', 'vA')
  expectOk(real)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/vA')
  const plan = planned(dry.log)
  for (const h of fleet.hosts) expect(ran(real.log).get(name(h))).toEqual(plan.get(name(h)))
  expect(plan.get(name(c))).toContain('preflight')
  for (const h of [a, b]) expect(plan.get(name(h))).not.toContain('preflight')
  expect(phaseOrder(dry.log)).toEqual(['schema', 'preflight', 'publish'])
})
