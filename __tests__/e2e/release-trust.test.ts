/**
 * Issue 15, server side, through the built action on real OpenSSH, Gunicorn and nginx: a release name deployed
 * again is built beside the old one (which stays the rollback target until the new build is ready), release
 * files are read-only so nothing writes the live release through a hard link, a shared `.env` copied from the
 * repository is 0600, and the health check's credentials reach no command line on the server.
 */
import { jest } from '@jest/globals'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { join, relative } from 'node:path'
import { liveInputs } from '../../sandbox/inputs.js'
import { startLoad, versionMarker } from '../../sandbox/load.js'
import { get as httpGet } from '../../sandbox/http.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'

jest.setTimeout(300_000)

let t: Target
let repo: Repo
const SECRET = "s3cr:t p@ss'w%rd"
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })
const release = (name: string): string => join(t.deployPath, 'releases', name)
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
const healthUrl = (): string => `${t.url.replace('://', `://watch:${encodeURIComponent(SECRET)}@`)}/health/`
const deploy = (name: string, extra: Record<string, string> = {}): Promise<ActionRun> =>
  runAction(
    liveInputs(t, { checks: 'none', 'release-name': name, 'health-check-url': healthUrl(), ...extra }),
    { workspace: repo.dir, env: TAG(name) }
  )
async function get(path: string): Promise<string> {
  return (await httpGet(`${t.url}${path}`)).body
}

/** Every file under dir (not what Python writes) with its mode and content hash. */
function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name)
      if (name === '__pycache__') continue
      const st = lstatSync(p)
      if (st.isSymbolicLink()) out[relative(dir, p)] = `link ${readlinkSync(p)}`
      else if (st.isDirectory()) walk(p)
      else
        out[relative(dir, p)] =
          `${(st.mode & 0o7777).toString(8)} ${st.ino} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`
    }
  }
  walk(dir)
  return out
}

/** The health view answers slowly to the right credentials (so a watcher sees the check run), 401 to others. */
const HEALTH_VIEW = `
def health(request):
    import base64, time
    auth = request.META.get('HTTP_AUTHORIZATION')
    if auth is None:
        return HttpResponse('ok', content_type='text/plain')
    if auth != 'Basic ' + base64.b64encode(${JSON.stringify(`watch:${SECRET}`)}.encode()).decode():
        return HttpResponse('who are you?', status=401)
    time.sleep(1.5)
    return HttpResponse('ok', content_type='text/plain')
`

beforeAll(async () => {
  t = await startTarget({ name: 'ddi15' })
  repo = new Repo()
  const views = repo.read('pages/views.py')
  repo.write('pages/views.py', views.replace(/\ndef health\(request\):\n[^\n]*\n/, HEALTH_VIEW))
  // The server's settings, committed (as some projects do) and not yet on the server.
  repo.write('.env', `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`)
  repo.write('stamp.txt', 'as committed\n')
  repo.git('add', '-f', '.env')
  repo.write('VERSION', 'v1\n').commit('v1')
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a shared .env made from a committed one is 0600, owned by the deploy user', async () => {
  const r = await deploy('v1', { 'gunicorn-pidfile': '', 'health-check-url': '' })
  expectOk(r)
  const st = await t.run(`stat -c '%a %U' ${t.deployPath}/shared/.env`)
  expect(st.stdout.trim()).toBe(`600 ${t.user}`)
  await t.startGunicorn()
  expect(versionMarker(await get('/'))).toBe('v1')
})

test('health-check credentials reach no command line on the server, nor the dry-run plan', async () => {
  const auth = Buffer.from(`watch:${SECRET}`).toString('base64')
  const forms = [SECRET, encodeURIComponent(SECRET), 's3cr%3At', 'p%40ss', auth]
  // Every command line on the machine, read as fast as it goes while the deploy runs.
  const watcher = spawn('/usr/bin/python3', [
    '-c',
    `
import glob, json, select, sys
forms = [bytes.fromhex(f) for f in json.loads(sys.argv[1])]
hits, seen = set(), 0
while not select.select([sys.stdin], [], [], 0)[0]:
    for p in glob.glob('/proc/[0-9]*/cmdline'):
        try:
            line = open(p, 'rb').read()
        except OSError:
            continue
        if line.startswith(b'curl\\0') and b'/health/' in line:
            seen += 1
        for f in forms:
            if f in line:
                hits.add(line.replace(b'\\0', b' ').decode('utf-8', 'replace'))
print(json.dumps({'hits': sorted(hits), 'seen': seen}))
`,
    // In hex: the watcher's own command line holds none of the forms it looks for.
    JSON.stringify(forms.map(f => Buffer.from(f).toString('hex')))
  ])
  let out = ''
  watcher.stdout.on('data', c => (out += c))
  const ended = new Promise(r => watcher.on('close', r))
  repo.write('VERSION', 'v2\n').commit('v2')
  const r = await deploy('v2')
  watcher.stdin.end('stop\n')
  await ended
  expectOk(r)
  expect(live()).toBe('releases/v2')
  expect(r.log).toContain(`${t.url.replace('://', '://***@')}/health/ answered 200`)
  const found = JSON.parse(out) as { hits: string[]; seen: number }
  expect(found.hits).toEqual([])
  // The watcher did see the health check's curl running (the view answers the credentials after 1.5 s).
  expect(found.seen).toBeGreaterThan(0)

  const dry = await deploy('v3', { 'dry-run': 'true' })
  expectOk(dry)
  const shown = dry.log
    .split('\n')
    .filter(l => !l.startsWith('::add-mask::'))
    .join('\n')
  expect(shown).toContain('# health (credentials on stdin, not shown)')
  for (const form of forms) expect(shown).not.toContain(form)
})

test('deploying an older name again with a release that fails its preflight leaves that release whole; rollback serves it', async () => {
  const before = fingerprint(release('v1'))
  const settings = repo.read('mysite/settings.py')
  repo.write('mysite/settings.py', `${settings}\nimport module_that_does_not_exist\n`)
  repo.write('VERSION', 'v1-broken\n').commit('v1 again, broken')
  const r = await deploy('v1')
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(/✗ preflight failed/)
  expect(live()).toBe('releases/v2')
  expect(fingerprint(release('v1'))).toEqual(before)

  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  await new Promise(res => setTimeout(res, 1000))
  const back = await runAction(liveInputs(t, { mode: 'rollback', 'health-check-url': healthUrl() }), {
    workspace: repo.dir
  })
  await new Promise(res => setTimeout(res, 1000))
  const result = await load.stop()
  expectOk(back)
  expect(live()).toBe('releases/v1')
  expect(versionMarker(await get('/'))).toBe('v1')
  expect({ non200: result.non200, errors: result.errors }).toEqual({ non200: 0, errors: 0 })
  expect(Object.keys(result.bodies).sort()).toEqual(['v1', 'v2'])
  repo.write('mysite/settings.py', settings).commit('settings fixed')
})

test('deploying an older name again works: it replaces that release, and nothing of the build is left', async () => {
  repo.write('VERSION', 'v2-again\n').commit('v2 again')
  const r = await deploy('v2')
  expectOk(r)
  expect(r.log).toContain('release v2 rebuilt and put in place')
  expect(live()).toBe('releases/v2')
  expect(versionMarker(await get('/'))).toBe('v2-again')
  expect(readdirSync(join(t.deployPath, 'releases')).filter(n => n.startsWith('.'))).toEqual([])
})

test('a step before the switch that writes a reused file in place fails, loudly; the live file is unchanged', async () => {
  const stamp = join(release('v2'), 'stamp.txt')
  const before = fingerprint(release('v2'))
  repo.write(
    'pages/migrations/0003_stamp.py',
    [
      'from pathlib import Path',
      'from django.db import migrations',
      '',
      'def stamp(apps, schema_editor):',
      "    with open(Path(__file__).resolve().parent.parent.parent / 'stamp.txt', 'a') as f:",
      "        f.write('written by a migration\\n')",
      '',
      'class Migration(migrations.Migration):',
      "    dependencies = [('pages', '0002_first_greeting')]",
      '    operations = [migrations.RunPython(stamp, migrations.RunPython.noop)]',
      ''
    ].join('\n')
  )
  repo.write('VERSION', 'v5\n').commit('v5 with a migration that writes a release file')
  const r = await deploy('v5')
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(/✗ migrate failed/)
  expect(r.log).toMatch(/PermissionError: \[Errno 13\] Permission denied: '.*\/releases\/v5\/stamp\.txt'/)
  expect(r.log).toContain(
    'release files are read-only: files unchanged since the live release are the live files'
  )
  expect(readFileSync(stamp, 'utf8')).toBe('as committed\n')
  expect(fingerprint(release('v2'))).toEqual(before)
  expect(live()).toBe('releases/v2')
  expect(versionMarker(await get('/'))).toBe('v2-again')
})
