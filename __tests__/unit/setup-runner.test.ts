/**
 * mode: setup's runner through the scripted fake transport: what runs on a bare host, that a second run with
 * everything in place runs nothing that writes, that a refused item or an unsupported OS stops the host before
 * any change, that a dry run only reads, that a failing step stops the steps after it, and that a secret never
 * reaches a script.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Log } from '../../src/deploy/run.js'
import { renderSummary } from '../../src/github/summary.js'
import { sha256, bodyOf } from '../../src/setup/files.js'
import { desired, inspected } from '../../src/setup/plan.js'
import { SetupRunner } from '../../src/setup/run.js'
import { loadSettings, type Settings } from '../../src/settings.js'
import { FakeFleet, type FakeScript } from '../helpers/fake-remote.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-setup-runner-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key'), '-C', 't'])
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'admin'), '-C', 'a'])

const SECRET = 'SECRET_KEY=s3cr3t-value-never-in-a-script'

function settings(extra: Record<string, string> = {}): Settings {
  const inputs: Record<string, string> = {
    mode: 'setup',
    hosts: 'web1',
    user: 'deploy',
    'ssh-key': readFileSync(join(dir, 'key'), 'utf8'),
    'setup-ssh-key': readFileSync(join(dir, 'admin'), 'utf8'),
    'host-fingerprint': `SHA256:${'A'.repeat(43)}`,
    'deploy-path': '/srv/mysite',
    app: 'mysite',
    domains: 'mysite.example.com',
    'env-file': `${SECRET}\nDEBUG=0`,
    'wsgi-module': 'mysite.wsgi',
    ...extra
  }
  return loadSettings({
    input: n => inputs[n as string] ?? '',
    env: { GITHUB_WORKSPACE: dir, GITHUB_EVENT_NAME: 'workflow_dispatch', GITHUB_REPOSITORY: 'o/mysite' }
  })
}

const lines: string[] = []
const log: Log = {
  startGroup() {},
  endGroup() {},
  info: m => void lines.push(m),
  warning: m => void lines.push(`warning: ${m}`),
  output: m => void lines.push(m)
}
beforeEach(() => (lines.length = 0))

/** inspect's answer for a host where each managed file is as `content(i)` says (undefined: absent). */
function facts(
  s: Settings,
  o: { os?: string; bare?: boolean; content?: (i: number, desired: string) => string | undefined } = {}
): string {
  const d = desired(s.setup!, 'deploy', '/srv/mysite')
  const out = [`os=${o.os ?? 'debian 12'}`]
  if (o.bare) out.push('missing=nginx', 'missing=certbot')
  else {
    out.push('user=yes', 'key=yes', 'layout=ok', 'enabled=yes', 'site-link=yes')
    out.push(`cert-server=${s.setup!.acmeDirectory}`, 'cert-domain=mysite.example.com')
  }
  inspected(d).forEach((m, i) => {
    const c = o.bare ? undefined : o.content ? o.content(i, m.content) : m.content
    if (c === undefined) {
      out.push(`file=${i} absent`)
      return
    }
    const stamp = /# django-deploy-sha256: ([0-9a-f]{64})/.exec(c)?.[1] ?? '-'
    out.push(`file=${i} present ${sha256(c)} ${stamp} ${sha256(bodyOf(c))} ${m.mode} ${m.owner} ${m.owner}`)
  })
  return out.join('\n')
}

async function setup(s: Settings, inspect: string, more: FakeScript = {}) {
  const fleet = new FakeFleet(
    { web1: { releases: [] } },
    {
      ...more,
      answers: [{ host: 'web1', step: 'inspect', output: inspect }, ...(more.answers ?? [])]
    }
  )
  const result = await new SetupRunner(s, log, fleet.connect).run()
  return { fleet, result, steps: fleet.stepsOn('web1') }
}

const WRITES = ['packages', 'user', 'authorized-keys', 'layout', 'units', 'certificate', 'nginx site']

test('a bare host: every item created, in order, the HTTP-only site before certbot and the TLS site after', async () => {
  const s = settings()
  const { fleet, result, steps } = await setup(s, facts(s, { bare: true }))
  expect(result.error).toBeUndefined()
  expect(steps.filter(x => !x.startsWith('diff '))).toEqual([
    'inspect',
    'packages',
    'user',
    'authorized-keys',
    'layout',
    'shared/.env',
    'sudoers',
    'certbot deploy hook',
    'units',
    'nginx site (http, for the challenge)',
    'certificate',
    'nginx site'
  ])
  expect(result.hosts[0].changed).toBe(true)
  expect(result.hosts[0].items.every(i => i.status === 'created')).toBe(true)
  // The sudoers file is checked by visudo before it is installed.
  expect(fleet.calls.find(c => c.steps.includes('sudoers'))?.script).toContain('visudo -cf "$new"')
  expect(result.siteUrl).toBe('https://mysite.example.com/')
})

test('a second run with everything in place: no step writes, every item unchanged, and the log says so', async () => {
  const s = settings()
  const { result, steps } = await setup(s, facts(s))
  expect(steps).toEqual(['inspect'])
  expect(result.hosts[0].items.map(i => i.status).every(st => st === 'unchanged')).toBe(true)
  expect(result.hosts[0].changed).toBe(false)
  expect(lines).toContain('web1: no changes: every item is as setup would make it')
})

test('a managed nginx site edited by hand: refused with its diff, nothing written', async () => {
  const s = settings()
  const site = inspected(desired(s.setup!, 'deploy', '/srv/mysite')).length - 1
  const edited = (i: number, c: string) =>
    i === site ? c.replace('client_max_body_size 20m', 'client_max_body_size 1g') : c
  const { result, steps } = await setup(s, facts(s, { content: edited }), {
    answers: [
      {
        host: 'web1',
        step: 'diff nginx site mysite',
        output: '-    client_max_body_size 1g;\n+    client_max_body_size 20m;'
      }
    ]
  })
  expect(result.error).toMatch(
    /refused, nothing was changed: nginx site mysite: .*edited by hand.*setup-overwrite/
  )
  expect(steps.filter(x => WRITES.includes(x))).toEqual([])
  const item = result.hosts[0].items.find(i => i.item === 'nginx site mysite')!
  expect(item.status).toBe('refused')
  expect(item.diff).toContain('client_max_body_size 1g')
})

test('the same with setup-overwrite: the site is replaced', async () => {
  const s = settings({ 'setup-overwrite': 'true' })
  const site = inspected(desired(s.setup!, 'deploy', '/srv/mysite')).length - 1
  const edited = (i: number, c: string) => (i === site ? `${c}# mine\n` : c)
  const { result, steps } = await setup(s, facts(s, { content: edited }))
  expect(result.error).toBeUndefined()
  expect(steps.filter(x => WRITES.includes(x))).toEqual(['nginx site'])
})

test('a file setup never wrote (no header) in the way: refused', async () => {
  const s = settings()
  const { result, steps } = await setup(
    s,
    facts(s, { content: (i, c) => (i === 1 ? 'deploy ALL=(ALL) ALL\n' : c) })
  )
  expect(result.error).toMatch(/sudoers: \/etc\/sudoers.d\/mysite was not written by django-deploy/)
  expect(steps.filter(x => WRITES.includes(x) || x === 'sudoers')).toEqual([])
})

test('an unsupported OS is refused after inspect, before any other step', async () => {
  const s = settings()
  const { result, steps } = await setup(s, facts(s, { os: 'centos 9', bare: true }))
  expect(result.error).toMatch(
    /unsupported operating system "centos 9"; setup supports debian 12\/13, ubuntu 22.04\/24.04/
  )
  expect(steps).toEqual(['inspect'])
})

test('dry run: inspect and the diffs only; the plan lists the steps it would run', async () => {
  const s = settings({ 'dry-run': 'true' })
  const { result, steps } = await setup(s, facts(s, { bare: true }))
  expect(steps.every(x => x === 'inspect' || x.startsWith('diff '))).toBe(true)
  expect(steps).toContain('diff sudoers')
  // A secret is never diffed.
  expect(steps).not.toContain('diff shared/.env')
  expect(result.hosts[0].changed).toBe(false)
  const planned = result.plan![0].batches[0][0].steps
  expect(planned.map(p => p.split('\n')[0])).toContain('# certificate')
  expect(planned.join('\n')).toContain('certbot certonly --non-interactive')
})

test('a failing step stops the steps after it: the site is not touched when the units fail', async () => {
  const s = settings()
  const { result, steps } = await setup(s, facts(s, { bare: true }), {
    fail: [{ host: 'web1', step: 'units', output: 'systemd-analyze verify refused the units' }]
  })
  expect(result.error).toMatch(/step units failed/)
  expect(steps).not.toContain('nginx site')
  expect(steps).not.toContain('certificate')
})

test('the env-file secret reaches the server on stdin only, never in a script or the log', async () => {
  const s = settings()
  const { fleet } = await setup(s, facts(s, { bare: true }))
  expect(fleet.calls.some(c => c.script?.includes('s3cr3t'))).toBe(false)
  expect(fleet.calls.find(c => c.steps.includes('shared/.env'))?.stdin).toContain(SECRET)
  expect(lines.join('\n')).not.toContain('s3cr3t')
})

test('an administrator other than root: every script runs through sudo -n', async () => {
  const s = settings({ 'setup-user': 'admin' })
  const { fleet } = await setup(s, facts(s, { bare: true }))
  for (const c of fleet.calls) expect(c.script).toMatch(/^exec sudo -n \/bin\/sh -c '/)
})

test('a fleet: every host at once, each on its own; a refused host does not stop the other', async () => {
  const s = settings({
    hosts: 'web1, web2',
    'host-fingerprint': `web1=SHA256:${'A'.repeat(43)}, web2=SHA256:${'B'.repeat(43)}`
  })
  const foreign = (i: number, c: string) => (i === 1 ? 'deploy ALL=(ALL) ALL\n' : c)
  const fleet = new FakeFleet(
    { web1: { releases: [] }, web2: { releases: [] } },
    {
      answers: [
        { host: 'web1', step: 'inspect', output: facts(s, { content: foreign }) },
        { host: 'web2', step: 'inspect', output: facts(s, { bare: true }) }
      ]
    }
  )
  const result = await new SetupRunner(s, log, fleet.connect).run()
  expect(fleet.connects.sort()).toEqual(['web1', 'web2'])
  expect(result.error).toMatch(/setup failed on 1 of 2 hosts: refused, nothing was changed: sudoers/)
  expect(fleet.stepsOn('web1').filter(x => WRITES.includes(x))).toEqual([])
  expect(fleet.stepsOn('web2')).toContain('nginx site')
  expect(result.hosts.map(h => [h.host, h.changed])).toEqual([
    ['web1', false],
    ['web2', true]
  ])
})

test('the summary: a table per host and each diff collapsed; a secret never shown', async () => {
  const s = settings()
  const { result } = await setup(s, facts(s, { bare: true }), {
    answers: [
      { host: 'web1', step: 'diff sudoers', output: '+deploy ALL=(root) NOPASSWD: /usr/sbin/nginx -t' }
    ]
  })
  const text = renderSummary({ mode: 'setup', checks: [], setup: result })
  expect(text).toContain('## ✅ Django setup: set up')
  expect(text).toContain('| shared/.env | 🆕 created |')
  expect(text).toContain('<details><summary>diff: sudoers</summary>')
  expect(text).toContain('(a secret: its content is not shown)')
  expect(text).not.toContain('s3cr3t')
})
