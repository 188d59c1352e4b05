/**
 * setup's remote scripts run by /bin/sh against a temp directory, with the tools they check with (visudo,
 * systemd-analyze, diff) real and the ones that act on the machine (systemctl, nginx) stood in for on PATH:
 * inspect's sums agree with the plan's (a managed file, a hand edit, a file setup never wrote, one in the way),
 * a file that fails its check is never installed, a site that fails `nginx -t` is put back, units that
 * systemd-analyze refuses are not installed, and units wait for the first release.
 */
import { spawnSync } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as r from '../../src/remote/setup.js'
import * as files from '../../src/setup/files.js'
import { fileStatus, parseFacts, type ManagedFile } from '../../src/setup/plan.js'

const plain = mkdtempSync(join(tmpdir(), 'dd-setup-sh-'))
afterAll(() => rmSync(plain, { recursive: true, force: true }))
/** Where the scripts write: a path no shell word survives unquoted. */
const base = join(plain, "it's $(touch x) `id` dir")
mkdirSync(base)
const bin = join(plain, 'bin')
const calls = join(plain, 'calls')
mkdirSync(bin)
const stub = (name: string, body: string): void => {
  writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> '${calls}'\n${body}\n`)
  chmodSync(join(bin, name), 0o755)
}
stub('systemctl', `[ "$1" != restart ] || ! grep -qs BROKEN "$UNITS"/*.service`)
stub(
  'nginx',
  `[ "$1" = -t ] || exit 0; ! grep -qs BROKEN "$SITES"/* || { echo "nginx: [emerg] unknown directive BROKEN" >&2; exit 1; }`
)

function sh(script: string, stdin = ''): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('/bin/sh', ['-c', script], {
    input: stdin,
    encoding: 'utf8',
    env: {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
      SITES: join(base, 'sites-available'),
      UNITS: join(base, 'units')
    }
  })
}
const called = (): string => (existsSync(calls) ? readFileSync(calls, 'utf8') : '')
beforeEach(() => rmSync(calls, { force: true }))

const managed = (path: string, body: string): ManagedFile => ({
  item: path,
  path,
  content: files.withHeader('mysite', body),
  mode: '644',
  owner: 'root'
})

test("inspect's sums agree with the plan: unchanged, edited by hand, not written by setup, absent, in the way", () => {
  const dir = join(base, 'inspect')
  mkdirSync(join(dir, 'other'), { recursive: true })
  const ms = ['same', 'edited', 'foreign', 'absent', 'other'].map(n =>
    managed(join(dir, n), `line of ${n}\n`)
  )
  writeFileSync(ms[0].path, ms[0].content, { mode: 0o644 })
  writeFileSync(ms[1].path, `${ms[1].content}hand edit\n`, { mode: 0o644 })
  writeFileSync(ms[2].path, 'mine\n', { mode: 0o644 })
  const out = sh(
    r.setupInspect({
      user: 'nobody',
      keyBlob: 'ssh-ed25519 AAAA',
      deployPath: join(dir, 'dp'),
      packages: ['coreutils', 'django-deploy-no-such-package'],
      app: 'mysite',
      files: ms.map(m => m.path),
      siteLink: { link: join(dir, 'link'), target: join(dir, 'site') }
    })
  )
  expect(out.status).toBe(0)
  const facts = parseFacts(out.stdout, ms.length)
  expect(facts.os).toMatch(/^debian \d+/)
  expect(facts.missing).toEqual(['django-deploy-no-such-package'])
  expect(facts.user).toBe(true)
  expect(facts.layout).toBe(false)
  const st = ms.map((m, i) => fileStatus(m, facts.files[i], false))
  expect(st.map(s => s.status)).toEqual(['unchanged', 'refused', 'refused', 'created', 'refused'])
  expect(st[1].why).toMatch(/edited by hand/)
  expect(st[2].why).toMatch(/not written by django-deploy/)
  expect(st[4].why).toMatch(/not a regular file/)
  // A managed file setup wrote and nobody touched: changed, not refused, when its content is to change.
  const next = { ...ms[0], content: files.withHeader('mysite', 'new line\n') }
  expect(fileStatus(next, facts.files[0], false).status).toBe('changed')
})

test('diff -u of the file against the new content on stdin', () => {
  const f = join(base, 'diffed')
  writeFileSync(f, 'a\nb\n')
  const out = sh(r.setupDiff(f, true), 'a\nc\n')
  expect(out.status).toBe(0)
  expect(out.stdout).toContain('-b\n+c')
  expect(sh(r.setupDiff(f, false), 'x\n').stdout).toContain('--- /dev/null')
})

test('a sudoers file visudo refuses is never installed; a valid one is, mode 0440', () => {
  const path = join(base, 'sudoers.d', 'mysite')
  const spec = { path, mode: '440', owner: 'root', check: r.VISUDO }
  const bad = sh(r.installFile(spec), 'deploy ALL=(root) NOPASSWD: /usr/sbin/nginx -t,,\n')
  expect(bad.status).not.toBe(0)
  expect(existsSync(path)).toBe(false)
  expect(readdirSync(join(base, 'sudoers.d'))).toEqual([])
  const good = sh(
    r.installFile(spec),
    files.sudoers({ app: 'mysite', user: 'deploy', deployPath: '/srv/mysite' })
  )
  expect(good.stderr).toBe('')
  expect(statSync(path).mode & 0o777).toBe(0o440)
})

test('an nginx site that fails nginx -t: the old site and link are put back, nginx is not reloaded', () => {
  const avail = join(base, 'sites-available')
  const enabled = join(base, 'sites-enabled')
  mkdirSync(avail)
  mkdirSync(enabled)
  const site = join(avail, 'mysite')
  const link = join(enabled, 'mysite')
  const first = sh(r.installSite(site, link), 'server { listen 80; }\n')
  expect(first.status).toBe(0)
  expect(readlinkSync(link)).toBe(site)
  expect(called()).toContain('systemctl reload-or-restart nginx')
  rmSync(calls)
  const broken = sh(r.installSite(site, link), 'BROKEN;\n')
  expect(broken.status).not.toBe(0)
  expect(broken.stderr).toContain('the old one is back, nginx was not reloaded')
  expect(readFileSync(site, 'utf8')).toBe('server { listen 80; }\n')
  expect(readlinkSync(link)).toBe(site)
  expect(called()).not.toContain('systemctl')
  // A first site that fails leaves neither a site nor a link behind.
  rmSync(site)
  rmSync(link)
  expect(sh(r.installSite(site, link), 'BROKEN;\n').status).not.toBe(0)
  expect(existsSync(site) || existsSync(link)).toBe(false)
  expect(readdirSync(avail)).toEqual([])
})

test('units: verified, installed and enabled, but not started before the first release; started once it exists', () => {
  const units = join(base, 'units')
  mkdirSync(units)
  // systemd and nginx take no quoting of deploy-path: settings/setup.ts refuses anything but a plain path.
  const dp = join(plain, 'srv')
  const p = { app: 'mysite', user: 'root', deployPath: dp }
  const input = r.unitsInput(files.socketUnit(p), files.serviceUnit(p, 'mysite.wsgi'))
  const first = sh(r.installUnits('mysite', dp, { socket: true, service: true }, units), input)
  expect(first.stderr).toBe('')
  expect(first.stdout).toContain('the first deploy (gunicorn-service: mysite) starts them')
  expect(readFileSync(join(units, 'mysite.service'), 'utf8')).toBe(files.serviceUnit(p, 'mysite.wsgi'))
  expect(called()).toBe('systemctl daemon-reload\nsystemctl enable -q mysite.socket mysite.service\n')
  // With a release, a changed service restarts (its socket holds the requests).
  mkdirSync(join(dp, 'current/.venv/bin'), { recursive: true })
  writeFileSync(join(dp, 'current/.venv/bin/python'), '#!/bin/sh\n', { mode: 0o755 })
  rmSync(calls)
  expect(sh(r.installUnits('mysite', dp, { socket: false, service: true }, units), input).status).toBe(0)
  expect(called()).toContain('systemctl restart mysite.service')
  expect(called()).not.toContain('mysite.socket mysite.service\nsystemctl restart mysite.socket')
})

test('changed units that do not start: the old units are put back and started again', () => {
  const units = join(base, 'units')
  const dp = join(plain, 'srv')
  const p = { app: 'mysite', user: 'root', deployPath: dp }
  const good = files.serviceUnit(p, 'mysite.wsgi')
  const broken = good.replace('KillMode=mixed', 'KillMode=mixed\nEnvironment=BROKEN=1')
  rmSync(calls, { force: true })
  const out = sh(
    r.installUnits('mysite', dp, { socket: false, service: true }, units),
    r.unitsInput(files.socketUnit(p), broken)
  )
  expect(out.status).not.toBe(0)
  expect(out.stderr).toContain(
    'mysite did not start with the new units: the old units are back and restarted'
  )
  expect(readFileSync(join(units, 'mysite.service'), 'utf8')).toBe(good)
  expect(called().match(/systemctl restart mysite.service/g)).toHaveLength(2)
})

test('units systemd-analyze refuses are not installed', () => {
  const units = join(base, 'units-bad')
  mkdirSync(units)
  const p = { app: 'mysite', user: 'root', deployPath: join(plain, 'srv2') }
  const service = files.serviceUnit(p, 'mysite.wsgi').replace('Type=notify', 'Type=bogus')
  const out = sh(
    r.installUnits('mysite', p.deployPath, { socket: true, service: true }, units),
    r.unitsInput(files.socketUnit(p), service)
  )
  expect(out.status).not.toBe(0)
  expect(out.stderr).toContain('systemd-analyze verify refused the units')
  expect(readdirSync(units)).toEqual([])
  expect(called()).toBe('')
})
