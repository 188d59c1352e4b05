/**
 * A fleet of three hosts, each in its own network namespace with its own sshd, deploy root, Gunicorn and nginx,
 * sharing one database: two phases across the hosts at once, migrations once on the primary host, a failure in
 * phase 1 switches nobody, a rolling batch whose health fails puts the switched hosts back.
 */
import { jest } from '@jest/globals'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync
} from 'node:fs'
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

/**
 * The fleet as a deploy.yml lists it: each host with its own user and deploy-path (and `roles`, when given);
 * the second is primary.
 */
function writeConfig(extra = '', roles: string[] = []): void {
  const entries = fleet.hosts.map(
    (h, i) =>
      `  - { host: "${h.host}:${h.sshPort}", user: ${h.user}, deploy-path: "${h.deployPath}"${i === 1 ? ', primary: true' : ''}${roles[i] ? `, roles: ${roles[i]}` : ''} }`
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

test('roles: only web hosts run nginx and the health checks; each role runs its own reload-command', async () => {
  // h0 web, h1 web + worker (the primary), h2 worker. The health URL answers only where a web host's server
  // listens (a plain HTTP server in h0's and h1's namespaces): a health check run on h2 would fail the deploy.
  const h = fleet.hosts
  const names = h.map(x => `${x.host}:${x.sshPort}`)
  const www = mkdtempSync(join(tmpdir(), 'dd-fleet-www-'))
  mkdirSync(join(www, 'health'))
  const servers: ChildProcess[] = []
  // Each command writes beside releases/ (its working directory is the release, or current: both resolve there).
  const mark = (file: string): string => `r=$(pwd -P); echo "$r" >> "\${r%/releases/*}/${file}"`
  try {
    for (const x of h.slice(0, 2)) {
      const p = spawn(
        '/usr/bin/ip',
        ['netns', 'exec', x.netns, 'python3', '-u', '-m', 'http.server', '18461', '--bind', '127.0.0.1'],
        { cwd: www, stdio: ['ignore', 'pipe', 'pipe'] }
      )
      servers.push(p)
      await once(p.stdout!, 'data')
    }
    writeConfig(
      [
        'reload-command:',
        `  web: '${mark('web-reloads')}'`,
        `  worker: '${mark('worker-reloads')}'`,
        `nginx-test-command: '${mark('nginx-tested')}'`,
        `nginx-reload-command: '${mark('nginx-reloaded')}'`,
        'health-check-url: http://127.0.0.1:18461/health/',
        'health-check-timeout: 5',
        ''
      ].join('\n'),
      ['web', '[web, worker]', 'worker']
    )
    repo.commit('fleet roles')
    const r = await deploy('v4')
    expectOk(r)
    for (const x of h) expect(live(x)).toBe('releases/v4')
    const web = [names[0], names[1]].sort()
    const workers = [names[1], names[2]].sort()
    expect(groups(r.log, 'nginx-test').sort()).toEqual(web)
    expect(groups(r.log, 'health-before-switch').sort()).toEqual(web)
    expect(groups(r.log, 'health').sort()).toEqual(web)
    expect(groups(r.log, 'reload').sort()).toEqual(web)
    expect(groups(r.log, 'reload-worker').sort()).toEqual(workers)
    expect(groups(r.log, 'migrate')).toEqual([names[1]])
    // What ran where, seen on the hosts: each command once per host that has its role, after the switch.
    const ran = (x: FleetHost, file: string): string[] => {
      const f = join(x.deployPath, file)
      return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n') : []
    }
    const v4 = (x: FleetHost): string => join(x.deployPath, 'releases/v4')
    expect(h.map(x => ran(x, 'web-reloads'))).toEqual([[v4(h[0])], [v4(h[1])], []])
    expect(h.map(x => ran(x, 'worker-reloads'))).toEqual([[], [v4(h[1])], [v4(h[2])]])
    expect(h.map(x => ran(x, 'nginx-tested').length)).toEqual([2, 2, 0])
    expect(h.map(x => ran(x, 'nginx-reloaded').length)).toEqual([1, 1, 0])
  } finally {
    for (const p of servers) p.kill()
    await Promise.all(servers.map(p => (p.exitCode === null ? once(p, 'exit') : undefined)))
    rmSync(www, { recursive: true, force: true })
    for (const x of h)
      for (const f of ['web-reloads', 'worker-reloads', 'nginx-tested', 'nginx-reloaded'])
        rmSync(join(x.deployPath, f), { force: true })
  }
})

test('a host that loses its lease after others switched: every host this deploy switched is put back', async () => {
  // Rolling, one host per batch. While the first host reloads, the third host's lock is taken over (its lease
  // file names another deploy now, as when a stale lock is cleared by hand and another run starts): when its
  // batch comes, the server refuses. The hosts already switched go back.
  const h = fleet.hosts
  const names = h.map(x => `${x.host}:${x.sshPort}`)
  const signal = mkdtempSync(join(tmpdir(), 'dd-fleet-lease-'))
  chmodSync(signal, 0o777)
  writeConfig(`reload-command: 'mkdir ${signal}/first 2>/dev/null && sleep 4 || true'\n`)
  repo.commit('fleet lease')
  const before = h.map(live)
  const watcher = setInterval(() => {
    if (existsSync(join(signal, 'first')) && !existsSync(join(signal, 'taken'))) {
      writeFileSync(join(h[2].deployPath, '.deploy.lock.lease'), 'another-deploy\n')
      mkdirSync(join(signal, 'taken'))
    }
  }, 20)
  try {
    const r = await deploy('v-lease', { rolling: '1' })
    expect(existsSync(join(signal, 'taken'))).toBe(true)
    expect(r.code).not.toBe(0)
    expect(r.outputs.deployed).toBe('false')
    expect(r.log).toMatch(new RegExp(`host ${names[2]}: step switch failed \\(exit 76\\)`))
    expect(r.log).toContain('this deploy no longer holds the deploy lock')

    expect(groups(r.log, 'revert-switch').sort()).toEqual([names[0], names[1]].sort())
    expect(h.map(live)).toEqual(before)
  } finally {
    clearInterval(watcher)
    rmSync(signal, { recursive: true, force: true })
  }
})

test('hosts with a database each: a non-primary gate that finds no tables says `migrate: every-host`', async () => {
  // Each host its own SQLite file; only the primary host migrates (migrate: true); the health URL is the index
  // page, which reads a table: the other hosts' gates fail on "no such table".
  const h = fleet.hosts
  const own = mkdtempSync(join(tmpdir(), 'dd-fleet-own-'))
  chmodSync(own, 0o777)
  try {
    for (const [i, x] of h.entries())
      await writeServerEnv(x, { database: `${own}/db${i}.sqlite3`, allowedHosts: '*' })
    writeConfig('health-check-url: http://127.0.0.1/\nhealth-check-timeout: 5\n')
    repo.commit('fleet own databases')
    const before = h.map(live)
    const r = await deploy('v-own-db')
    expect(r.code).not.toBe(0)
    expect(r.log).toMatch(/no such table/)
    expect(r.log).toMatch(/each host may have its own database[^\n]*`migrate: every-host`/)
    expect(h.map(live)).toEqual(before)
    // With every-host, each host migrates its own database and its gate passes (the health check after the
    // switch has no server listening on these hosts' port 80: that part fails and is put back).
    const again = await deploy('v-own-db2', { migrate: 'every-host' })
    expect(groups(again.log, 'migrate').sort()).toEqual(h.map(x => `${x.host}:${x.sshPort}`).sort())
    expect(again.log).not.toMatch(/no such table/)
    expect(again.log.match(/✓ health-before-switch/g)?.length).toBe(3)
    expect(h.map(live)).toEqual(before)
  } finally {
    for (const x of h) await writeEnv(x)
    rmSync(own, { recursive: true, force: true })
  }
})
