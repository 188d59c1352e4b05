/**
 * The README's reference of what setup does by hand is what setup writes: its sudoers file, systemd units and
 * nginx site are `src/setup/files.ts`'s renderings for app mysite, user deploy, /srv/mysite and
 * mysite.example.com (tls acme), without setup's two header lines. A change to either side fails here.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as files from '../../src/setup/files.js'
import { loadSettings } from '../../src/settings.js'
import { readmeBlock } from '../helpers/readme.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-readme-setup-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key'), '-C', 't'])
// A project beside the settings: setup reads the WSGI module from its one <package>/wsgi.py.
mkdirSync(join(dir, 'mysite'))
writeFileSync(join(dir, 'mysite/wsgi.py'), '')

const KEY = readFileSync(join(dir, 'key'), 'utf8')
const all: Record<string, string> = {
  mode: 'setup',
  hosts: 'mysite.example.com',
  user: 'deploy',
  'ssh-key': KEY,
  'setup-ssh-key': KEY,
  'host-fingerprint': `SHA256:${'A'.repeat(43)}`,
  'deploy-path': '/srv/mysite',
  app: 'mysite',
  domains: 'mysite.example.com'
}
const settings = loadSettings({
  input: n => all[n as string] ?? '',
  env: { GITHUB_WORKSPACE: dir, GITHUB_EVENT_NAME: 'workflow_dispatch', GITHUB_REPOSITORY: 'o/mysite' }
})
const s = settings.setup!
const p: files.SetupPaths = { app: s.app, user: settings.ssh.user, deployPath: settings.deploy.path }

/** The README block under `marker` without its marker line: what follows setup's header in its file. */
const readme = (marker: string): string => readmeBlock(marker).split('\n').slice(1).join('\n')

test('the settings are the README names: tls acme, the WSGI module of the project', () => {
  expect([s.app, s.tls, s.wsgiModule, p.user, p.deployPath]).toEqual([
    'mysite',
    'acme',
    'mysite.wsgi',
    'deploy',
    '/srv/mysite'
  ])
})

test.each([
  ['# /etc/sudoers.d/mysite', () => files.sudoers(p)],
  ['# /etc/systemd/system/mysite.socket', () => files.socketUnit(p)],
  ['# /etc/systemd/system/mysite.service', () => files.serviceUnit(p, s.wsgiModule)],
  ['# /etc/nginx/sites-available/mysite', () => files.nginxSite(s, p.deployPath)]
])('README %s is what setup writes after its header', (marker, render) => {
  const written = render()
  expect(written).toContain(files.HEADER_FIRST)
  expect(readme(marker)).toBe(files.bodyOf(written))
})
