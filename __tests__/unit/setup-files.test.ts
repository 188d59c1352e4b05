/**
 * setup's managed files as strings (header, sudoers, units, nginx site per TLS mode), checked by the tools that
 * read them (systemd-analyze verify, nginx -t with a throwaway configuration), and the setup inputs refused
 * with a clear error, hostile values included.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as files from '../../src/setup/files.js'
import { loadSettings, SettingsError, type SetupSettings } from '../../src/settings.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-setup-files-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key'), '-C', 't'])
execFileSync(
  'openssl',
  [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=mysite.example.com',
    '-addext',
    'subjectAltName=DNS:mysite.example.com,DNS:www.example.com',
    '-keyout',
    join(dir, 'tls.key'),
    '-out',
    join(dir, 'tls.crt')
  ],
  { stdio: 'ignore' }
)
const KEY = readFileSync(join(dir, 'key'), 'utf8')
const CERT = readFileSync(join(dir, 'tls.crt'), 'utf8')
const TLS_KEY = readFileSync(join(dir, 'tls.key'), 'utf8')

const BASE: Record<string, string> = {
  mode: 'setup',
  hosts: 'web1',
  user: 'deploy',
  'ssh-key': KEY,
  'setup-ssh-key': KEY,
  'host-fingerprint': `SHA256:${'A'.repeat(43)}`,
  'deploy-path': '/srv/mysite',
  domains: 'mysite.example.com www.example.com',
  'wsgi-module': 'mysite.wsgi'
}

function load(inputs: Record<string, string>, repo = 'o/mysite') {
  const all = { ...BASE, ...inputs }
  return loadSettings({
    input: n => all[n as string] ?? '',
    env: { GITHUB_WORKSPACE: dir, GITHUB_EVENT_NAME: 'workflow_dispatch', GITHUB_REPOSITORY: repo }
  })
}

function problems(inputs: Record<string, string>, repo?: string): string[] {
  try {
    load(inputs, repo)
    return []
  } catch (e) {
    if (!(e instanceof SettingsError)) throw e
    return e.problems.map(p => `${p.where}: ${p.message}`)
  }
}

const setup = (inputs: Record<string, string> = {}): SetupSettings => load(inputs).setup!

describe('the header', () => {
  test('its sum covers the rest of the file; a #! line stays first', () => {
    const c = files.withHeader('mysite', 'a = 1\n')
    expect(c.split('\n')[0]).toMatch(/^# Managed by django-deploy \(setup of app mysite\)/)
    const stamp = /# django-deploy-sha256: ([0-9a-f]{64})/.exec(c)![1]
    expect(files.bodyOf(c)).toBe('a = 1\n')
    expect(files.sha256(files.bodyOf(c))).toBe(stamp)
    const hook = files.deployHook('mysite')
    expect(hook.startsWith('#!/bin/sh\n# Managed by django-deploy')).toBe(true)
    expect(files.sha256(files.bodyOf(hook))).toBe(/sha256: ([0-9a-f]{64})/.exec(hook)![1])
  })
})

describe('rendered files', () => {
  const p = { app: 'mysite', user: 'deploy', deployPath: '/srv/mysite' }

  test('sudoers: the nginx test and reload, and reload, restart and start of the app only', () => {
    expect(files.bodyOf(files.sudoers(p))).toBe(
      'deploy ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload\n' +
        'deploy ALL=(root) NOPASSWD: /usr/bin/systemctl reload mysite, /usr/bin/systemctl restart mysite, /usr/bin/systemctl start mysite\n'
    )
  })

  test('units: gunicorn through current, no start before a release, and systemd-analyze verify finds nothing', () => {
    const service = files.serviceUnit(p, 'mysite.wsgi')
    expect(service).toContain(
      'ExecStart=/srv/mysite/current/.venv/bin/python -m gunicorn --chdir /srv/mysite/current mysite.wsgi:application'
    )
    expect(service).toContain('ConditionPathExists=/srv/mysite/current')
    expect(files.socketUnit(p)).toContain('ConditionPathExists=/srv/mysite/current')
    expect(files.socketUnit(p)).toContain('ListenStream=/run/mysite.sock')
    const root = join(dir, 'systemd/srv/mysite')
    mkdirSync(join(root, 'current/.venv/bin'), { recursive: true })
    writeFileSync(join(root, 'current/.venv/bin/python'), '#!/bin/sh\n', { mode: 0o755 })
    const q = { ...p, user: 'root', deployPath: root }
    writeFileSync(join(dir, 'systemd/mysite.socket'), files.socketUnit(q))
    writeFileSync(join(dir, 'systemd/mysite.service'), files.serviceUnit(q, 'mysite.wsgi'))
    const r = spawnSync('systemd-analyze', ['verify', './mysite.socket', './mysite.service'], {
      cwd: join(dir, 'systemd'),
      encoding: 'utf8'
    })
    expect(r.stdout + r.stderr).toBe('')
    expect(r.status).toBe(0)
  })

  /** nginx -t of the site inside a throwaway configuration (its own prefix, pid and logs). */
  function nginxTest(site: string): { status: number | null; out: string } {
    const n = mkdtempSync(join(dir, 'nginx-'))
    const tested = site
      .replace(
        /\/etc\/letsencrypt\/live\/mysite\/fullchain.pem|\/etc\/ssl\/django-deploy\/mysite\/fullchain.pem/,
        join(dir, 'tls.crt')
      )
      .replace(
        /\/etc\/letsencrypt\/live\/mysite\/privkey.pem|\/etc\/ssl\/django-deploy\/mysite\/privkey.pem/,
        join(dir, 'tls.key')
      )
    writeFileSync(join(n, 'site'), tested)
    writeFileSync(
      join(n, 'nginx.conf'),
      `pid ${n}/pid;\nerror_log ${n}/error.log;\nevents {}\nhttp {\n  access_log off;\n  include ${n}/site;\n}\n`
    )
    const r = spawnSync('nginx', ['-t', '-p', n, '-c', join(n, 'nginx.conf')], { encoding: 'utf8' })
    return { status: r.status, out: r.stdout + r.stderr }
  }

  test('acme: HTTP redirects to HTTPS but the challenge; TLS with certbot paths; nginx -t passes', () => {
    const s = setup()
    const site = files.nginxSite(s, '/srv/mysite')
    expect(site).toContain('server_name mysite.example.com www.example.com;')
    expect(site).toContain('return 301 https://$host$request_uri;')
    expect(site).toContain('root /var/www/django-deploy-acme;')
    expect(site).toContain('ssl_certificate /etc/letsencrypt/live/mysite/fullchain.pem;')
    expect(site).toContain('alias /srv/mysite/static/;')
    expect(site).toContain('alias /srv/mysite/shared/media/;')
    expect(site).toContain('proxy_set_header X-Forwarded-Proto $scheme;')
    expect(site).toContain('client_max_body_size 20m;')
    expect(site).toContain('server unix:/run/mysite.sock fail_timeout=0;')
    const r = nginxTest(site)
    expect(r.out).toContain('test is successful')
    const http = files.nginxSite(s, '/srv/mysite', 'http')
    expect(http).not.toContain('443')
    expect(nginxTest(http).status).toBe(0)
  })

  test('tls off: plain HTTP, X-Forwarded-Proto believed from the trusted proxies only; nginx -t passes', () => {
    const s = setup({ tls: 'off', 'trusted-proxies': '10.0.0.5, 10.1.0.0/16' })
    const site = files.nginxSite(s, '/srv/mysite')
    expect(site).not.toContain('ssl_certificate')
    expect(site).toContain('    10.1.0.0/16 1;')
    expect(site).toContain('    "1:https" https;')
    expect(site).toContain('proxy_set_header X-Forwarded-Proto $dd_mysite_proto;')
    expect(nginxTest(site).out).toContain('test is successful')
  })

  test('tls files: the pair installed under /etc/ssl/django-deploy/<app>; nginx -t passes', () => {
    const s = setup({ tls: 'files', 'tls-certificate': CERT, 'tls-key': TLS_KEY })
    const site = files.nginxSite(s, '/srv/mysite')
    expect(site).toContain('ssl_certificate_key /etc/ssl/django-deploy/mysite/privkey.pem;')
    expect(site).not.toContain('acme-challenge')
    expect(nginxTest(site).out).toContain('test is successful')
    // OpenSSL reads a PEM file past the header's comment lines.
    writeFileSync(join(dir, 'headed.pem'), files.pemFile('mysite', TLS_KEY))
    expect(spawnSync('openssl', ['pkey', '-in', join(dir, 'headed.pem'), '-noout']).status).toBe(0)
  })
})

describe('setup inputs', () => {
  test('defaults: app from the repository, tls acme with Let’s Encrypt, the deploy key’s public half', () => {
    const s = setup()
    expect(s.app).toBe('mysite')
    expect(s.tls).toBe('acme')
    expect(s.acmeDirectory).toBe('https://acme-v02.api.letsencrypt.org/directory')
    expect(s.publicKey).toBe(
      `${readFileSync(join(dir, 'key.pub'), 'utf8').split(' ').slice(0, 2).join(' ')} django-deploy`
    )
    expect(s.user).toBe('root')
  })

  test.each([
    ['{ app: ../etc }', { app: '../etc' }, 'input \'app\': "../etc" is not a safe app name'],
    ['{ app: my.site }', { app: 'my.site' }, 'no dot'],
    ['{ app: $(id) }', { app: '$(id)' }, 'is not a safe app name'],
    [
      '{ domains: ok.example.com evil;include }',
      { domains: 'ok.example.com evil;include' },
      '"evil;include" is not a domain name'
    ],
    [
      '{ domains: *.example.com }',
      { domains: '*.example.com' },
      'is a wildcard: tls acme validates over HTTP'
    ],
    ['{ domains:  }', { domains: '' }, "input 'domains': is empty"],
    [
      '{ setup-user: root;id }',
      { 'setup-user': 'root;id' },
      'input \'setup-user\': "root;id" is not a valid user name'
    ],
    ['{ setup-ssh-key:  }', { 'setup-ssh-key': '' }, "input 'setup-ssh-key': is empty"],
    [
      '{ setup-ssh-key: ssh-ed25519 AAAA }',
      { 'setup-ssh-key': 'ssh-ed25519 AAAA' },
      "input 'setup-ssh-key': is not an unencrypted private key"
    ],
    [
      '{ acme-email: a@b.example.com -d evil }',
      { 'acme-email': "a@b.example.com' -d evil" },
      "input 'acme-email'"
    ],
    ['{ tls: off }', { tls: 'off' }, "input 'trusted-proxies': is empty but tls is off"],
    [
      '{ tls: off, trusted-proxies: 10.0.0.1; allow all }',
      { tls: 'off', 'trusted-proxies': '10.0.0.1; allow all' },
      'is not an IP address or CIDR range'
    ],
    ['{ tls: files }', { tls: 'files' }, "input 'tls-certificate': is empty but tls is files"],
    [
      '{ tls: files, tls-certificate: cert, tls-key: key }',
      { tls: 'files', 'tls-certificate': CERT, 'tls-key': KEY },
      "input 'tls-key': is not a PEM private key"
    ],
    ['{ tls: sometimes }', { tls: 'sometimes' }, 'input \'tls\': "sometimes" is not a valid value'],
    ['{ deploy-path: /srv/my site }', { 'deploy-path': '/srv/my site' }, 'setup expects a plain path'],
    ['{ wsgi-module: mysite.wsgi; rm }', { 'wsgi-module': 'mysite.wsgi; rm' }, "input 'wsgi-module'"],
    ['{ max-body-size: 20m; allow all }', { 'max-body-size': '20m; allow all' }, "input 'max-body-size'"],
    ['{ static-url: / }', { 'static-url': '/' }, 'input \'static-url\': "/" is not a URL path prefix'],
    ['{ static-url: /static }', { 'static-url': '/static' }, "the project's STATIC_URL as a path"],
    ['{ media-url: /m/ { root / } }', { 'media-url': '/m/ { root / }' }, "input 'media-url'"],
    ['{ media-url: /../ }', { 'media-url': '/../' }, "input 'media-url'"],
    ['{ media-url: /static/ }', { 'media-url': '/static/' }, 'is the same as static-url (/static/)']
  ])('%s is refused', (_label, inputs, message) => {
    expect(problems(inputs).join('\n')).toContain(message)
  })

  test("static-url and media-url: the site serves the project's prefixes from the deploy path", () => {
    const site = files.nginxSite(
      setup({ 'static-url': '/assets/', 'media-url': '/uploads/files/' }),
      '/srv/mysite'
    )
    expect(site).toContain('location /assets/ {\n        alias /srv/mysite/static/;')
    expect(site).toContain('location /uploads/files/ {\n        alias /srv/mysite/shared/media/;')
    expect(site).not.toContain('location /static/')
  })

  test('a repository name that is no safe app name asks for app', () => {
    expect(problems({}, 'o/My.Site').join('\n')).toContain(
      'the repository\'s name "My.Site" is not a safe app name'
    )
  })

  test('tls files: a certificate that does not cover a domain, and a key of another pair', () => {
    const other = join(dir, 'other')
    execFileSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', other], { stdio: 'ignore' })
    const p = problems({
      tls: 'files',
      'tls-certificate': CERT,
      'tls-key': readFileSync(other, 'utf8'),
      domains: 'mysite.example.com other.example.org'
    })
    expect(p.join('\n')).toContain("input 'tls-key': is not the private key of tls-certificate")
    expect(p.join('\n')).toContain('does not cover the domain other.example.org')
  })

  test('an env-file line that is not KEY=VALUE is named by its number, its text never shown', () => {
    const p = problems({ 'env-file': 'SECRET_KEY=x\nhunter2-the-password\n' })
    expect(p).toEqual([
      "input 'env-file': line 2 is not KEY=VALUE (nor empty, nor a # comment); expected lines like SECRET_KEY=…"
    ])
  })

  test('wsgi-module found beside manage.py when there is one wsgi.py', () => {
    mkdirSync(join(dir, 'proj/mysite'), { recursive: true })
    writeFileSync(join(dir, 'proj/mysite/wsgi.py'), '')
    const s = load({ 'wsgi-module': '', 'working-directory': 'proj' }).setup!
    expect(s.wsgiModule).toBe('mysite.wsgi')
  })
})
