/**
 * mode: setup end to end: the built action against a bare Debian server with systemd as PID 1
 * (sandbox/container.ts) and pebble standing in for Let's Encrypt (sandbox/acme.ts). Setup makes the server
 * ready, the first deploy with `gunicorn-service` starts the units it left waiting, the site answers over HTTPS
 * with pebble's certificate and redirects HTTP; setup again changes nothing and restarts nothing; a managed nginx
 * file edited by hand is refused with its diff.
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
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'
import { readAsRunner } from '../helpers/runner-log.js'

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
/** Seconds each setup run took, for the report. */
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
  if (Object.keys(timings).length) console.log(`setup timings (s): ${JSON.stringify(timings)}`)
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

  const d = await runAction(
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
    { workspace: repo!.dir, env: { GITHUB_REF: 'refs/tags/v1' } }
  )
  expectOk(d)
  expect(d.log).toContain(`${APP} is not active: systemctl start`)
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
  expect(r.log).toMatch(/plan 1\/1 setup: 127\.252\.1\.2/)
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
