/**
 * Migrations at deploy against a real PostgreSQL 15 that a fleet of three hosts shares (each host's namespace
 * reaches it over TCP on its veth), under load through every host's nginx and Gunicorn:
 * - a drop-column migration is refused before anything changes (migration-safety refuse, a fleet's default);
 *   marked after-deploy, it runs only once every host serves the release that no longer reads the column:
 *   0 failed requests through the whole deploy;
 * - a long transaction holding a lock on the table a migration alters: the deploy fails within
 *   migrate-lock-timeout naming the lock wait, nothing switches, the site keeps answering;
 * - a migrate while another holds the database's migration lock (the advisory lock) waits for it, naming it.
 * - two fleets deploying at once against the database: one migrate waits for the other, the migration runs once;
 * - a rollback behind an applied contract migration is refused, behind an expand-only one allowed.
 */
import { jest } from '@jest/globals'
import { readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { startFleet, type Fleet, type FleetHost } from '../../sandbox/fleet.js'
import { fleetInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startLoad, type LoadHandle, type LoadResult } from '../../sandbox/load.js'
import { DATABASE_URL_SETTINGS, startPostgres, type Postgres } from '../../sandbox/postgres.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'

jest.setTimeout(300_000)

let fleet: Fleet
let pg: Postgres
let repo: Repo
/** The advisory lock migrate.py takes: its first key ("djmg") and the database name's hash. */
const MIGRATION_LOCK = `${0x646a6d67}, hashtext(current_database())`
const live = (h: FleetHost): string => readlinkSync(join(h.deployPath, 'current'))
// The sandbox's Gunicorn writes its pidfile beside the deploy user's home (<root>/run, <root>/home).
const RELOAD = 'kill -HUP "$(cat "$HOME/../run/gunicorn.pid")"'

const model = (fields: string): string => `from django.db import models


class Greeting(models.Model):
    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
${fields}
    class Meta:
        ordering = ['id']
`
const migration = (name: string, after: string, operation: string): [string, string] => [
  `pages/migrations/${name}.py`,
  `from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [('pages', '${after}')]
    operations = [${operation}]
`
]

function release(name: string, fields: string, ...migrations: [string, string][]): void {
  repo.write('pages/models.py', model(fields)).write('VERSION', `${name}\n`)
  for (const [path, text] of migrations) repo.write(path, text)
  repo.commit(name)
}

function run(name: string, extra: Record<string, string> = {}): Promise<ActionRun> {
  return runAction(
    fleetInputs(fleet.hosts, {
      mode: 'deploy',
      checks: 'none',
      'release-name': name,
      'reload-command': RELOAD,
      'command-timeout': '60',
      ...extra
    }),
    { workspace: repo.dir, env: { GITHUB_REF: `refs/tags/${name}` }, timeoutMs: 240_000 }
  )
}

/** Requests through every host's nginx, each on a new connection, until stopped. */
function load(): { stop(): Promise<LoadResult[]> } {
  const loads: LoadHandle[] = fleet.hosts.map(h =>
    startLoad(`${h.url}/`, { concurrency: 2, maxSeconds: 200, ratePerSecond: 40, tallyNon200: true })
  )
  return { stop: () => Promise.all(loads.map(l => l.stop())) }
}
const failed = (rs: LoadResult[]): number => rs.reduce((n, r) => n + r.non200 + r.errors, 0)
const served = (rs: LoadResult[]): number => rs.reduce((n, r) => n + r.ok, 0)

const columns = async (): Promise<string[]> =>
  (
    await pg.sql(
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'pages_greeting' ORDER BY 1"
    )
  )
    .trim()
    .split('\n')

/** The order in which the log's `host: step` groups of these steps began. */
const groups = (log: string, steps: string[]): string[] =>
  [...log.matchAll(/^::group::\S+: (\S+)$/gm)].map(m => m[1]).filter(s => steps.includes(s))

beforeAll(async () => {
  fleet = await startFleet(3, { name: 'ddmig', net: 243 })
  pg = await startPostgres({ name: 'ddmig', listen: fleet.hosts.map((_, i) => `127.243.${i + 1}.1`) })
  repo = new Repo()
  repo.write('mysite/settings.py', repo.read('mysite/settings.py') + DATABASE_URL_SETTINGS)
  repo.write(
    'deploy.yml',
    `hosts:\n${fleet.hosts.map(h => `  - { host: "${h.host}:${h.sshPort}", user: ${h.user}, deploy-path: "${h.deployPath}" }`).join('\n')}\n`
  )
  // v1: the example project, plus a nullable column (expand) the next release stops using.
  release(
    'v1',
    '    note = models.CharField(max_length=20, null=True)\n',
    migration(
      '0003_greeting_note',
      '0002_first_greeting',
      "migrations.AddField('greeting', 'note', models.CharField(max_length=20, null=True))"
    )
  )
  for (const [i, h] of fleet.hosts.entries())
    await writeServerEnv(h, { allowedHosts: '*', extra: `DATABASE_URL=${pg.url(`127.243.${i + 1}.1`)}\n` })
  expectOk(await run('v1', { 'reload-command': 'true' }))
  for (const h of fleet.hosts) await h.startGunicorn()
}, 240_000)

afterAll(async () => {
  await fleet?.stop()
  await pg?.stop()
  repo?.remove()
}, 120_000)

test('a drop-column migration on a fleet (migration-safety: refuse by default) is refused before anything changes: 0 failed requests', async () => {
  release(
    'v2',
    '',
    migration('0004_remove_greeting_note', '0003_greeting_note', "migrations.RemoveField('greeting', 'note')")
  )
  const traffic = load()
  const r = await run('v2')
  const rs = await traffic.stop()
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(
    /migration-safety refuse: [^\n]*\n- pages\.0004_remove_greeting_note: RemoveField: Remove field note from greeting/
  )
  expect(r.summary).toMatch(/Remove field note from greeting \(contract\)/)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v1')
  expect(await columns()).toContain('note')
  expect(served(rs)).toBeGreaterThan(0)
  expect(failed(rs)).toBe(0)
})

test('the same migration marked after-deploy runs once every host serves the release without the column: 0 failed requests', async () => {
  const traffic = load()
  const r = await run('v2', { 'after-deploy-migrations': 'pages.0004_remove_greeting_note' })
  const rs = await traffic.stop()
  expectOk(r)
  // The old release reads the column until it stops serving: dropped before the switch, it answers 500s.
  expect(served(rs)).toBeGreaterThan(0)
  expect([failed(rs), rs.map(x => x.byStatus)]).toEqual([0, rs.map(() => ({ '200': expect.any(Number) }))])
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v2')
  // Every host switched and reloaded before the column went, once, on one host.
  const order = groups(r.log, ['reload', 'migrate-after-deploy'])
  expect(order).toEqual(['reload', 'reload', 'reload', 'migrate-after-deploy'])
  expect(await columns()).not.toContain('note')
  expect(r.summary).toMatch(/pages\.0004_remove_greeting_note`? \| after every host switched/)
  expect(r.summary).toMatch(/Remove field note from greeting/)
})

test('a long transaction on the table a migration alters: the deploy fails within migrate-lock-timeout naming the lock wait; nothing switches, 0 failed requests', async () => {
  release(
    'v3',
    '    mood = models.CharField(max_length=20, null=True)\n',
    migration(
      '0005_greeting_mood',
      '0004_remove_greeting_note',
      "migrations.AddField('greeting', 'mood', models.CharField(max_length=20, null=True))"
    )
  )
  // A reader that never ends its transaction: the site's reads pass it, ALTER TABLE waits for it (and, without
  // a lock timeout, every read of the site would queue behind that wait).
  const held = pg.session('BEGIN;\nSELECT count(*) FROM pages_greeting;\n\\echo HELD\n', 'HELD')
  const traffic = load()
  let r: ActionRun
  try {
    await held.ready
    r = await run('v3', { 'migrate-lock-timeout': '3' })
  } finally {
    await held.end()
  }
  const rs = await traffic.stop()
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(/migrate waited migrate-lock-timeout \(3 s\) for a lock/)
  expect(r.log).toMatch(/The statement waiting was: ALTER TABLE "pages_greeting" ADD COLUMN "mood"/)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v2')
  expect(await columns()).not.toContain('mood')
  expect(served(rs)).toBeGreaterThan(0)
  expect(failed(rs)).toBe(0)
})

test('a migrate while another holds the database migration lock waits for it, saying who holds it', async () => {
  const other = pg.session(`SELECT pg_advisory_lock(${MIGRATION_LOCK});\n\\echo HELD\n`, 'HELD')
  await other.ready
  let waited = false
  const deploying = run('v3')
  try {
    // The deploy's migrate asks for the lock (a request not granted), and has applied nothing while it waits.
    for (let i = 0; i < 1200 && !waited; i++) {
      const n = await pg.sql(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)
      waited = n.trim() === '1'
      if (!waited) await new Promise(res => setTimeout(res, 100))
    }
    expect(waited).toBe(true)
    expect(await columns()).not.toContain('mood')
  } finally {
    await other.end()
  }
  const r = await deploying
  expectOk(r)
  expect(r.log).toMatch(
    /another migrate holds this database's migration lock: waiting for PostgreSQL backend \d+ \(psql/
  )
  expect(await columns()).toContain('mood')
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v3')
})

function rollback(to: string): Promise<ActionRun> {
  return run('', { mode: 'rollback', 'release-name': to })
}

test('a rollback across an expand-only migration goes ahead and lists it; across a contract one it is refused with the list', async () => {
  const traffic = load()
  // v3 added a nullable column v2 does not know: v2 runs fine against it.
  const back = await rollback('v2')
  expectOk(back)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v2')
  expect(back.log).toMatch(
    /v2 goes live against migrations it does not have \(pages\.0005_greeting_mood\): expand only/
  )
  expect(back.summary).toMatch(/pages\.0005_greeting_mood`? \| applied, not in the target release/)
  // v2 dropped a column v1 reads: v1 would answer 500s against this schema.
  const refused = await rollback('v1')
  const rs = await traffic.stop()
  expect(refused.code).not.toBe(0)
  expect(refused.log).toMatch(
    /rollback to v1 refused: the database has migrations applied that v1 does not have \(pages\.0004_remove_greeting_note, pages\.0005_greeting_mood\)[^\n]*\n- pages\.0004_remove_greeting_note: RemoveField: Remove field note from greeting\n/
  )
  expect(refused.log).toMatch(/allow-contract-rollback: true/)
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v2')
  expect(served(rs)).toBeGreaterThan(0)
  expect(failed(rs)).toBe(0)
})

test('two fleets deploying at once against one database: their migrates run one after the other, the migration once', async () => {
  // Fleet A is the first host, fleet B the other two, each with its own config file: two workflows, one database.
  const config = (hosts: FleetHost[]): string =>
    `hosts:\n${hosts.map(h => `  - { host: "${h.host}:${h.sshPort}", user: ${h.user}, deploy-path: "${h.deployPath}" }`).join('\n')}\n`
  repo
    .write('deploy-a.yml', config(fleet.hosts.slice(0, 1)))
    .write('deploy-b.yml', config(fleet.hosts.slice(1)))
  // A migration that holds the lock for 8 s: whichever fleet migrates first, the other arrives meanwhile.
  release(
    'v5',
    '    mood = models.CharField(max_length=20, null=True)\n    tag = models.CharField(max_length=20, null=True)\n',
    migration(
      '0006_greeting_tag',
      '0005_greeting_mood',
      "migrations.AddField('greeting', 'tag', models.CharField(max_length=20, null=True)), migrations.RunSQL('SELECT pg_sleep(8)', migrations.RunSQL.noop)"
    )
  )
  const [a, b] = await Promise.all([
    run('v5', { config: 'deploy-a.yml' }),
    run('v5', { config: 'deploy-b.yml' })
  ])
  expectOk(a)
  expectOk(b)
  const waiting =
    /another migrate holds this database's migration lock: waiting for PostgreSQL backend \d+ \(django-deploy migrate/
  const applied = /Applying pages\.0006_greeting_tag\.\.\. OK/
  // One fleet applied the migration; the other waited for it, then found nothing left to apply.
  expect([a, b].filter(r => waiting.test(r.log))).toHaveLength(1)
  expect([a, b].filter(r => applied.test(r.log))).toHaveLength(1)
  expect([a, b].find(r => waiting.test(r.log))!.log).not.toMatch(applied)
  expect(await columns()).toContain('tag')
  for (const h of fleet.hosts) expect(live(h)).toBe('releases/v5')
})
