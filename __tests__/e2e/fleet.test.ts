/**
 * A fleet of three hosts, each in its own network namespace with its own sshd, deploy root, Gunicorn and nginx,
 * sharing one database: two phases across the hosts at once, migrations once on the primary host, a failure in
 * phase 1 switches nobody, a rolling batch whose health fails puts the switched hosts back.
 */
import { jest } from '@jest/globals'
import { chmodSync, mkdtempSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deployInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startFleet, type Fleet, type FleetHost } from '../../sandbox/fleet.js'
import { shq } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'

jest.setTimeout(300_000)

let fleet: Fleet
let repo: Repo
let db: string
const live = (h: FleetHost): string => readlinkSync(join(h.deployPath, 'current'))

const writeEnv = (h: FleetHost, extra = ''): Promise<void> =>
  writeServerEnv(h, { database: `${db}/db.sqlite3`, allowedHosts: '*', extra })

/** The fleet as a deploy.yml lists it: each host with its own user and deploy-path; the second is primary. */
function writeConfig(extra = ''): void {
  const entries = fleet.hosts.map(
    (h, i) =>
      `  - { host: "${h.host}:${h.sshPort}", user: ${h.user}, deploy-path: "${h.deployPath}"${i === 1 ? ', primary: true' : ''} }`
  )
  repo.write('deploy.yml', `hosts:\n${entries.join('\n')}\n${extra}`)
}

function deploy(name: string, extra: Record<string, string> = {}): Promise<ActionRun> {
  const h = fleet.hosts[0]
  return runAction(
    {
      ...deployInputs(h, { mode: 'deploy', checks: 'none', 'release-name': name, ...extra }),
      hosts: '',
      user: '',
      'deploy-path': '',
      'known-hosts': fleet.hosts.map(x => x.knownHosts).join('\n')
    },
    { workspace: repo.dir, env: { GITHUB_REF: `refs/tags/${name}` }, timeoutMs: 240_000 }
  )
}

const groups = (log: string, step: string): string[] =>
  [...log.matchAll(new RegExp(`^::group::(\\S+): ${step}$`, 'gm'))].map(m => m[1])

beforeAll(async () => {
  fleet = await startFleet(3, { name: 'ddflt', net: 223 })
  db = mkdtempSync(join(tmpdir(), 'dd-fleet-db-'))
  chmodSync(db, 0o777)
  repo = new Repo()
  for (const h of fleet.hosts) await writeEnv(h)
}, 180_000)

afterAll(async () => {
  await fleet?.stop()
  repo?.remove()
  if (db) rmSync(db, { recursive: true, force: true })
}, 120_000)

test('three hosts deploy in two phases; migrations run once, on the primary host; the summary has every host', async () => {
  writeConfig()
  repo.commit('fleet config')
  const r = await deploy('v1')
  expectOk(r)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v1')
  const names = fleet.hosts.map(h => `${h.host}:${h.sshPort}`)
  expect(groups(r.log, 'migrate')).toEqual([names[1]])
  expect(groups(r.log, 'preflight').sort()).toEqual([...names].sort())
  // Every host was ready before any switched: the last preflight comes before the first switch.
  const lastPreflight = Math.max(...names.map(n => r.log.indexOf(`::group::${n}: preflight`)))
  const firstSwitch = Math.min(...names.map(n => r.log.indexOf(`::group::${n}: switch`)))
  expect(lastPreflight).toBeLessThan(firstSwitch)
  // The shared database has the example's migrations.
  const m = await fleet.hosts[0].run(
    `cd ${shq(fleet.hosts[0].deployPath)}/current && .venv/bin/python manage.py showmigrations pages`
  )
  expect(m.stdout).toMatch(/\[X\] 0002_first_greeting/)
  for (const n of names) expect(r.summary).toContain(`| \`${n}\` | – | \`v1\` |`)
})

test('one host whose preflight fails: no host switches', async () => {
  // Only the third host's settings break (its own .env): an HSTS value that is not a number.
  await writeEnv(fleet.hosts[2], 'DJANGO_SECURE=1\nSECURE_HSTS_SECONDS=soon\n')
  try {
    const r = await deploy('v2')
    expect(r.code).not.toBe(0)
    expect(r.outputs.deployed).toBe('false')
    expect(r.log).toMatch(new RegExp(`host ${fleet.hosts[2].host}:\\d+: step preflight failed`))
    expect(groups(r.log, 'switch')).toEqual([])
    for (const h of fleet.hosts) expect(live(h)).toBe('releases/v1')
  } finally {
    await writeEnv(fleet.hosts[2])
  }
})

test('rolling: a batch whose health check fails puts back every host that had switched; the next batch never switches', async () => {
  // A health URL that answers nothing on the hosts: the first batch switches, fails its health check and is put
  // back (the check after the revert fails too, so rolled-back stays false: the report does not claim health).
  const h = fleet.hosts
  const names = h.map(x => `${x.host}:${x.sshPort}`)
  const r = await deploy('v3', {
    rolling: '2',
    'health-check-url': `http://127.0.0.1:1/health/`,
    'health-check-timeout': '2'
  })
  expect(r.code).not.toBe(0)
  expect(r.outputs.deployed).toBe('false')
  expect(r.log).toMatch(new RegExp(`switch, batch 1 of 2: ${names[0]}, ${names[1]}`))
  expect(r.log).not.toMatch(/switch, batch 2 of 2/)
  expect(groups(r.log, 'switch').sort()).toEqual([names[0], names[1]].sort())
  expect(groups(r.log, 'revert-switch').sort()).toEqual([names[0], names[1]].sort())
  for (const x of h) expect(live(x)).toBe('releases/v1')
})
