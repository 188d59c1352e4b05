/**
 * The deploy, end to end: the built action (dist/index.js) ships the example project over a real OpenSSH
 * server to a deploy path served by real Gunicorn and nginx, started on loopback by the sandbox.
 */
import { jest } from '@jest/globals'
import { existsSync, readFileSync, readlinkSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { startLoad, versionMarker } from '../../sandbox/load.js'
import { deployInputs, liveInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, ROOT, runAction, type ActionRun } from '../helpers/action.js'
import { startFakeGitHub } from '../helpers/fake-github.js'
import { buildWheel } from '../helpers/wheel.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })

async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await httpGet(`${t.url}${path}`)
  return { status: r.status, body: r.body }
}
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
/** Live Gunicorn masters of the target (the pidfile's and a USR2 child's), by /proc. */
async function masters(): Promise<number[]> {
  const r = await t.run(
    `for f in ${t.gunicornPidfile} ${t.gunicornPidfile}.2; do p=$(cat $f 2>/dev/null) && [ -d /proc/$p ] && echo $p; done | sort -u`
  )
  return r.stdout.split('\n').filter(Boolean).map(Number)
}
/** The first four words of the running master's command line. */
async function masterCommand(): Promise<string[]> {
  const pid = readFileSync(t.gunicornPidfile, 'utf8').trim()
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, 4)
}
const releases = (): string[] => readdirSync(join(t.deployPath, 'releases')).sort()

const inputs = (extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(t, { checks: 'check, migrations', ...extra })
const full = (extra: Record<string, string> = {}): Record<string, string> =>
  liveInputs(t, { checks: 'check, migrations', 'health-check-timeout': '10', ...extra })

function expectFailed(r: ActionRun, step: RegExp): void {
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(step)
  expect(r.outputs.deployed).toBe('false')
}

beforeAll(async () => {
  t = await startTarget({ name: 'dde2e' })
  repo = new Repo()
  // The server's own settings live in shared/.env, as a user would put them there before the first deploy.
  await writeServerEnv(t)
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a first deploy to an empty server needs no reload or health-check input', async () => {
  // nginx is tested and reloaded, and a Gunicorn pidfile is named, but nothing runs there yet: a warning.
  const r = await runAction(
    inputs({
      'nginx-test-command': t.nginxTestCommand,
      'nginx-reload-command': t.nginxReloadCommand,
      'gunicorn-pidfile': t.gunicornPidfile
    }),
    { workspace: repo.dir, env: TAG('v1.0.0') }
  )
  expectOk(r)
  expect(r.outputs).toMatchObject({
    mode: 'deploy',
    checks: 'passed',
    release: 'v1.0.0',
    'previous-release': '',
    deployed: 'true',
    'rolled-back': 'false'
  })
  expect(live()).toBe('releases/v1.0.0')
  expect(existsSync(join(t.deployPath, 'current/.venv/bin/python'))).toBe(true)
  expect(r.summary).toContain('v1.0.0')
  expect(r.log).toMatch(/::warning::[^\n]*no running Gunicorn in/)
  // Django's deploy check ran on the server with its settings (.env): each warning annotated and summarised
  expect(r.log).toMatch(/::warning::[^\n]*check --deploy: [^\n]*\(security\.W009\)/)
  expect(r.summary).toMatch(/Server warnings \(\d+\)[\s\S]*security\.W009/)
  await t.startGunicorn()
  const home = await get('/')
  expect(home.status).toBe(200)
  expect(versionMarker(home.body)).toBe(repo.read('VERSION').trim())
  expect((await get('/static/pages/site.css')).status).toBe(200)
})

test('a second deploy under continuous load drops no request and serves the new version and static file', async () => {
  repo.write('VERSION', 'v2\n').write('pages/static/pages/v2.css', 'body { color: green }\n').commit('v2')
  expect((await get('/static/pages/v2.css')).status).toBe(404)
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  await new Promise(r => setTimeout(r, 1000))
  const gh = await startFakeGitHub()
  const r = await runAction(
    full({ 'github-token': 'ghs_deploy_token', 'environment-url': 'https://shop.example.com' }),
    { workspace: repo.dir, env: { ...TAG('v2.0.0'), GITHUB_API_URL: gh.url } }
  ).finally(() => gh.close())
  await new Promise(r => setTimeout(r, 1000))
  const result = await load.stop()
  expectOk(r)
  expect(r.outputs).toMatchObject({ release: 'v2.0.0', 'previous-release': 'v1.0.0', deployed: 'true' })
  expect(r.log).toMatch(/reloaded \(HUP\)/)
  // a GitHub deployment for the environment, in_progress then success with the environment URL
  expect(gh.deployments).toHaveLength(1)
  expect(gh.deployments[0]).toMatchObject({
    environment: 'production',
    ref: repo.git('rev-parse', 'HEAD').trim()
  })
  expect(gh.deployments[0].statuses).toEqual([
    expect.objectContaining({ state: 'in_progress' }),
    expect.objectContaining({ state: 'success', environment_url: 'https://shop.example.com' })
  ])
  expect({ non200: result.non200, errors: result.errors, byStatus: result.byStatus }).toEqual({
    non200: 0,
    errors: 0,
    byStatus: { '200': result.total }
  })
  expect(result.total).toBeGreaterThan(50)
  expect(Object.keys(result.bodies).sort()).toEqual(['v1', 'v2'])
  expect(versionMarker((await get('/')).body)).toBe('v2')
  expect((await get('/static/pages/v2.css')).status).toBe(200)
})

test('a release whose settings do not import is refused before the switch; the old one keeps serving', async () => {
  repo.write('mysite/broken.py', 'raise RuntimeError("settings cannot import")\n')
  repo
    .write('mysite/settings.py', repo.read('mysite/settings.py') + '\nimport mysite.broken  # noqa\n')
    .commit('broken')
  // With the runner's checks off, only the server-side preflight stands between this release and production.
  const r = await runAction(full({ checks: 'none' }), {
    workspace: repo.dir,
    env: TAG('v3.0.0-broken')
  }).finally(() => repo.git('revert', '--no-edit', 'HEAD'))
  expectFailed(r, /step preflight failed/)
  expect(r.log).toContain('settings cannot import')
  expect(r.outputs['rolled-back']).toBe('false')
  expect(live()).toBe('releases/v2.0.0')
  expect(versionMarker((await get('/')).body)).toBe('v2')
})

test('a release whose health URL answers 500 is refused before the switch: under load, not one request fails', async () => {
  repo.write('VERSION', 'v4-unhealthy\n')
  repo
    .write(
      'pages/views.py',
      repo
        .read('pages/views.py')
        .replace(
          "return HttpResponse('ok'",
          "return HttpResponse('sick: the database says no', status=500) or HttpResponse('ok'"
        )
    )
    .commit('unhealthy')
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  await new Promise(r => setTimeout(r, 500))
  const r = await runAction(full({ 'health-check-timeout': '30' }), {
    workspace: repo.dir,
    env: TAG('v4.0.0')
  }).finally(() => repo.git('revert', '--no-edit', 'HEAD'))
  const result = await load.stop()
  expectFailed(r, /step health-before-switch failed/)
  expect(r.outputs['rolled-back']).toBe('false')
  expect(r.log).toMatch(/\/health\/ \(Host: 127\.0\.0\.1:\d+\) in the new release[^\n]*: HTTP 500/)
  expect(r.log).toContain('sick: the database says no')
  expect(r.summary).toContain('sick: the database says no')
  expect(r.log).not.toMatch(/step switch/)
  expect({ non200: result.non200, errors: result.errors, bodies: Object.keys(result.bodies) }).toEqual({
    non200: 0,
    errors: 0,
    bodies: ['v2']
  })
  expect(live()).toBe('releases/v2.0.0')
  expect((await get('/health/')).status).toBe(200)
})

test('a release that answers 500 only behind Gunicorn fails its health check after the switch at once and is rolled back', async () => {
  // Healthy through Django's test client (no SERVER_SOFTWARE), broken as served: the check after the switch.
  repo
    .write(
      'pages/views.py',
      repo
        .read('pages/views.py')
        .replace(
          'def health(request):\n',
          "def health(request):\n    if 'gunicorn' in request.META.get('SERVER_SOFTWARE', ''):\n        return HttpResponse('broken behind gunicorn', status=500)\n"
        )
    )
    .commit('unhealthy behind gunicorn')
  // `current` as someone made it by hand, an absolute link: the revert puts back exactly this link
  const absolute = join(t.deployPath, 'releases/v2.0.0')
  expect((await t.run(`ln -sfn ${absolute} ${t.deployPath}/current`)).code).toBe(0)
  const r = await runAction(full({ 'health-check-timeout': '600' }), {
    workspace: repo.dir,
    env: TAG('v4.1.0')
  }).finally(() => repo.git('revert', '--no-edit', 'HEAD'))
  expectFailed(r, /step health failed/)
  expect(r.log).toMatch(/health-before-switch[\s\S]*: HTTP 200/)
  // three 500s in a row end the wait, long before the 600 s timeout
  expect(r.log).toMatch(/answered HTTP 500[^\n]*\(3 times in a row\): the release is broken/)
  expect(r.outputs['rolled-back']).toBe('true')
  expect(live()).toBe(absolute)
  expect(versionMarker((await get('/')).body)).toBe('v2')
  expect((await t.run(`ln -sfn releases/v2.0.0 ${t.deployPath}/current`)).code).toBe(0)
})

test('a new migration is applied and a new local dependency installed and used (Gunicorn re-executed)', async () => {
  const wheel = buildWheel(
    join(repo.dir, 'vendor'),
    'shouty',
    '1.0',
    'def shout(s):\n    return s.upper() + "!"\n'
  )
  repo.write('requirements.txt', repo.read('requirements.txt') + 'shouty==1.0\n')
  repo.write(
    'pages/views.py',
    repo
      .read('pages/views.py')
      .replace(
        "return HttpResponse(settings.APP_VERSION, content_type='text/plain')",
        "from shouty import shout\n    return HttpResponse(shout(settings.APP_VERSION), content_type='text/plain')"
      )
  )
  repo.write(
    'pages/models.py',
    repo
      .read('pages/models.py')
      .replace('    created =', '    note = models.CharField(max_length=50, default="")\n    created =')
  )
  repo.write(
    'pages/migrations/0003_greeting_note.py',
    [
      'from django.db import migrations, models',
      '',
      'class Migration(migrations.Migration):',
      "    dependencies = [('pages', '0002_first_greeting')]",
      "    operations = [migrations.AddField(model_name='greeting', name='note', field=models.CharField(default='', max_length=50))]",
      ''
    ].join('\n')
  )
  repo.write('VERSION', 'v5\n').commit(`migration and ${wheel}`)
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  const r = await runAction(full(), { workspace: repo.dir, env: TAG('v5.0.0') })
  const result = await load.stop()
  expectOk(r)
  expect(r.log).toMatch(/Applying pages\.0003_greeting_note\.\.\. OK/)
  expect(r.log).toMatch(/re-executed \(USR2\)/)
  expect({ non200: result.non200, errors: result.errors }).toEqual({ non200: 0, errors: 0 })
  expect(await get('/version/')).toEqual({ status: 200, body: 'V5!' })
  const cols = await t.run(`cd ${t.deployPath}/current && .venv/bin/python manage.py showmigrations pages`)
  expect(cols.stdout).toContain('[X] 0003_greeting_note')
  // Gunicorn runs as the README tells users to start it without systemd, with a pidfile (and one master is left)
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const documented = /^cd \S+ && (\S+) (\S+\/\.venv\/bin\/gunicorn) --chdir (\S+) --pid /m
    .exec(readme)!
    .slice(1)
    .map(w => w.replace('/srv/mysite', t.deployPath))
  expect(await masterCommand()).toEqual([documented[0], documented[1], '--chdir', documented[2]])
  expect(documented[0]).toBe(`${t.deployPath}/current/.venv/bin/python`)
  expect(await masters()).toHaveLength(1)
})

test('a Gunicorn started by its shebang keeps the old virtualenv on USR2: refused, the new master stopped, the old one serves', async () => {
  await t.stopGunicorn()
  await t.startGunicorn({ byShebang: true })
  const wheel = buildWheel(join(repo.dir, 'vendor'), 'extradep', '1.0', 'X = 1\n')
  repo.write('requirements.txt', repo.read('requirements.txt') + 'extradep==1.0\n').commit(`add ${wheel}`)
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  const r = await runAction(full(), { workspace: repo.dir, env: TAG('v5.1.0') }).finally(() =>
    repo.git('revert', '--no-edit', 'HEAD')
  )
  const result = await load.stop()
  expectFailed(r, /step reload failed/)
  expect(r.log).toMatch(/a USR2 re-exec of gunicorn runs \S+\/venvs\/\w+, not the release's virtualenv/)
  expect(r.log).toMatch(/stopped the new master; the old one keeps serving/)
  expect(r.outputs['rolled-back']).toBe('true')
  expect({ non200: result.non200, errors: result.errors }).toEqual({ non200: 0, errors: 0 })
  expect(live()).toBe('releases/v5.0.0')
  expect(await masters()).toHaveLength(1)
  expect(await get('/version/')).toEqual({ status: 200, body: 'V5!' })
  await t.stopGunicorn()
  await t.startGunicorn()
})

test('a new master whose workers cannot load the app is stopped after USR2; the old one keeps serving', async () => {
  const wheel = buildWheel(join(repo.dir, 'vendor'), 'extradep', '2.0', 'X = 2\n')
  repo.write('requirements.txt', repo.read('requirements.txt') + 'extradep==2.0\n')
  // fine for manage.py and Django's test client before the switch; broken as Gunicorn loads it
  repo.write(
    'mysite/wsgi.py',
    repo.read('mysite/wsgi.py') +
      "\nimport sys\nif 'gunicorn' in sys.modules:\n    raise RuntimeError('wsgi broken under gunicorn')\n"
  )
  repo.commit(`broken wsgi and ${wheel}`)
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  const r = await runAction(full(), { workspace: repo.dir, env: TAG('v5.2.0') }).finally(() =>
    repo.git('revert', '--no-edit', 'HEAD')
  )
  const result = await load.stop()
  expectFailed(r, /step reload failed/)
  expect(r.log).toMatch(/new gunicorn master \d+ (exited while starting|had no ready workers)/)
  expect(r.outputs['rolled-back']).toBe('true')
  expect({ non200: result.non200, errors: result.errors }).toEqual({ non200: 0, errors: 0 })
  expect(await masters()).toHaveLength(1)
  expect(await get('/version/')).toEqual({ status: 200, body: 'V5!' })
})

test('a gunicorn-pidfile that names no running master fails the deploy once a release is live', async () => {
  repo.write('VERSION', 'v5-typo\n').commit('typo')
  const r = await runAction(full({ 'gunicorn-pidfile': `${t.gunicornPidfile}.typo` }), {
    workspace: repo.dir,
    env: TAG('v5.3.0')
  }).finally(() => repo.git('revert', '--no-edit', 'HEAD'))
  expectFailed(r, /step reload failed/)
  expect(r.log).toMatch(/names no running Gunicorn master while release v5\.0\.0 is live/)
  expect(live()).toBe('releases/v5.0.0')
})

test('keep-releases removes old releases but never the live or the previous one', async () => {
  repo.write('VERSION', 'v6\n').commit('v6')
  const r = await runAction(full({ 'keep-releases': '1' }), { workspace: repo.dir, env: TAG('v6.0.0') })
  expectOk(r)
  expect(releases()).toEqual(['v5.0.0', 'v6.0.0'])
  const venvs = readdirSync(join(t.deployPath, 'venvs'))
  expect(venvs).toHaveLength(1)
})

test('mode rollback puts the previous release back', async () => {
  const r = await runAction(full({ mode: 'rollback' }), { workspace: repo.dir })
  expectOk(r)
  expect(r.outputs).toMatchObject({
    mode: 'rollback',
    release: 'v5.0.0',
    'previous-release': 'v6.0.0',
    'rolled-back': 'true'
  })
  expect(live()).toBe('releases/v5.0.0')
  expect(versionMarker((await get('/')).body)).toBe('v5')
})

test('rollback and cleanup know which releases went live: a refused release is never a target nor kept', async () => {
  const deploy = async (version: string, extra: Record<string, string> = {}): Promise<ActionRun> => {
    repo.write('VERSION', `${version}\n`).commit(version)
    return runAction(full({ 'keep-releases': '3', ...extra }), {
      workspace: repo.dir,
      env: TAG(`${version}.0.0`)
    })
  }
  expectOk(await deploy('v7'))
  // refused before the switch (its settings do not import)
  repo.write('mysite/broken.py', 'raise RuntimeError("settings cannot import")\n')
  repo.write('mysite/settings.py', repo.read('mysite/settings.py') + '\nimport mysite.broken  # noqa\n')
  const refused = await deploy('v8', { checks: 'none' }).finally(() =>
    repo.git('revert', '--no-edit', 'HEAD')
  )
  expectFailed(refused, /step preflight failed/)
  expect(releases()).toContain('v8.0.0')
  expectOk(await deploy('v9'))
  // went live, most recent last: …, v6, v5 (rolled back to), v7, v9: the three last are kept, v8 never counted
  expect(releases()).toEqual(['v5.0.0', 'v7.0.0', 'v9.0.0'])
  const history = await t.run(`cat ${t.deployPath}/.deploy-history`)
  expect(history.stdout).toMatch(/ live v7\.0\.0\n.* live v9\.0\.0\n$/)
  expect(history.stdout).not.toContain('v8.0.0')

  const back = await runAction(full({ mode: 'rollback' }), { workspace: repo.dir })
  expectOk(back)
  expect(back.outputs).toMatchObject({ release: 'v7.0.0', 'previous-release': 'v9.0.0' })
  expect(versionMarker((await get('/')).body)).toBe('v7')
  // a second rollback goes further back, not forward to the release just rolled away from
  const again = await runAction(full({ mode: 'rollback' }), { workspace: repo.dir })
  expectOk(again)
  expect(again.outputs).toMatchObject({ release: 'v5.0.0', 'previous-release': 'v7.0.0' })
  expect(versionMarker((await get('/')).body)).toBe('v5')
})
