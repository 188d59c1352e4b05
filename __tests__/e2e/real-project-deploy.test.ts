/**
 * A project as tutorials write it (__tests__/fixtures/realproject: whitenoise's manifest storage, DATABASE_URL,
 * python-dotenv, hard-coded ALLOWED_HOSTS and STATIC_ROOT) deployed to the real sandbox as it is. Each release's
 * hashed static names are new: after the switch a page of the previous release still finds its CSS through
 * nginx serving `<deploy-path>/static`, and cleanup prunes what only the removed releases had.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  writeFileSync
} from 'node:fs'
import { get as httpGet } from '../../sandbox/http.js'
import { request } from 'node:https'
import { join } from 'node:path'
import { deployInputs, liveInputs } from '../../sandbox/inputs.js'
import { freePorts, shq, startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, ROOT, runAction, type ActionRun } from '../helpers/action.js'
import { djangoVersions } from '../helpers/django.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const FIXTURE = join(ROOT, '__tests__/fixtures/realproject')
const WHEEL = 'gunicorn_script-1.0.0-py3-none-any.whl'

/**
 * One request on a new connection, as a browser arriving after the deploy would: fetch's pooled keep-alive
 * connection may be one nginx closes as its old workers finish after a reload ("other side closed").
 */
async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await httpGet(`${t.url}${path}`)
  return { status: r.status, body: r.body }
}
/** The stylesheet URL the home page links. */
async function stylesheet(): Promise<string> {
  const home = await get('/')
  expect(home.status).toBe(200)
  const m = /href="(\/static\/css\/styles\.[0-9a-f]{12}\.css)"/.exec(home.body)
  if (!m) throw new Error(`no hashed stylesheet in the home page:\n${home.body}`)
  return m[1]
}
async function deploy(version: string, extra: Record<string, string> = {}): Promise<ActionRun> {
  repo
    .write('VERSION', `${version}\n`)
    .write('shop/static/css/styles.css', `body { color: navy } /* ${version} */\n`)
    .commit(version)
  const r = await runAction(liveInputs(t, { checks: 'check', 'health-check-timeout': '10', ...extra }), {
    workspace: repo.dir,
    env: { GITHUB_REF: `refs/tags/${version}` }
  })
  expectOk(r)
  return r
}

/** The first release (no Gunicorn runs yet: no reload or health check), with the checks a team runs. */
async function firstDeploy(): Promise<void> {
  const first = await runAction(deployInputs(t, { checks: 'check, migrations, test' }), {
    workspace: repo.dir,
    env: { GITHUB_REF: 'refs/tags/v1' }
  })
  expectOk(first)
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddi16s', wsgiModule: 'tutorial.wsgi' })
  repo = new Repo(FIXTURE)
  mkdirSync(join(repo.dir, 'vendor'))
  copyFileSync(join(ROOT, 'example/vendor', WHEEL), join(repo.dir, 'vendor', WHEEL))
  repo.commit('the gunicorn console script as a local wheel')
  const env = `DATABASE_URL=sqlite:///${t.deployPath}/shared/db.sqlite3\nSECRET_KEY=${'k'.repeat(60)}\n`
  const w = await t.run(`mkdir -p ${shq(t.deployPath)}/shared && cat > ${shq(t.deployPath)}/shared/.env`, {
    input: env
  })
  expect(w.code).toBe(0)
  // What the README tells users: nginx serves /static/ from <deploy-path>/static.
  const conf = readFileSync(t.nginxConf, 'utf8')
  const served = conf.replace(/alias [^;\n]*\/current\/static\/;/, `alias ${t.deployPath}/static/;`)
  expect(served).not.toBe(conf)
  writeFileSync(t.nginxConf, served)
  execFileSync('/usr/sbin/nginx', ['-c', t.nginxConf, '-s', 'reload'])
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test("after the switch the previous release's hashed CSS still answers 200; cleanup removes what only removed releases had", async () => {
  await firstDeploy()
  await t.startGunicorn()
  const v1css = await stylesheet()
  expect((await get(v1css)).status).toBe(200)
  const dry = await runAction(liveInputs(t, { checks: 'check', 'dry-run': 'true', 'release-name': 'dry' }), {
    workspace: repo.dir,
    env: { GITHUB_REF: 'refs/tags/dry' }
  })
  expectOk(dry)
  expect(dry.log).toMatch(/# collectstatic\n[\s\S]*# static\n[\s\S]*# switch\n[\s\S]*# static-live\n/)

  await deploy('v2')
  const v2css = await stylesheet()
  expect(v2css).not.toBe(v1css)
  // The page v1 served asks for its own CSS: still there, with v1's content.
  const old = await get(v1css)
  expect(old.status).toBe(200)
  expect(old.body).not.toContain('/* v2 */')
  expect((await get(v2css)).body).toContain('/* v2 */')

  // A release refused before the switch (its health URL answers 500) leaves only extra names behind: the
  // unhashed name still serves the live release's content.
  const views = repo.read('shop/views.py')
  const down = views.replace(
    "HttpResponse('ok', content_type='text/plain')",
    "HttpResponse('down', status=500)"
  )
  expect(down).not.toBe(views)
  repo.write('shop/views.py', down)
  await expect(deploy('v2-broken')).rejects.toThrow(/health-before-switch/)
  repo.write('shop/views.py', views).commit('fixed')
  expect((await get('/static/css/styles.css')).body).toContain('/* v2 */')
  expect((await get(v2css)).status).toBe(200)
  expect((await get(v1css)).status).toBe(200)

  await deploy('v3', { 'keep-releases': '2' })
  await deploy('v4', { 'keep-releases': '2' })
  const v4css = await stylesheet()
  // v1 and v2 are gone (only v3 and v4 are kept): so are the files only they had.
  expect(
    execFileSync('ls', [join(t.deployPath, 'releases')])
      .toString()
      .split('\n')
      .filter(Boolean)
  ).toEqual(['v3', 'v4'])
  expect((await get(v1css)).status).toBe(404)
  expect((await get(v2css)).status).toBe(404)
  expect((await get(v4css)).status).toBe(200)
  // The unhashed name serves the live release's content.
  expect((await get('/static/css/styles.css')).body).toContain('/* v4 */')
})

/** A request over TLS to the sandbox's nginx, trusting its own certificate. */
function tls(
  ca: string,
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string } = {}
): Promise<{ status: number; body: string; cookies: string[] }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers, ca }, res => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, cookies: res.headers['set-cookie'] ?? [] })
      )
    })
    req.on('error', reject)
    req.end(o.body)
  })
}

/** A form POST as a browser sends it to the site: the CSRF cookie and token of the form page, Origin, Referer. */
async function order(ca: string, site: string): Promise<{ status: number; body: string }> {
  const form = await tls(ca, `${site}/order/`)
  expect(form.status).toBe(200)
  const cookie = form.cookies.map(c => c.split(';')[0]).find(c => c.startsWith('csrftoken='))
  const token = /name="csrfmiddlewaretoken" value="([^"]+)"/.exec(form.body)?.[1]
  if (!cookie || !token) throw new Error(`no CSRF cookie or token in the form page:\n${form.body}`)
  return tls(ca, `${site}/order/`, {
    method: 'POST',
    headers: {
      Cookie: cookie,
      Origin: site,
      Referer: `${site}/order/`,
      'Content-Type': 'application/x-www-form-urlencoded'
    },
    body: `csrfmiddlewaretoken=${encodeURIComponent(token)}&name=tea`
  })
}

/** nginx ends TLS for the site on a new port (a self-signed certificate the deploy user's curl trusts). */
async function serveTls(): Promise<{ site: string; ca: string }> {
  const [port] = await freePorts('127.0.0.1', 1)
  const cert = join(t.root, 'site.crt')
  const key = join(t.root, 'site.key')
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert
    ],
    { stdio: 'ignore' }
  )
  const ca = readFileSync(cert, 'utf8')
  const conf = readFileSync(t.nginxConf, 'utf8').replace(
    /\}\s*$/,
    `  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    location /static/ {
      alias ${t.deployPath}/static/;
    }
    location / {
      proxy_pass http://127.0.0.1:${t.gunicornPort};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`
  )
  writeFileSync(t.nginxConf, conf)
  execFileSync('/usr/sbin/nginx', ['-c', t.nginxConf, '-s', 'reload'])
  // The health check after the switch fetches the https URL with curl as the deploy user.
  const w = await t.run(`cat > site.crt && echo "cacert = $HOME/site.crt" > .curlrc`, { input: ca })
  expect(w.code).toBe(0)
  const site = `https://127.0.0.1:${port}`
  for (let i = 0; i < 50; i++) {
    if (
      await tls(ca, `${site}/health/`).then(
        r => r.status === 200,
        () => false
      )
    )
      break
    await new Promise(r => setTimeout(r, 100))
  }
  return { site, ca }
}

test('an https site without SECURE_PROXY_SSL_HEADER: the deploy warns, and form POSTs through nginx fail until it is set', async () => {
  // The server runs Django 4.2 (Origin is checked since 4.0): a .pth in the virtualenv puts it first.
  if (!existsSync(join(t.deployPath, 'current'))) await firstDeploy() // when run on its own
  const django42 = djangoVersions().find(v => v.version === '4.2')!.env.PYTHONPATH
  const venv = realpathSync(join(t.deployPath, 'current/.venv'))
  const lib = join(venv, 'lib', readdirSync(join(venv, 'lib'))[0], 'site-packages')
  writeFileSync(join(lib, 'zz_django42.pth'), `import sys; sys.path.insert(0, ${JSON.stringify(django42)})\n`)
  // nginx on another host than Gunicorn (as behind a load balancer): Gunicorn trusts X-Forwarded-Proto only
  // from its forwarded_allow_ips (default 127.0.0.1), so only Django's own setting can take it.
  await t.stopGunicorn()
  await t.startGunicorn({ env: { FORWARDED_ALLOW_IPS: '192.0.2.1' } })
  const { site, ca } = await serveTls()
  const https = { 'health-check-url': `${site}/health/` }

  const warned = await deploy('v5', https)
  const version = await t.run(
    `${shq(t.deployPath)}/current/.venv/bin/python -c 'import django; print(django.get_version())'`
  )
  expect(version.stdout).toMatch(/^4\.2\./)
  const warning = warned.log.split('\n').find(l => l.includes('behind a TLS proxy: every form POST'))
  expect(warning).toMatch(/^::warning::/)
  expect(warning).toContain(`every form POST to ${site} fails with 403 (CSRF: Origin checking failed`)
  expect(warning).toContain("SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')")
  expect(warning).toContain(`add '${site}' to CSRF_TRUSTED_ORIGINS`)
  // What the warning says: GETs and the health check pass, every form POST is refused.
  const refused = await order(ca, site)
  expect(refused.status).toBe(403)
  expect(refused.body).toContain('CSRF verification failed')

  appendFileSync(join(t.deployPath, 'shared/.env'), 'BEHIND_TLS_PROXY=1\n')
  const fixed = await deploy('v6', https)
  expect(fixed.log).not.toContain('behind a TLS proxy: every form POST')
  expect(fixed.log).toContain(`behind a TLS proxy (${site}): 0 issue(s)`)
  const ordered = await order(ca, site)
  expect(ordered).toEqual({ status: 200, body: expect.stringMatching(/^ordered \(\d+\)$/), cookies: [] })
})

test("mode rollback puts the previous release's unhashed static names back, and its hashed ones are still there", async () => {
  if (!existsSync(join(t.deployPath, 'current'))) {
    await firstDeploy() // when run on its own
    await t.startGunicorn()
  }
  await deploy('r1')
  const r1css = await stylesheet()
  await deploy('r2')
  expect((await get('/static/css/styles.css')).body).toContain('/* r2 */')
  const back = await runAction(liveInputs(t, { mode: 'rollback', 'health-check-timeout': '10' }), {
    workspace: repo.dir
  })
  expectOk(back)
  expect(back.outputs.release).toBe('r1')
  expect((await get('/static/css/styles.css')).body).toContain('/* r1 */')
  expect(await stylesheet()).toBe(r1css)
  expect((await get(r1css)).status).toBe(200)
})
