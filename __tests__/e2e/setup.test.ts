/**
 * mode: setup end to end: the built action against a bare Debian server with systemd as PID 1
 * (sandbox/container.ts) and pebble standing in for Let's Encrypt (sandbox/acme.ts). Setup makes the server
 * ready, the first deploy with `gunicorn-service` starts the units it left waiting, the site answers over HTTPS
 * with pebble's certificate and redirects HTTP; v2 (code only: reload) and v3 (a new dependency: restart with
 * requests queued on the socket) deploy under load through HTTPS with 0 failed requests; setup again changes
 * nothing and restarts nothing; a managed nginx file edited by hand is refused with its diff; a domain nginx
 * refuses is refused with nginx's message and the old site put back.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAcme, type Acme } from '../../sandbox/acme.js'
import { startContainer, type Container } from '../../sandbox/container.js'
import { startLoad, versionMarker, type LoadHandle, type LoadResult } from '../../sandbox/load.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'
import { readAsRunner } from '../helpers/runner-log.js'
import { buildWheel } from '../helpers/wheel.js'

jest.setTimeout(300_000)

const NET = 252
const APP = 'shop'
const DOMAIN = 'shop.ddsetup.test'
const DEPLOY_PATH = '/srv/shop'
let c: Container | undefined
let acme: Acme | undefined
let repo: Repo | undefined
const tmp = mkdtempSync(join(tmpdir(), 'ddsetup-'))
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(tmp, 'deploy'), '-C', 'ddsetup'])
const DEPLOY_KEY = readFileSync(join(tmp, 'deploy'), 'utf8')
/** Seconds each setup and deploy run took, for the report. */
const timings: Record<string, number> = {}

beforeAll(async () => {
  c = await startContainer({ name: 'ddsetup', net: NET })
  acme = await startAcme({ bindIp: c.outside, domains: { [DOMAIN]: c.host } })
  repo = new Repo()
})

afterAll(async () => {
  await acme?.stop()
  await c?.stop()
  repo?.remove()
  rmSync(tmp, { recursive: true, force: true })
  if (Object.keys(timings).length) console.log(`setup and deploy timings (s): ${JSON.stringify(timings)}`)
})

/** The inputs of `mode: setup` for the container: the admin key is root's, the deploy key the new user's. */
function setupInputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    mode: 'setup',
    hosts: c!.host,
    'known-hosts': c!.knownHosts,
    'setup-ssh-key': c!.privateKey,
    user: 'deploy',
    'ssh-key': DEPLOY_KEY,
    'deploy-path': DEPLOY_PATH,
    app: APP,
    domains: DOMAIN,
    'acme-directory': acme!.directory,
    'acme-ca-certificate': acme!.caPem,
    'acme-email': 'admin@ddsetup.test',
    'env-file': [
      'SECRET_KEY=ddsetup-not-a-real-secret-0123456789-abcdefghijklmnopqrstuvwxyz',
      'DEBUG=0',
      `ALLOWED_HOSTS=${DOMAIN}`,
      'DJANGO_SECURE=1',
      `DATABASE_PATH=${DEPLOY_PATH}/shared/db.sqlite3`
    ].join('\n'),
    'github-token': '',
    ...extra
  }
}

async function setup(extra: Record<string, string> = {}, label?: string): Promise<ActionRun> {
  const t0 = Date.now()
  const r = await runAction(setupInputs(extra), {
    workspace: repo!.dir,
    env: { GITHUB_EVENT_NAME: 'workflow_dispatch' }
  })
  if (label) timings[label] = (Date.now() - t0) / 1000
  return r
}

const sh = async (cmd: string): Promise<string> => {
  const r = await c!.exec(cmd)
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}\n${r.stdout}\n${r.stderr}`)
  return r.stdout.trim()
}

function get(
  proto: 'http' | 'https',
  path: string,
  ca?: string
): Promise<{ status: number; body: string; location?: string }> {
  const lib = proto === 'https' ? https : http
  return new Promise((resolve, reject) => {
    const req = lib.get(
      {
        host: c!.host,
        port: proto === 'https' ? 443 : 80,
        path,
        headers: { Host: DOMAIN },
        servername: DOMAIN,
        ca,
        agent: false,
        timeout: 10_000
      },
      res => {
        let body = ''
        res.on('data', d => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location }))
      }
    )
    req.on('error', reject)
  })
}

/** A deploy of the repository's HEAD as tag `tag`, as the deploy user, with the unit setup made. */
async function deploy(tag: string): Promise<ActionRun> {
  const t0 = Date.now()
  const r = await runAction(
    {
      mode: 'deploy',
      hosts: c!.host,
      user: 'deploy',
      'ssh-key': DEPLOY_KEY,
      'known-hosts': c!.knownHosts,
      'deploy-path': DEPLOY_PATH,
      'remote-python': '/usr/bin/python3',
      'venv-options': '--system-site-packages',
      'pip-args': '--no-index',
      python: '/usr/bin/python3',
      checks: 'check',
      'gunicorn-service': APP,
      nginx: 'true',
      'github-token': ''
    },
    { workspace: repo!.dir, env: { GITHUB_REF: `refs/tags/${tag}` } }
  )
  timings[`deploy ${tag}`] = (Date.now() - t0) / 1000
  return r
}

/** When each unit last entered `active`, and its main process: a restart changes both. */
const unitMarks = (): Promise<string> =>
  sh(`systemctl show -p ActiveEnterTimestampMonotonic -p MainPID ${APP}.service ${APP}.socket nginx.service`)

test('bare server → setup (tls acme from pebble) → deploy v1 with gunicorn-service: HTTPS verified, HTTP redirects', async () => {
  const r = await setup({}, 'setup on a bare container')
  expectOk(r)
  expect(r.outputs['site-url']).toBe(`https://${DOMAIN}/`)
  expect(r.summary).toContain('Django setup: set up')
  expect(r.summary).toMatch(/certificate \| 🆕 created/)
  // The env-file secret is never printed: masked line by line, and no step shows it.
  expect(readAsRunner(r.log).visible).not.toContain('ddsetup-not-a-real-secret')
  const shown = r.log.split('\n').filter(l => l.includes('ddsetup-not-a-real-secret'))
  expect(shown).toContain(
    '::add-mask::SECRET_KEY=ddsetup-not-a-real-secret-0123456789-abcdefghijklmnopqrstuvwxyz'
  )
  expect(shown.filter(l => !l.startsWith('::add-mask::'))).toEqual([])
  // Before a release: units enabled, not started (nginx's requests cannot trip the start limit).
  expect(await sh(`systemctl is-enabled ${APP}.socket ${APP}.service`)).toBe('enabled\nenabled')
  expect((await c!.exec(`systemctl is-active ${APP}.socket ${APP}.service`)).stdout.trim()).toBe(
    'inactive\ninactive'
  )
  expect(await sh(`stat -c '%a %U' ${DEPLOY_PATH}/shared/.env`)).toBe('600 deploy')

  const d = await deploy('v1')
  expectOk(d)
  expect(d.log).toContain(`${APP} is not active: systemctl start`)
  // The container names itself in /etc/hosts, as a Debian install does: sudo resolves it without a word.
  expect(d.log).not.toContain('unable to resolve host')
  expect(await sh(`systemctl is-active ${APP}.socket ${APP}.service`)).toBe('active\nactive')

  const root = await acme!.issuingRoot()
  const page = await get('https', '/', root)
  expect(page.status).toBe(200)
  expect(page.body).toContain('<span id="version">')
  await expect(get('https', '/')).rejects.toThrow(/certificate/)
  const plain = await get('http', '/pages/?x=1')
  expect(plain.status).toBe(301)
  expect(plain.location).toBe(`https://${DOMAIN}/pages/?x=1`)

  // Renewals: certbot.service trusts the private CA (setup's drop-in), and the challenge still reaches the site
  // (a dry run goes to Let's Encrypt's staging server unless told the server).
  const env = await sh('systemctl show certbot.service -p Environment --value')
  expect(env).toBe(`REQUESTS_CA_BUNDLE=/etc/ssl/django-deploy/${APP}/acme-ca.pem`)
  await sh(
    `env ${env} certbot renew --dry-run --no-random-sleep-on-renew --cert-name ${APP} --server ${acme!.directory}`
  )
})

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** Load on the site through HTTPS by its domain, verified against pebble's root: a new connection per request. */
async function httpsLoad(): Promise<LoadHandle> {
  return startLoad(`https://${c!.host}/`, {
    concurrency: 4,
    maxSeconds: 120,
    marker: versionMarker,
    hostHeader: DOMAIN,
    ca: await acme!.issuingRoot()
  })
}

/** A deploy of HEAD as `tag` while the load runs (a second of load before and after); the load's result. */
async function deployUnderLoad(tag: string): Promise<{ d: ActionRun; load: LoadResult }> {
  const load = await httpsLoad()
  await sleep(1000)
  const d = await deploy(tag)
  await sleep(1000)
  return { d, load: await load.stop() }
}

const failed = (l: LoadResult) => ({ non200: l.non200, errors: l.errors, errorCodes: l.errorCodes })
const mainPid = (): Promise<string> => sh(`systemctl show -p MainPID --value ${APP}.service`)

test('v2 (code only) and v3 (a new dependency) under load through HTTPS, Gunicorn run by systemd: reloaded, then restarted with requests queued on its socket; 0 failed requests', async () => {
  const pid1 = await mainPid()
  repo!.write('VERSION', 'v2\n').commit('v2: code only')
  const v2 = await deployUnderLoad('v2')
  expectOk(v2.d)
  expect(v2.d.log).toContain(`${APP} reloaded: new workers of ${pid1} ready`)
  expect(v2.d.log).not.toContain('systemctl restart')
  expect(await mainPid()).toBe(pid1)
  expect(failed(v2.load)).toEqual({ non200: 0, errors: 0, errorCodes: {} })
  expect(v2.load.total).toBeGreaterThan(50)
  expect(Object.keys(v2.load.bodies).sort()).toEqual(['v1', 'v2'])

  // v3: a new dependency (a wheel in vendor/, as requirements.txt finds the others) that the home page shows.
  // Imported in the view, not at module level: the runner's checks do not have it, only the server's virtualenv.
  const wheel = buildWheel(
    join(repo!.dir, 'vendor'),
    'ddsetupdep',
    '1.0',
    "def stamp(version):\n    return version + ' with ddsetupdep 1.0'\n"
  )
  repo!.write('requirements.txt', `${repo!.read('requirements.txt')}ddsetupdep==1.0\n`)
  repo!.write(
    'pages/views.py',
    repo!
      .read('pages/views.py')
      .replace('def index(request):\n', 'def index(request):\n    from ddsetupdep import stamp\n\n')
      .replace("'version': settings.APP_VERSION,", "'version': stamp(settings.APP_VERSION),")
  )
  repo!.write('VERSION', 'v3\n').commit(`v3: depends on ${wheel}`)
  const v3 = await deployUnderLoad('v3')
  expectOk(v3.d)
  expect(v3.d.log).toMatch(/Successfully installed ddsetupdep-1\.0$/m)
  expect(v3.d.log).toMatch(
    new RegExp(`${APP} runs \\S+; the release needs ${DEPLOY_PATH}/\\S+: systemctl restart`)
  )
  expect(await mainPid()).not.toBe(pid1)
  expect(v3.d.log).toMatch(new RegExp(`${APP} restarted: new workers of \\d+ ready`))
  expect(failed(v3.load)).toEqual({ non200: 0, errors: 0, errorCodes: {} })
  expect(v3.load.total).toBeGreaterThan(50)
  expect(Object.keys(v3.load.bodies).sort()).toEqual(['v2', 'v3 with ddsetupdep 1.0'])
  const page = await get('https', '/', await acme!.issuingRoot())
  expect(versionMarker(page.body)).toBe('v3 with ddsetupdep 1.0')
})

test('setup again: no changes, and no service restarted', async () => {
  const before = await unitMarks()
  const r = await setup({}, 'second setup, no changes')
  expectOk(r)
  expect(r.log).toContain('no changes: every item is as setup would make it')
  expect(r.summary).toContain(`: no changes`)
  expect(r.summary).not.toMatch(/🆕|✏️/)
  expect(await unitMarks()).toBe(before)
})

test('a managed nginx site edited by hand: refused with its diff, the site still served', async () => {
  await sh(`sed -i 's/client_max_body_size 20m;/client_max_body_size 1g;/' /etc/nginx/sites-available/${APP}`)
  const r = await setup()
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(/refused, nothing was changed: nginx site shop: .* edited by hand/)
  expect(r.log).toContain('-    client_max_body_size 1g;')
  expect(r.log).toContain('+    client_max_body_size 20m;')
  expect(r.summary).toContain('⛔ refused')
  expect(await sh(`grep -c 'client_max_body_size 1g' /etc/nginx/sites-available/${APP}`)).toBe('1')
  expect((await get('https', '/', await acme!.issuingRoot())).status).toBe(200)
  // With setup-overwrite the file is setup's again.
  expectOk(await setup({ 'setup-overwrite': 'true' }))
  expect(await sh(`grep -c 'client_max_body_size 20m' /etc/nginx/sites-available/${APP}`)).toBe('1')
})

test("a domain nginx refuses (too long for its server_names_hash): refused with nginx's message, the old site put back and still served, nothing else changed", async () => {
  // A valid DNS name (labels under 64, the whole under 254) that settings accept; nginx's default
  // server_names_hash_bucket_size (64) cannot hold it once two sites share port 80 (here: Debian's default site).
  const long = `${'a'.repeat(40)}.${'b'.repeat(40)}.ddsetup.test`
  const before = await tree()
  const r = await setup({ domains: `${DOMAIN} ${long}` })
  expect(r.code).not.toBe(0)
  expect(r.log).toContain(
    'could not build server_names_hash, you should increase server_names_hash_bucket_size'
  )
  expect(r.log).toContain('nginx -t refused the new site: the old one is back, nginx was not reloaded')
  // The site is tested before the certificate is asked for the new name: the certificate step never ran.
  expect(r.log).toContain('✗ nginx site failed')
  expect(r.log).not.toMatch(/^::group::\S+: certificate$/m)
  // What nginx runs on passes its test and survives a reload (a reboot, another site's setup) serving the old site.
  await sh('nginx -t 2>&1 && systemctl reload nginx')
  const page = await get('https', '/', await acme!.issuingRoot())
  expect(page.status).toBe(200)
  expect(versionMarker(page.body)).toBe('v3 with ddsetupdep 1.0')
  expect(await tree()).toBe(before)
})

/** Every file's path, mode, owner and content sum under /etc and the deploy path: what a dry run must not touch. */
const tree = (): Promise<string> =>
  sh(
    `find /etc ${DEPLOY_PATH} -xdev \\( -type f -o -type l \\) -printf '%p %m %u %l\\n' | sort | sha256sum; ` +
      `find /etc ${DEPLOY_PATH} -xdev -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum`
  )

test('dry run of a change: its diff and commands printed, nothing changed under /etc or the deploy path', async () => {
  const before = await tree()
  const r = await setup({ 'max-body-size': '30m', 'dry-run': 'true' })
  expectOk(r)
  expect(r.log).toContain('+    client_max_body_size 30m;')
  expect(r.log).toContain(`plan 1/1 setup: ${c!.host}`)
  expect(r.summary).toContain('Django setup: dry run')
  expect(await tree()).toBe(before)
})

test('an administrator with passwordless sudo instead of root: every command through sudo -n', async () => {
  await sh(
    'useradd --create-home --shell /bin/bash admin && usermod -p "*" admin && install -d -m 0700 -o admin -g admin ~admin/.ssh'
  )
  await c!.writeFile('/home/admin/.ssh/authorized_keys', `${c!.publicKey}\n`, 0o600)
  await sh('chown admin:admin ~admin/.ssh/authorized_keys')
  await c!.writeFile('/etc/sudoers.d/ddsetup-admin', 'admin ALL=(ALL) NOPASSWD: ALL\n', 0o440)
  const r = await setup({ 'setup-user': 'admin' })
  expectOk(r)
  expect(r.log).toContain('connected as admin (commands through sudo -n)')
  expect(r.log).toContain('no changes: every item is as setup would make it')
})

test('an unsupported OS is refused before any change', async () => {
  const saved = await sh('cat /etc/os-release')
  await c!.writeFile('/etc/os-release', 'ID=centos\nVERSION_ID="9"\n')
  try {
    const before = await tree()
    const r = await setup({ 'max-body-size': '30m' })
    expect(r.code).not.toBe(0)
    expect(r.log).toContain(
      'unsupported operating system "centos 9"; setup supports debian 12/13, ubuntu 22.04/24.04. Nothing was changed.'
    )
    expect(await tree()).toBe(before)
  } finally {
    await c!.writeFile('/etc/os-release', `${saved}\n`)
  }
})
