/**
 * The server setup guide in README.md, taken out of the README as written and checked with the real tools:
 * the nginx server block with `nginx -t` and then served by a real nginx (self-signed certificate made here,
 * ports moved to free loopback ones, a local upstream standing in for Gunicorn); the systemd units with
 * `systemd-analyze verify` (no warning allowed; no systemd is booted); the sudoers file with `visudo -cf` and
 * against the sudo commands the action runs; the Django settings with `check --deploy` and Django's test client on
 * the server-side Django versions; the known-hosts commands against a real sshd (sandbox/target.ts) on a port
 * other than 22. Each block is found by its first line (`# /etc/nginx/sites-available/mysite`…).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { request as httpRequest } from 'node:http'
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { INPUTS } from '../../src/settings.js'
import { djangoVersions, REPO_ROOT } from '../helpers/django.js'
import { README, readmeBlock as block } from '../helpers/readme.js'
import { freePorts, startTarget, type Target } from '../../sandbox/target.js'

// Read before the temp dir is made: a missing Django fails the file here, leaving nothing behind.
const SERVER_DJANGO = djangoVersions().filter(v => v.version !== '3.2')
const base = mkdtempSync(join(tmpdir(), 'dd-guide-'))
// nginx's workers (nobody) read the static files and the certificate's directory is walked by the master only.
chmodSync(base, 0o755)

afterAll(() => rmSync(base, { recursive: true, force: true }))

describe('nginx server block', () => {
  const dir = join(base, 'nginx')
  const site = block('# /etc/nginx/sites-available/mysite')
  let nginx: ChildProcess | undefined
  let upstream: Server | undefined
  let seen: IncomingHttpHeaders | undefined

  // The README's block with the certificate made here and /srv/mysite under the temp dir; ports when given.
  function siteConf(ports?: { http: number; https: number; upstream: number }): string {
    let conf = site
      .replace('/etc/letsencrypt/live/mysite/fullchain.pem', join(dir, 'cert.pem'))
      .replace('/etc/letsencrypt/live/mysite/privkey.pem', join(dir, 'key.pem'))
      .replaceAll('/srv/mysite/', join(dir, 'srv/mysite/') + '/')
    if (ports) {
      conf = conf
        .replace(/^\s*listen \[::\]:(80|443).*\n/gm, '')
        .replace(/listen 80;/, `listen 127.0.0.1:${ports.http};`)
        .replace(/listen 443 ssl;/, `listen 127.0.0.1:${ports.https} ssl;`)
        .replace('server unix:/run/mysite.sock', `server 127.0.0.1:${ports.upstream}`)
        // the redirect names the public port; here it is the test's port
        .replace(
          'return 301 https://$host$request_uri;',
          `return 301 https://$host:${ports.https}$request_uri;`
        )
    }
    return conf
  }

  function mainConf(siteText: string): string {
    return [
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log;`,
      'events { worker_connections 64; }',
      'http {',
      '  include /etc/nginx/mime.types;',
      `  access_log ${dir}/access.log;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(t => `  ${t}_temp_path ${dir}/${t};`),
      siteText,
      '}'
    ].join('\n')
  }

  beforeAll(() => {
    mkdirSync(join(dir, 'srv/mysite/static'), { recursive: true })
    mkdirSync(join(dir, 'srv/mysite/shared/media'), { recursive: true })
    writeFileSync(join(dir, 'srv/mysite/static/app.css'), 'body { color: green }\n')
    writeFileSync(join(dir, 'srv/mysite/shared/media/upload.txt'), 'uploaded\n')
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=mysite.example.com',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem')
      ],
      { stdio: 'pipe' }
    )
  })

  afterAll(async () => {
    if (nginx?.pid) {
      try {
        process.kill(nginx.pid, 'SIGQUIT')
      } catch {
        /* already gone */
      }
      await new Promise(r => (nginx!.exitCode !== null ? r(null) : nginx!.once('exit', r)))
    }
    await new Promise(r => (upstream ? upstream.close(r) : r(null)))
  })

  test('has the parts the guide promises', () => {
    expect(site).toMatch(/listen 443 ssl;/)
    expect(site).toMatch(/return 301 https:\/\/\$host\$request_uri;/)
    expect(site).toMatch(/ssl_certificate \/etc\/letsencrypt\/live\/mysite\/fullchain\.pem;/)
    expect(site).toMatch(/location \/static\/ \{\s*alias \/srv\/mysite\/static\/;/)
    expect(site).toMatch(/location \/media\/ \{\s*alias \/srv\/mysite\/shared\/media\/;/)
    expect(site).toMatch(/proxy_set_header X-Forwarded-Proto \$scheme;/)
    expect(site).toMatch(/proxy_set_header Host \$host;/)
  })

  test('nginx -t accepts it as written (certificate paths aside)', () => {
    writeFileSync(join(dir, 'nginx.conf'), mainConf(siteConf()))
    const r = spawnSync(
      'nginx',
      ['-t', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
      {
        encoding: 'utf8'
      }
    )
    expect(r.stderr).toContain('test is successful')
    expect(r.status).toBe(0)
  })

  test('served by nginx: HTTP redirects to HTTPS, static and media come from disk, the app sees X-Forwarded-Proto', async () => {
    const [http, https, upstreamPort] = await freePorts('127.0.0.1', 3)
    const ports = { http, https, upstream: upstreamPort }
    upstream = createServer((req, res) => {
      seen = req.headers
      res.end('from gunicorn\n')
    })
    await new Promise<void>(r => upstream!.listen(ports.upstream, '127.0.0.1', r))
    writeFileSync(join(dir, 'nginx.conf'), mainConf(siteConf(ports)))
    nginx = spawn(
      'nginx',
      ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', 'daemon off;'],
      {
        stdio: 'ignore'
      }
    )
    const get = (scheme: 'http' | 'https', port: number, path: string) =>
      new Promise<{ status: number; location?: string; body: string }>((resolve, reject) => {
        const req = (scheme === 'https' ? httpsRequest : httpRequest)(
          {
            host: '127.0.0.1',
            port,
            path,
            headers: { Host: 'mysite.example.com' },
            rejectUnauthorized: false,
            servername: 'mysite.example.com'
          },
          res => {
            let body = ''
            res.on('data', c => (body += c))
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, location: res.headers.location, body })
            )
          }
        )
        req.on('error', reject)
        req.end()
      })
    // nginx takes a moment to bind
    for (let i = 0; i < 50; i++) {
      if (existsSync(join(dir, 'nginx.pid'))) break
      await new Promise(r => setTimeout(r, 100))
    }
    await new Promise(r => setTimeout(r, 200))
    expect(await get('http', ports.http, '/admin/?a=1')).toMatchObject({
      status: 301,
      location: `https://mysite.example.com:${ports.https}/admin/?a=1`
    })
    expect(await get('https', ports.https, '/static/app.css')).toMatchObject({
      status: 200,
      body: 'body { color: green }\n'
    })
    expect(await get('https', ports.https, '/media/upload.txt')).toMatchObject({
      status: 200,
      body: 'uploaded\n'
    })
    expect(await get('https', ports.https, '/accounts/login/')).toMatchObject({
      status: 200,
      body: 'from gunicorn\n'
    })
    expect(seen).toMatchObject({
      'x-forwarded-proto': 'https',
      host: 'mysite.example.com',
      'x-forwarded-for': '127.0.0.1'
    })
  })
})

describe('systemd units', () => {
  const socket = block('# /etc/systemd/system/mysite.socket')
  const service = block('# /etc/systemd/system/mysite.service')

  test('the service starts Gunicorn through current, and both units have [Unit] and [Install]', () => {
    for (const unit of [socket, service]) {
      expect(unit).toMatch(/^\[Unit\]$/m)
      expect(unit).toMatch(/^\[Install\]$/m)
    }
    expect(service).toContain(
      'ExecStart=/srv/mysite/current/.venv/bin/python -m gunicorn --chdir /srv/mysite/current '
    )
    expect(README).toContain(
      '/srv/mysite/current/.venv/bin/python /srv/mysite/current/.venv/bin/gunicorn --chdir /srv/mysite/current --pid /run/mysite/gunicorn.pid'
    )
  })

  test('systemd-analyze verify accepts both, without a warning', () => {
    // verify checks that ExecStart's program exists: the deploy path moves under the temp dir, with a python there.
    const dir = join(base, 'systemd')
    const root = join(dir, 'srv/mysite')
    mkdirSync(join(root, 'current/.venv/bin'), { recursive: true })
    writeFileSync(join(root, 'current/.venv/bin/python'), '#!/bin/sh\n', { mode: 0o755 })
    writeFileSync(join(dir, 'mysite.socket'), socket)
    writeFileSync(join(dir, 'mysite.service'), service.replaceAll('/srv/mysite', root))
    const r = spawnSync('systemd-analyze', ['verify', './mysite.socket', './mysite.service'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000
    })
    expect(r.error).toBeUndefined()
    expect(r.stdout + r.stderr).toBe('')
    expect(r.status).toBe(0)
  })
})

describe('sudoers file', () => {
  const sudoers = block('# /etc/sudoers.d/mysite')

  test('visudo -cf parses it', () => {
    const file = join(base, 'sudoers-deploy')
    writeFileSync(file, sudoers, { mode: 0o440 })
    const r = spawnSync('visudo', ['-cf', file], { encoding: 'utf8' })
    expect(r.stdout + r.stderr).toContain('parsed OK')
    expect(r.status).toBe(0)
  })

  test('allows exactly the sudo commands the action runs, with the paths sudo resolves', () => {
    const withSudo = [INPUTS['nginx-test-command'].default, INPUTS['nginx-reload-command'].default]
    const nginx = withSudo.map(c => c.replace(/^sudo -n /, ''))
    expect(nginx).toEqual(['nginx -t', 'nginx -s reload'])
    const systemctl = [
      ...cmd
        .reloadService(cmd.layout('/srv/mysite'), 'mysite', 'r1')
        .matchAll(/sudo -n systemctl (\w+) "\$unit"/g)
    ].map(m => `systemctl ${m[1]} mysite`)
    expect(systemctl.sort()).toEqual([
      'systemctl reload mysite',
      'systemctl restart mysite',
      'systemctl start mysite'
    ])
    const allowed = sudoers
      .split('\n')
      .filter(l => l.startsWith('deploy '))
      .flatMap(l => l.replace(/^deploy ALL=\(root\) NOPASSWD: /, '').split(/,\s*/))
    expect(allowed.sort()).toEqual(
      [...nginx.map(c => `/usr/sbin/${c}`), ...systemctl.map(c => `/usr/bin/${c}`)].sort()
    )
    // sudo matches the program it finds on its secure_path (Debian's default): the paths the lines must name.
    const securePath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    const found = (prog: string) =>
      execFileSync('sh', ['-c', `command -v ${prog}`], { env: { PATH: securePath }, encoding: 'utf8' }).trim()
    expect([found('nginx'), found('systemctl')]).toEqual(['/usr/sbin/nginx', '/usr/bin/systemctl'])
  })
})

describe.each(SERVER_DJANGO)('Django $version settings from the guide', ({ python, env }) => {
  const settingsBlock = block('# mysite/settings.py (production)')
  let site: string

  beforeAll(() => {
    site = join(base, `django-${env.PYTHONPATH ? env.PYTHONPATH.split('/').slice(-5, -4)[0] : 'system'}`)
    mkdirSync(site, { recursive: true })
    execFileSync(python, ['-m', 'django', 'startproject', 'mysite', '.'], {
      cwd: site,
      env: { ...process.env, ...env }
    })
    const settings = join(site, 'mysite/settings.py')
    writeFileSync(
      settings,
      readFileSync(settings, 'utf8') +
        "\nSECRET_KEY = 'k3J9v!q2Lz8#pX4m@wR7tY1uE6oI0aS5dF-hG_jKlZxCvBnM%q-long-enough-for-check'\n" +
        settingsBlock
    )
    execFileSync(python, ['manage.py', 'migrate', '-v', '0'], {
      cwd: site,
      env: { ...process.env, ...env }
    })
  })

  test('check --deploy passes with them', () => {
    const r = spawnSync(python, ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'], {
      cwd: site,
      env: { ...process.env, ...env },
      encoding: 'utf8'
    })
    expect(r.stderr + r.stdout).toContain('System check identified no issues')
    expect(r.status).toBe(0)
  })

  test('behind nginx: X-Forwarded-Proto https is trusted, plain HTTP is redirected, the HTTPS origin passes CSRF', () => {
    const probe = `
import django, os
os.environ['DJANGO_SETTINGS_MODULE'] = 'mysite.settings'
django.setup()
from django.test import Client
from django.conf import settings
settings.ALLOWED_HOSTS.append('testserver')
plain = Client().get('/admin/login/', HTTP_HOST='mysite.example.com')
proxied = Client().get('/admin/login/', HTTP_HOST='mysite.example.com', HTTP_X_FORWARDED_PROTO='https')
c = Client(enforce_csrf_checks=True)
page = c.get('/admin/login/', HTTP_HOST='mysite.example.com', HTTP_X_FORWARDED_PROTO='https')
token = page.cookies['csrftoken'].value
post = c.post('/admin/login/', {'csrfmiddlewaretoken': token, 'username': 'x', 'password': 'y'},
    HTTP_HOST='mysite.example.com', HTTP_X_FORWARDED_PROTO='https', HTTP_ORIGIN='https://mysite.example.com')
print(plain.status_code, plain.get('Location'), proxied.status_code, post.status_code)
`
    const out = execFileSync(python, ['-c', probe], {
      cwd: site,
      env: { ...process.env, ...env },
      encoding: 'utf8'
    })
    // 301 to https; 200 for the login page over "https"; the POST is checked (200: form error), not a 403 CSRF failure
    expect(out.trim()).toBe('301 https://mysite.example.com/admin/login/ 200 200')
  })

  test('the health view from the guide reads the database, writes nothing, and fails when it cannot open it', () => {
    writeFileSync(join(site, 'mysite/health.py'), block('# mysite/health.py'))
    const urls = join(site, 'mysite/urls.py')
    if (!readFileSync(urls, 'utf8').includes('health.health'))
      writeFileSync(
        urls,
        `${readFileSync(urls, 'utf8')}\nfrom . import health\nurlpatterns.append(path("health/", health.health))\n`
      )
    const probe = `
import django, os
os.environ['DJANGO_SETTINGS_MODULE'] = 'mysite.settings'
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
get = lambda: Client().get('/health/', HTTP_HOST='mysite.example.com', HTTP_X_FORWARDED_PROTO='https')
with CaptureQueriesContext(connection) as queries:
    ok = get()
print(ok.status_code, ok.content.decode(), [q['sql'] for q in queries])
connection.close()
connection.settings_dict['NAME'] = '/nonexistent/dir/db.sqlite3'
try:
    print(get().status_code)
except Exception as e:
    print(type(e).__name__)
`
    const out = execFileSync(python, ['-c', probe], {
      cwd: site,
      env: { ...process.env, ...env },
      encoding: 'utf8'
    })
    expect(out.trim().split('\n')).toEqual([`200 ok ['SELECT 1']`, 'OperationalError'])
  })
})

describe('known-hosts, against a real sshd on a port other than 22', () => {
  const lines = block('# known-hosts: on your machine, then on the server')
    .split('\n')
    .filter(l => l.startsWith('ssh-'))
  let target: Target | undefined

  afterAll(async () => {
    await target?.stop()
  })

  test("the guide's commands give a [host]:port line whose fingerprint is the server's own", async () => {
    target = await startTarget({ name: 'ddguide' })
    expect(target.sshPort).not.toBe(22)
    const file = join(base, 'known_hosts')
    const hostPub = join(target.root, 'sshd/host_ed25519_key.pub')
    const sh = (line: string) =>
      execFileSync(
        'bash',
        [
          '-c',
          line
            .replace(/\s+#.*$/, '')
            .replace('-p 22', `-p ${target!.sshPort}`)
            .replace('web1.example.com', target!.host)
            .replace('> known_hosts', `> ${file}`)
            .replace(/-lf known_hosts$/, `-lf ${file}`)
            .replace('/etc/ssh/ssh_host_ed25519_key.pub', hostPub)
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }
      )
    expect(lines).toHaveLength(3)
    sh(lines[0])
    const line = readFileSync(file, 'utf8').trim()
    expect(line).toMatch(
      new RegExp(`^\\[${target.host.replace(/\./g, '\\.')}\\]:${target.sshPort} ssh-ed25519 AAAA`)
    )
    expect(line).toBe(target.knownHosts)
    const scanned = sh(lines[1]).split(/\s+/)[1]
    const onServer = sh(lines[2]).split(/\s+/)[1]
    expect(scanned).toMatch(/^SHA256:/)
    expect(scanned).toBe(onServer)
    expect(onServer).toBe(target.fingerprint)
    // the README's warning: a plain `host key` line does not match that port
    writeFileSync(file, line.replace(/^\[([^\]]+)\]:\d+/, '$1') + '\n')
    const plain = spawnSync('ssh-keygen', ['-F', `[${target.host}]:${target.sshPort}`, '-f', file])
    expect(plain.status).toBe(1)
    writeFileSync(file, line + '\n')
    expect(spawnSync('ssh-keygen', ['-F', `[${target.host}]:${target.sshPort}`, '-f', file]).status).toBe(0)
  })
})

describe('Gunicorn from the system packages, started as the README writes it', () => {
  const root = join(base, 'gunicorn')
  const srv = join(root, 'srv/mysite')
  const pidfile = join(root, 'gunicorn.pid')
  const masters = (): number[] =>
    [pidfile, `${pidfile}.2`]
      .filter(f => existsSync(f))
      .map(f => Number(readFileSync(f, 'utf8').trim()))
      .filter(pid => existsSync(`/proc/${pid}`))
  const release = (name: string): void => {
    const dir = join(srv, 'releases', name)
    cpSync(join(REPO_ROOT, 'example'), dir, {
      recursive: true,
      filter: f => !/db\.sqlite3$|__pycache__|\/\.env$|\/vendor$/.test(f)
    })
    writeFileSync(join(dir, 'VERSION'), `${name}\n`)
    // As the action makes it with venv-options: --system-site-packages: Debian's Django and Gunicorn, no bin/gunicorn.
    execFileSync('/usr/bin/python3', [
      '-m',
      'venv',
      '--system-site-packages',
      '--without-pip',
      join(dir, '.venv')
    ])
    expect(existsSync(join(dir, '.venv/bin/gunicorn'))).toBe(false)
  }
  const point = (name: string): void => {
    symlinkSync(`releases/${name}`, join(srv, 'current.tmp'))
    renameSync(join(srv, 'current.tmp'), join(srv, 'current'))
  }
  const version = async (port: number): Promise<string | undefined> =>
    fetch(`http://127.0.0.1:${port}/version/`).then(
      r => r.text(),
      () => undefined
    )
  const until = async (what: string, ok: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise(r => setTimeout(r, 200)))
      if (await ok()) return
    throw new Error(
      `${what} within ${ms} ms; gunicorn log: ${readFileSync(join(root, 'gunicorn.log'), 'utf8').slice(-2000)}`
    )
  }

  afterAll(async () => {
    for (const pid of masters()) process.kill(pid, 'SIGTERM')
    await until('gunicorn stopped', () => masters().length === 0, 15_000).catch(() => undefined)
  })

  test('it serves from current, and a USR2 re-exec serves the next release', async () => {
    const line = /^cd \/srv\/mysite\/current && \S+ \/usr\/bin\/gunicorn .*$/m.exec(README)?.[0]
    expect(line).toBeDefined()
    const [port] = await freePorts('127.0.0.1', 1)
    const command = line!
      .replaceAll('/srv/mysite', srv)
      .replace('/run/mysite/gunicorn.pid', pidfile)
      .replace('127.0.0.1:8000', `127.0.0.1:${port}`)
      .replace(' --daemon', ` --daemon --workers 2 --log-file ${join(root, 'gunicorn.log')}`)
    release('r1')
    release('r2')
    point('r1')
    execFileSync('sh', ['-c', command], {
      env: { PATH: '/usr/bin:/bin', ALLOWED_HOSTS: '127.0.0.1', DATABASE_PATH: join(root, 'db.sqlite3') }
    })
    await until('r1 answers', async () => (await version(port)) === 'r1')
    const [old] = masters()
    // The deploy's switch, then the re-exec it sends when the virtualenv changed: the new master must serve r2.
    point('r2')
    process.kill(old, 'SIGUSR2')
    await until('a new master', () => masters().some(pid => pid !== old))
    const fresh = masters().find(pid => pid !== old)!
    await until('the new master has workers', () => {
      const children = readFileSync(`/proc/${fresh}/task/${fresh}/children`, 'utf8').trim()
      return children.split(/\s+/).filter(Boolean).length === 2
    })
    process.kill(old, 'SIGTERM')
    await until('only r2 answers', async () => !existsSync(`/proc/${old}`) && (await version(port)) === 'r2')
    for (let i = 0; i < 5; i++) expect(await version(port)).toBe('r2')
    // The new master runs the release's virtualenv through current, and the system's Gunicorn.
    const argv = readFileSync(`/proc/${fresh}/cmdline`, 'utf8').split('\0')
    expect(argv.slice(0, 2)).toEqual([join(srv, 'current/.venv/bin/python'), '/usr/bin/gunicorn'])
  })
})
