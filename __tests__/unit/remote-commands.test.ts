/**
 * The remote commands are run here with the real /bin/sh against a temporary deploy path: what they do is
 * asserted on the file system, and hostile values must stay inert.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, createServer as createNetServer, type Server as NetServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { q, shellLine } from '../../src/remote/quote.js'
import { batch } from '../../src/deploy/batch.js'
import type { Step } from '../../src/deploy/plan.js'

const base = mkdtempSync(join(tmpdir(), 'dd-cmd-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

function sh(script: string, input?: Buffer | string): { code: number; out: string; err: string } {
  const r = spawnSync('/bin/sh', ['-c', script], { input, cwd: base })
  return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() }
}

const HOSTILE = [
  `it's`,
  'a b',
  '$(touch PWNED)',
  '`touch PWNED`',
  '"; touch PWNED; "',
  'x\ny',
  '*',
  '-rf',
  '~root',
  '$HOME',
  '\\'
]

describe('q', () => {
  it.each(HOSTILE)('keeps %j one inert word', value => {
    const r = sh(`printf '%s' ${q(value)}`)
    expect(r.out).toBe(value)
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })
  it('survives the /bin/sh -c wrapper too', () => {
    for (const value of HOSTILE) {
      const line = shellLine(`printf '%s' ${q(value)}`)
      expect(execFileSync('/bin/sh', ['-c', line], { cwd: base }).toString()).toBe(value)
    }
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })
  it('refuses NUL', () => expect(() => q('a\0b')).toThrow(/NUL/))
  it('keeps NAME=value a command word, not a variable assignment, as the first word', () => {
    // unquoted, `PWNED=1 touch x` would run touch with PWNED in its environment: quoted, sh looks for a
    // command literally named `PWNED=1` and fails.
    expect(q('PWNED=1')).toBe(`'PWNED=1'`)
    const r = sh(`${q('PWNED=1')} touch PWNED`)
    expect(r.code).toBe(127)
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
    expect(sh(`printf '%s' ${q('a=b')} ${q('--opt=v')}`).out).toBe('a=b--opt=v')
  })
})

describe('release layout on a hostile deploy path', () => {
  const root = join(base, `deploy $(touch PWNED) it's`)
  const l = cmd.layout(root)
  const tarball = (files: Record<string, string>): Buffer => {
    const src = mkdtempSync(join(base, 'src-'))
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(src, name, '..'), { recursive: true })
      writeFileSync(join(src, name), content)
    }
    return execFileSync('tar', ['-czf', '-', '-C', src, '.'])
  }

  it('prepares, unpacks, links shared paths, switches and reads state', () => {
    expect(sh(cmd.prepare(l, 'v1')).code).toBe(0)
    const up = sh(
      cmd.unpack(l, 'v1', 'abc123'),
      tarball({ 'manage.py': 'x', 'media/logo.png': 'img', 'static/a.css': 'a' })
    )
    expect(up).toMatchObject({ code: 0 })
    expect(readFileSync(join(l.releases, 'v1/REVISION'), 'utf8')).toBe('abc123\n')
    expect(lstatSync(join(l.releases, 'v1/manage.py')).mode & 0o044).toBe(0o044)

    const shared = sh(cmd.linkShared(l, 'v1', ['.env', 'media', 'odd $(touch PWNED)']))
    expect(shared.code).toBe(0)
    expect(shared.out).toContain(`${cmd.WARN} ${l.shared}/.env did not exist`)
    expect(readlinkSync(join(l.releases, 'v1/.env'))).toBe(`${l.shared}/.env`)
    expect(lstatSync(join(l.shared, '.env')).mode & 0o777).toBe(0o600)
    // a shared folder missing on the server is seeded from the release's own copy
    expect(readFileSync(join(l.shared, 'media/logo.png'), 'utf8')).toBe('img')
    expect(lstatSync(join(l.shared, 'odd $(touch PWNED)')).isDirectory()).toBe(true)

    expect(sh(cmd.switchTo(l, 'v1')).code).toBe(0)
    expect(readlinkSync(l.current)).toBe('releases/v1')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out)).toEqual({
      current: 'v1',
      currentLink: 'releases/v1',
      releases: ['v1']
    })
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('refuses to prepare over the live release', () => {
    const r = sh(cmd.prepare(l, 'v1'))
    expect(r.code).toBe(65)
    expect(r.err).toContain('release v1 is the live release')
    expect(existsSync(join(l.releases, 'v1/manage.py'))).toBe(true)
  })

  it('switches atomically and lists releases in upload order', () => {
    for (const r of ['v2', 'v10']) {
      sh(cmd.prepare(l, r))
      sh(cmd.unpack(l, r, r), tarball({ 'manage.py': r }))
    }
    expect(sh(cmd.switchTo(l, 'v10')).code).toBe(0)
    expect(readlinkSync(l.current)).toBe('releases/v10')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out)).toEqual({
      current: 'v10',
      currentLink: 'releases/v10',
      releases: ['v1', 'v2', 'v10']
    })
    expect(sh(cmd.removeCurrent(l)).code).toBe(0)
    expect(existsSync(l.current)).toBe(false)
    sh(cmd.switchTo(l, 'v10'))
  })

  it('cleans up old releases and unused virtualenvs', () => {
    mkdirSync(join(l.venvs, 'old'), { recursive: true })
    mkdirSync(join(l.venvs, 'used'), { recursive: true })
    execFileSync('ln', ['-s', join(l.venvs, 'used'), join(l.releases, 'v10/.venv')])
    expect(sh(cmd.cleanup(l, ['v2', 'v10'], ['v1'])).code).toBe(0)
    expect(existsSync(join(l.releases, 'v1'))).toBe(false)
    expect(existsSync(join(l.releases, 'v2'))).toBe(true)
    expect(existsSync(join(l.venvs, 'used'))).toBe(true)
    expect(existsSync(join(l.venvs, 'old'))).toBe(false)
  })

  it('runs the user command in current and fails with its exit code', () => {
    expect(sh(cmd.userCommand(l.current, 'cat manage.py')).out).toBe('v10')
    expect(sh(cmd.userCommand(l.current, 'exit 3')).code).toBe(3)
  })

  it('holds the lock until stdin closes, and a second holder times out naming the first', () => {
    const holder = join(base, 'holder.sh')
    writeFileSync(holder, cmd.holdLock(l, 5, 'run 1 (release v3)', 't1'))
    // first holder: keep stdin open with a sleeping writer
    const first = spawnSync('/bin/sh', [
      '-c',
      `(sleep 3) | /bin/sh ${q(holder)} & sleep 0.5; /bin/sh -c ${q(cmd.holdLock(l, 1, 'run 2', 't2'))} </dev/null; echo "second=$?"; wait`
    ])
    const out = first.stdout.toString() + first.stderr.toString()
    expect(out).toContain('locked')
    expect(out).toContain('still held after 1 s by: run 1 (release v3)')
    expect(out).toContain('second=75')
    // once the first holder's stdin closed, the lock is free again
    const again = sh(cmd.holdLock(l, 1, 'run 3', 't3'), '')
    expect(again.code).toBe(0)
    // Only `locked`, after the stages it went through (they name what hung, should one hang).
    expect(again.out).toBe(
      ['mkdir', 'open', 'flock', 'take'].map(x => cmd.LOCK_STAGE + x).join('\n') + '\nlocked\n'
    )
  })
})

describe('commands are pure strings', () => {
  const l = cmd.layout('/srv/app')
  it('build the venv from requirements with quoted pip args', () => {
    const s = cmd.venv(l, 'v1', {
      key: 'k1',
      python: 'python3',
      venvOptions: ['--system-site-packages'],
      pipArgs: ['--find-links', 'wheels dir'],
      hasRequirements: true
    })
    expect(s).toContain(`python3 -m venv --system-site-packages /srv/app/venvs/k1`)
    expect(s).toContain(
      `/srv/app/venvs/k1/bin/python -m pip install --disable-pip-version-check --find-links 'wheels dir' -r requirements.txt`
    )
    expect(s).toContain('ln -s /srv/app/venvs/k1 /srv/app/releases/v1/.venv')
  })
  it('health check passes the URL as an argument, not code', () => {
    const s = cmd.healthCheck(l, 'v1', "http://127.0.0.1/'); import os; os.system('id", 5)
    expect(s).toContain(`'http://127.0.0.1/'\\''); import os; os.system('\\''id'`)
  })
})

describe('a batch of steps', () => {
  const l = cmd.layout(join(base, 'batch'))
  const step = (name: string, script: string): Step => ({ name, script })
  it('reports each step by its marker and stops at the first failure, with its exit code', () => {
    const b = batch(
      [step('one', 'echo a'), step('two', 'echo b; exit 7'), step('three', 'touch THREE')],
      l,
      'MK:'
    )
    expect(b.parts).toEqual(['one', 'two', 'three'])
    const r = sh(b.script)
    expect(r.code).toBe(7)
    expect(r.out).toBe('a\nMK: one 0\nb\nMK: two 7\n')
    expect(existsSync(join(base, 'THREE'))).toBe(false)
  })
  it('gives stdin only to the step that reads the archive', () => {
    const b = batch([step('first', 'cat'), { ...step('upload', 'cat'), stdin: 'archive' }], l, 'MK:')
    expect(b.stdin).toBe('archive')
    // output without a final new line runs into the marker: the runner finds the marker inside the line
    expect(sh(b.script, 'DATA').out).toBe('MK: first 0\nDATAMK: upload 0\n')
  })
})

describe('the health check', () => {
  const l = cmd.layout(join(base, 'health'))
  let server: Server
  let url = ''
  const answers: number[] = []
  beforeAll(async () => {
    mkdirSync(join(l.releases, 'h1/.venv/bin'), { recursive: true })
    execFileSync('ln', ['-s', '/usr/bin/python3', join(l.releases, 'h1/.venv/bin/python')])
    server = createServer((req, res) => {
      if (req.url === '/moved/') return void res.writeHead(302, { location: '/health/' }).end()
      if (req.url === '/private/') {
        const ok = req.headers.authorization === `Basic ${Buffer.from('watch:s3cr:et').toString('base64')}`
        return void res.writeHead(ok ? 200 : 401).end(ok ? 'ok' : 'who are you?')
      }
      const status = answers.shift() ?? 200
      res.writeHead(status).end(status === 200 ? 'ok' : 'sick\n  and\ttired')
    })
    await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/health/`
  })
  afterAll(() => new Promise(r => server.close(r)))
  // The credentials come on stdin, as the runner sends a step's input.
  const check = (timeout: number, path?: string, at = url, env: Record<string, string> = {}) =>
    new Promise<{ code: number | null; out: string }>(resolve => {
      const child = spawn('/bin/sh', ['-c', cmd.healthCheck(l, 'h1', at, timeout)], {
        env: { ...(path ? { PATH: path } : process.env), ...env }
      })
      const auth = cmd.healthTarget(at).authorization
      child.stdin.end(auth ? `${auth}\n` : '')
      let out = ''
      child.stdout.on('data', c => (out += c))
      child.stderr.on('data', c => (out += c))
      child.on('close', code => resolve({ code, out }))
    })

  it.each([
    ['with curl', undefined],
    ['with Python, when the server has no curl', '/nonexistent']
  ])('%s: waits through failures until 2xx', async (_how, path) => {
    answers.push(500, 503)
    const r = await check(10, path)
    expect(r).toEqual({ code: 0, out: `${url} answered 200\n` })
    expect(answers).toEqual([])
  })
  it.each([
    ['with curl', undefined],
    ['with Python, when the server has no curl', '/nonexistent']
  ])('%s: fails after the timeout with the last answer', async (_how, path) => {
    answers.push(...Array(50).fill(503))
    const r = await check(1, path)
    answers.length = 0
    expect(r.code).toBe(1)
    expect(r.out).toMatch(new RegExp(`^${url.replace(/[.?]/g, '\\$&')} not healthy after 1 s: HTTP 503`))
  })
  it.each([
    ['with curl', undefined],
    ['with Python, when the server has no curl', '/nonexistent']
  ])(
    '%s: an application that answers 500 three times in a row fails at once, not after the timeout',
    async (_how, path) => {
      answers.push(...Array(10).fill(500))
      const r = await check(600, path)
      const left = answers.length
      answers.length = 0
      expect(r.code).toBe(1)
      expect(r.out).toMatch(/answered HTTP 500.*\(3 times in a row\): the release is broken/)
      expect(left).toBe(10 - cmd.HEALTH_FAST_FAIL)
    }
  )
  it.each([
    ['with curl', undefined],
    ['with Python, when the server has no curl', '/nonexistent']
  ])('%s: a proxy answer between two 500s starts the count again', async (_how, path) => {
    answers.push(500, 500, 502, 500, 500, 200)
    const r = await check(60, path)
    expect(r).toEqual({ code: 0, out: `${url} answered 200\n` })
  })
  const both = [
    ['with curl', undefined],
    ['with Python, when the server has no curl', '/nonexistent']
  ] as const
  it.each(both)('%s: the error has the status and the start of the body, on one line', async (_how, path) => {
    answers.push(...Array(50).fill(503))
    const r = await check(1, path)
    answers.length = 0
    expect(r.code).toBe(1)
    expect(r.out).toBe(`${url} not healthy after 1 s: HTTP 503: sick and tired\n`)
  })
  it.each(both)('%s: follows a redirect', async (_how, path) => {
    const moved = url.replace('/health/', '/moved/')
    expect(await check(5, path, moved)).toEqual({ code: 0, out: `${moved} answered 200\n` })
  })
  it.each(both)('%s: sends the credentials of the URL, and never prints them', async (_how, path) => {
    const at = url.replace('http://', 'http://watch:s3cr%3Aet@').replace('/health/', '/private/')
    const shown = at.replace('watch:s3cr%3Aet@', '***@')
    expect(await check(5, path, at)).toEqual({ code: 0, out: `${shown} answered 200\n` })
    const wrong = at.replace('s3cr%3Aet', 'nope')
    const r = await check(1, path, wrong)
    expect(r.code).toBe(1)
    expect(r.out).toBe(`${shown} not healthy after 1 s: HTTP 401: who are you?\n`)
  })
})

describe('a release name deployed again is built beside the old one (issue 15)', () => {
  const l = cmd.layout(join(base, `again $(touch PWNED) it's`))
  const tarball = (files: Record<string, string>): Buffer => {
    const src = mkdtempSync(join(base, 'src-'))
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(src, name, '..'), { recursive: true })
      writeFileSync(join(src, name), content)
    }
    return execFileSync('tar', ['-czf', '-', '-C', src, '.'])
  }
  const build = cmd.buildName('v1')
  const file = (release: string, name = 'manage.py'): string =>
    readFileSync(join(l.releases, release, name), 'utf8')

  it('builds in a directory no inspect lists; the old release stays whole until place', () => {
    for (const r of ['v1', 'v2']) {
      expect(sh(cmd.prepare(l, r)).code).toBe(0)
      expect(sh(cmd.unpack(l, r, r), tarball({ 'manage.py': `${r} old` })).code).toBe(0)
    }
    expect(sh(cmd.switchTo(l, 'v2')).code).toBe(0)
    expect(sh(cmd.prepare(l, 'v1', build)).code).toBe(0)
    expect(sh(cmd.unpack(l, 'v1', 'new', undefined, build), tarball({ 'manage.py': 'v1 new' })).code).toBe(0)
    expect(file('v1')).toBe('v1 old')
    expect(file(build)).toBe('v1 new')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out).releases).toEqual(['v1', 'v2'])

    const placed = sh(cmd.place(l, 'v1'))
    expect(placed.code).toBe(0)
    expect(file('v1')).toBe('v1 new')
    expect(file('v1', 'REVISION')).toBe('new\n')
    expect(existsSync(join(l.releases, build))).toBe(false)
    expect(readlinkSync(l.current)).toBe('releases/v2')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('a failed publish puts the old one back; never under a live link', () => {
    expect(sh(cmd.switchTo(l, 'v1')).code).toBe(0)
    expect(sh(cmd.restoreReplaced(l, 'v1')).code).toBe(0)
    expect(file('v1')).toBe('v1 new')
    expect(sh(cmd.switchTo(l, 'v2')).code).toBe(0)
    expect(sh(cmd.restoreReplaced(l, 'v1')).code).toBe(0)
    expect(file('v1')).toBe('v1 old')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out).releases).toEqual(['v1', 'v2'])
  })

  it('the cleanup removes what builds and replacements left', () => {
    expect(sh(cmd.prepare(l, 'v1', build)).code).toBe(0)
    expect(sh(cmd.unpack(l, 'v1', 'new', undefined, build), tarball({ 'manage.py': 'v1 new' })).code).toBe(0)
    expect(sh(cmd.place(l, 'v1')).code).toBe(0)
    mkdirSync(join(l.releases, cmd.buildName('v9')))
    expect(sh(cmd.cleanup(l, ['v1', 'v2'], [])).code).toBe(0)
    expect(readdirSync(l.releases).sort()).toEqual(['v1', 'v2'])
  })

  it('release files are read-only; a shared .env copied from the release is 0600, another file writable', () => {
    expect(sh(cmd.prepare(l, 'v3')).code).toBe(0)
    const files = { 'manage.py': 'x', '.env': 'SECRET=1\n', 'conf/site.json': '{}', 'run.sh': 'echo' }
    expect(sh(cmd.unpack(l, 'v3', 'abc'), tarball(files)).code).toBe(0)
    for (const f of ['manage.py', '.env', 'conf/site.json', 'REVISION'])
      expect(lstatSync(join(l.releases, 'v3', f)).mode & 0o777).toBe(0o444)
    expect(lstatSync(join(l.releases, 'v3', 'conf')).mode & 0o777).toBe(0o755)
    expect(sh(cmd.linkShared(l, 'v3', ['.env', 'conf/site.json'])).code).toBe(0)
    const env = lstatSync(join(l.shared, '.env'))
    expect([env.mode & 0o777, env.uid]).toEqual([0o600, process.getuid?.()])
    expect(readFileSync(join(l.shared, '.env'), 'utf8')).toBe('SECRET=1\n')
    expect(lstatSync(join(l.shared, 'conf/site.json')).mode & 0o777).toBe(0o644)
  })
})

describe('a step with input', () => {
  const l = cmd.layout(join(base, 'batch-input'))
  it('gets stdin; the others of its batch do not', () => {
    const b = batch(
      [
        { name: 'first', script: 'cat' },
        { name: 'health', script: 'cat', input: 'SECRET\n' }
      ],
      l,
      'MK:'
    )
    expect(b.input).toBe('SECRET\n')
    expect(b.script).not.toContain('SECRET')
    expect(sh(b.script, b.input).out).toBe('MK: first 0\nSECRET\nMK: health 0\n')
  })
  it('refuses two readers of stdin in one batch', () => {
    const steps: Step[] = [
      { name: 'upload', script: 'cat', stdin: 'archive' },
      { name: 'health', script: 'cat', input: 'x' }
    ]
    expect(() => batch(steps, l, 'MK:')).toThrow(/more than one reads stdin/)
  })
})

describe('health-check credentials (issue 15)', () => {
  const l = cmd.layout(join(base, 'health-creds'))
  const secret = 'pa ss:w@rd%/é'
  const auth = `Basic ${Buffer.from(`watch:${secret}`).toString('base64')}`
  const cred = `watch:${encodeURIComponent(secret)}@`
  const seen: Record<string, string | undefined> = {}
  const servers: { close: (cb: () => void) => unknown }[] = []
  let cert = ''
  let port = 0
  let other = 0
  let otherHost = 0
  const listen = (srv: Server | NetServer, host: string): Promise<number> =>
    new Promise(r => srv.listen(0, host, () => r((srv.address() as AddressInfo).port)))
  beforeAll(async () => {
    mkdirSync(join(l.releases, 'h1/.venv/bin'), { recursive: true })
    execFileSync('ln', ['-s', '/usr/bin/python3', join(l.releases, 'h1/.venv/bin/python')])
    const dir = mkdtempSync(join(base, 'tls-'))
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1'],
        ...['-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'k'), '-out', join(dir, 'c')]
      ],
      { stdio: 'ignore' }
    )
    cert = join(dir, 'c')
    // Where redirects land: what Authorization header each one got.
    const landing = (name: string): Server =>
      createServer((req, res) => {
        seen[`${name} ${req.url}`] = req.headers.authorization
        res.writeHead(200).end('ok')
      })
    const main = (req: IncomingMessage, res: ServerResponse): void => {
      const tls = (req.socket as { encrypted?: boolean }).encrypted === true
      const to: Record<string, string> = {
        '/to-other-host/': `http://127.0.0.2:${otherHost}/landing/`,
        '/to-other-port/': `http://127.0.0.1:${other}/landing/`,
        '/downgrade/': `http://127.0.0.1:${port}/landing/`
      }
      if (req.url === '/landing/') {
        seen[`${tls ? 'https' : 'http'} same port ${req.url}`] = req.headers.authorization
        return void res.writeHead(200).end('ok')
      }
      if (req.headers.authorization !== auth) return void res.writeHead(401).end()
      if (req.url === '/private/') return void res.writeHead(200).end('ok')
      res.writeHead(302, { location: to[req.url ?? ''] ?? '/private/' }).end()
    }
    // http and https on ONE port (the first byte tells TLS apart, each passed on to its server): https to http
    // on the same host and port.
    const plain = createServer(main)
    const secure = createHttpsServer({ key: readFileSync(join(dir, 'k')), cert: readFileSync(cert) }, main)
    const a = landing('other-port')
    const b = landing('other-host')
    const [plainPort, securePort] = [await listen(plain, '127.0.0.1'), await listen(secure, '127.0.0.1')]
    const both = createNetServer(sock =>
      sock.once('data', first => {
        const up = connect(first[0] === 0x16 ? securePort : plainPort, '127.0.0.1')
        up.write(first)
        sock.pipe(up).pipe(sock)
        up.on('error', () => sock.destroy())
        sock.on('error', () => up.destroy())
      })
    )
    servers.push(a, b, plain, secure, both)
    other = await listen(a, '127.0.0.1')
    otherHost = await listen(b, '127.0.0.2')
    port = await listen(both, '127.0.0.1')
  })
  afterAll(async () => {
    for (const s of servers) await new Promise<void>(r => s.close(() => r()))
  })
  const run = (at: string, path?: string): Promise<{ code: number | null; out: string }> =>
    new Promise(resolve => {
      const child = spawn('/bin/sh', ['-c', cmd.healthCheck(l, 'h1', at, 3)], {
        env: { PATH: path ?? process.env.PATH ?? '/usr/bin:/bin', CURL_CA_BUNDLE: cert, SSL_CERT_FILE: cert }
      })
      child.stdin.end(`${cmd.healthTarget(at).authorization}\n`)
      let out = ''
      child.stdout.on('data', c => (out += c))
      child.stderr.on('data', c => (out += c))
      child.on('close', code => resolve({ code, out }))
    })
  const ways = [
    ['curl', undefined],
    ['Python', '/nonexistent']
  ] as const

  it.each(ways)('%s: keeps them on a redirect within the same origin', async (_how, path) => {
    expect(await run(`http://${cred}127.0.0.1:${port}/same/`, path)).toMatchObject({ code: 0 })
    expect(await run(`https://${cred}127.0.0.1:${port}/same/`, path)).toMatchObject({ code: 0 })
  })
  it.each(ways)('%s: never forwards them to another host or port', async (_how, path) => {
    for (const key of Object.keys(seen)) delete seen[key]
    expect(await run(`http://${cred}127.0.0.1:${port}/to-other-host/`, path)).toMatchObject({ code: 0 })
    expect(await run(`http://${cred}127.0.0.1:${port}/to-other-port/`, path)).toMatchObject({ code: 0 })
    expect(seen).toEqual({ 'other-host /landing/': undefined, 'other-port /landing/': undefined })
  })
  it.each(ways)('%s: never forwards them from https to http', async (_how, path) => {
    for (const key of Object.keys(seen)) delete seen[key]
    expect(await run(`https://${cred}127.0.0.1:${port}/downgrade/`, path)).toMatchObject({ code: 0 })
    expect(seen).toEqual({ 'http same port /landing/': undefined })
  })
  it('are in no command line: not in the script, in no escaping', () => {
    const url = `https://${cred}127.0.0.1/health/`
    const script = cmd.healthCheck(l, 'h1', url, 3)
    for (const form of [secret, encodeURIComponent(secret), q(secret), auth.slice(6), 'pa%20ss', 'w%40rd'])
      expect(script).not.toContain(form)
    expect(script).toContain('https://***@127.0.0.1/health/')
    expect(cmd.healthTarget(url)).toEqual({
      bare: 'https://127.0.0.1/health/',
      shown: 'https://***@127.0.0.1/health/',
      authorization: auth
    })
  })
})

describe('the lock is a lease with fencing (real /bin/sh)', () => {
  const MARK = 'django-deploy-lease-test-mark'
  const root = mkdtempSync(join(base, 'lease-'))
  // A hostile deploy path: every command below would create PWNED in `base` if it reached the shell unquoted.
  const l = cmd.layout(join(root, `app $(touch PWNED) it's`))
  const started: ReturnType<typeof spawn>[] = []
  afterAll(() => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  const alive = (pid: number): boolean => {
    try {
      return !/^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
    } catch {
      return false
    }
  }
  const until = async (what: () => boolean, ms: number): Promise<boolean> => {
    const end = Date.now() + ms
    while (Date.now() < end) {
      if (what()) return true
      await new Promise(r => setTimeout(r, 100))
    }
    return what()
  }
  /** A holder whose stdin the test writes (renewals) and whose exit it can await. */
  async function holder(token: string, leaseSeconds: number) {
    const child = spawn('/bin/sh', ['-c', cmd.holdLock(l, 5, `holder ${token}`, token, leaseSeconds)], {
      cwd: base
    })
    started.push(child)
    let err = ''
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
    const exited = new Promise<number>(r => child.on('close', c => r(c ?? -1)))
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => c.toString().includes('locked') && resolve())
      void exited.then(c => reject(new Error(`holder exited ${c}: ${err}`)))
    })
    return { child, exited, stderr: () => err }
  }
  /** A fenced step that starts a sleep in its group and waits: returns the sleep's PID and the step's exit. */
  async function sleeper(token: string) {
    const step = spawn('/bin/sh', ['-c', cmd.fenced(l, token, 'sleep 60 & echo "$! $$"; wait', MARK)], {
      cwd: base
    })
    started.push(step)
    const exited = new Promise<number>(r => step.on('close', c => r(c ?? -1)))
    const [sleep, pgid] = await new Promise<number[]>(r =>
      step.stdout!.once('data', (c: Buffer) => r(c.toString().trim().split(' ').map(Number)))
    )
    return { sleep, pgid, exited }
  }

  it('runs a step only while its deploy holds the lease, in a process group of its own', async () => {
    const h = await holder('t1', 30)
    const own = sh(
      cmd.fenced(l, 't1', `echo "$$ $(cut -d' ' -f5 /proc/$$/stat)"; cat`, MARK),
      'stdin reaches it'
    )
    expect(own.code).toBe(0)
    const [pid, pgid, ...rest] = own.out.trim().split(/\s+/)
    expect(pgid).toBe(pid)
    expect(rest.join(' ')).toBe('stdin reaches it')
    // A deploy whose lease was taken over: its directory may still be there, the lease file names another token.
    mkdirSync(join(l.leases, 'someone-else'), { recursive: true })
    const refused = sh(cmd.fenced(l, 'someone-else', `touch ${q(join(root, 'CHANGED'))}`, MARK))
    expect(refused.code).toBe(cmd.LEASE_LOST)
    expect(refused.err).toContain('this deploy no longer holds the deploy lock')
    expect(refused.err.split('\n')).toContain(MARK)
    expect(existsSync(join(root, 'CHANGED'))).toBe(false)
    h.child.stdin!.end('release\n')
    expect(await h.exited).toBe(0)
    expect(existsSync(l.lease)).toBe(false)
  })

  it("release frees the lock at once, not at the holder loop's next tick", async () => {
    const h = await holder('t9', 30)
    // The loop's first 1 s sleep starts right after "locked": a holder that only looked each tick would exit
    // about 1 s from here.
    await new Promise(r => setTimeout(r, 50))
    const t0 = Date.now()
    h.child.stdin!.end('release\n')
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(600)
    expect(existsSync(l.lease)).toBe(false)
  })

  it('killSteps kills a running step with everything it started', async () => {
    const h = await holder('t2', 30)
    const s = await sleeper('t2')
    expect(alive(s.sleep)).toBe(true)
    expect(sh(cmd.killSteps(l, 't2')).code).toBe(0)
    expect(await s.exited).toBe(137)
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    h.child.stdin!.end('release\n')
    await h.exited
  })

  it('renewals keep the lease; when they stop it ends, kills the steps and frees the lock', async () => {
    const h = await holder('t3', 5)
    const renew = setInterval(() => h.child.stdin!.write('renew\n'), 250)
    const s = await sleeper('t3')
    await new Promise(r => setTimeout(r, 6000))
    clearInterval(renew)
    expect([h.child.exitCode, h.stderr()]).toEqual([null, ''])
    expect(alive(s.sleep)).toBe(true)
    // the runner froze: stdin stays open, nothing more comes
    const t0 = Date.now()
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(8000)
    expect(h.stderr()).toContain('deploy lease ended (no renewal for 5 s)')
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    expect(existsSync(l.lease)).toBe(false)
    expect(sh(cmd.fenced(l, 't3', 'true', MARK)).code).toBe(cmd.LEASE_LOST)
    const next = await holder('t4', 30)
    next.child.stdin!.end('release\n')
    await next.exited
    h.child.kill('SIGKILL')
  }, 30_000)

  it('stdin ending without release (the connection dropped) ends the lease at once', async () => {
    const h = await holder('t5', 30)
    const s = await sleeper('t5')
    const t0 = Date.now()
    h.child.stdin!.end()
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(h.stderr()).toContain('deploy lease ended (connection closed)')
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
  })

  it.each([
    ['withdrawing its token', '-f', () => l.lease],
    ['removing its lease directory (its steps killed)', '-rf', () => join(l.leases, 't10')]
  ])(
    'a step registering while the holder is %s is killed or refuses: never runs unfenced',
    async (_, flag, path) => {
      // Real /bin/sh, with `touch` (the step registering) and `rm` (the holder withdrawing its token) made to wait
      // for the test, so the two interleave exactly: the step passed its lease check and is about to register
      // while the holder ends the lease.
      const gate = mkdtempSync(join(base, 'gate-'))
      const bin = join(gate, 'bin')
      mkdirSync(bin)
      const wait = (name: string) =>
        `: > "$GATE/${name}-waiting"; while [ ! -e "$GATE/${name}-go" ]; do sleep 0.05; done`
      writeFileSync(
        join(bin, 'touch'),
        `#!/bin/sh\ncase "$1" in */step-*) ${wait('touch')};; esac\nexec /usr/bin/touch "$@"\n`,
        { mode: 0o755 }
      )
      writeFileSync(
        join(bin, 'rm'),
        `#!/bin/sh\nif [ -e "$GATE/arm" ] && [ "$1" = "$RM_FLAG" ] && [ "$2" = "$RM_PATH" ]; then ${wait('rm')}; fi\nexec /bin/rm "$@"\n`,
        { mode: 0o755 }
      )
      const env = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH}`,
        GATE: gate,
        RM_FLAG: flag,
        RM_PATH: path()
      }
      const seen = (name: string) => until(() => existsSync(join(gate, name)), 5000)
      const h = spawn('/bin/sh', ['-c', cmd.holdLock(l, 5, 'holder t10', 't10')], { cwd: base, env })
      started.push(h)
      const hExited = new Promise<number>(r => h.on('close', c => r(c ?? -1)))
      await new Promise<void>(r =>
        h.stdout!.on('data', (c: Buffer) => c.toString().includes('locked') && r())
      )
      writeFileSync(join(gate, 'arm'), '')
      const ran = join(gate, 'ran')
      const step = spawn('/bin/sh', ['-c', cmd.fenced(l, 't10', `sleep 2; echo ran > ${q(ran)}`, MARK)], {
        cwd: base,
        env
      })
      started.push(step)
      let stepErr = ''
      step.stderr!.on('data', (c: Buffer) => (stepErr += c.toString()))
      const stepExited = new Promise<number>(r => step.on('close', c => r(c ?? -1)))
      expect(await seen('touch-waiting')).toBe(true) // the lease check passed; not registered yet
      h.stdin!.end() // the connection drops: the lease ends
      expect(await seen('rm-waiting')).toBe(true) // the holder is ending the lease
      writeFileSync(join(gate, 'touch-go'), '') // the step registers now
      await new Promise(r => setTimeout(r, 400))
      writeFileSync(join(gate, 'rm-go'), '')
      expect(await hExited).toBe(0)
      const code = await stepExited
      await new Promise(r => setTimeout(r, 2500))
      expect({ code: code === 0 ? 0 : 'stopped', ran: existsSync(ran) }).toEqual({
        code: 'stopped',
        ran: false
      })
      if (code === cmd.LEASE_LOST) expect(stepErr.split('\n')).toContain(MARK)
    },
    20_000
  )

  it('a new holder kills steps a killed holder left behind', async () => {
    const h = await holder('t6', 30)
    const s = await sleeper('t6')
    h.child.kill('SIGKILL')
    await h.exited
    expect(alive(s.sleep)).toBe(true)
    const next = await holder('t7', 30)
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    next.child.stdin!.end('release\n')
    await next.exited
  })
})

describe('readRevision (the commit a rollback records)', () => {
  test("prints the release's REVISION; a hostile deploy path and release name stay inert", () => {
    const root = join(base, "rev $(touch pwned) 'x'")
    const release = 'r1;$(touch pwned2)'
    mkdirSync(join(root, 'releases', release), { recursive: true })
    writeFileSync(join(root, 'releases', release, 'REVISION'), `${'a'.repeat(40)}\n`)
    const r = sh(cmd.readRevision(cmd.layout(root), release))
    expect(r).toEqual({ code: 0, out: `${'a'.repeat(40)}\n`, err: '' })
    expect(existsSync(join(base, 'pwned')) || existsSync(join(base, 'pwned2'))).toBe(false)
    expect(sh(cmd.readRevision(cmd.layout(root), 'gone')).code).not.toBe(0)
  })
})

describe('static files outlive their release (real /bin/sh and python3)', () => {
  // A hostile deploy path and file names: nothing may reach the shell unquoted.
  const l = cmd.layout(join(mkdtempSync(join(base, 'static-')), `app $(touch PWNED) it's`))
  /** A release whose STATIC_ROOT (`staticfiles`, as recorded by the step after collectstatic) holds `files`. */
  function release(name: string, files: Record<string, string>): void {
    const dir = join(l.releases, name)
    mkdirSync(join(dir, '.venv/bin'), { recursive: true })
    execFileSync('ln', ['-sf', '/usr/bin/python3', join(dir, '.venv/bin/python')])
    writeFileSync(join(dir, '.django-deploy-static'), 'staticfiles')
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, 'staticfiles', path, '..'), { recursive: true })
      writeFileSync(join(dir, 'staticfiles', path), text)
    }
  }
  const read = (path: string): string | undefined =>
    existsSync(join(l.static, path)) ? readFileSync(join(l.static, path), 'utf8') : undefined

  it('the live release takes over the unhashed names; pruning keeps a file while any kept release has it', () => {
    release('r1', { 'css/styles.css': 'r1', 'css/styles.aaa.css': 'r1', 'only-r1/$(touch PWNED).js': 'r1' })
    release('r2', { 'css/styles.css': 'r2', 'css/styles.bbb.css': 'r2', "it's.css": 'r2' })
    release('r3', { 'css/styles.css': 'r3', 'css/styles.aaa.css': 'r1' })
    for (const r of ['r1', 'r2', 'r3']) expect(sh(cmd.liveStatic(l, r))).toMatchObject({ code: 0, err: '' })
    expect(read('css/styles.css')).toBe('r3')
    expect(read('css/styles.bbb.css')).toBe('r2')
    expect(read('only-r1/$(touch PWNED).js')).toBe('r1')
    // r1 removed: its hashed CSS stays (r3 has it too); what only r1 had goes, with its empty folder.
    const pruned = sh(cmd.pruneStatic(l, 'r3', ['r2', 'r3']))
    expect(pruned).toMatchObject({ code: 0, err: '' })
    expect(pruned.out).toContain('1 static file(s) no kept release has removed')
    expect(read('css/styles.aaa.css')).toBe('r1')
    expect(existsSync(join(l.static, 'only-r1'))).toBe(false)
    expect(read("it's.css")).toBe('r2')
    sh(cmd.pruneStatic(l, 'r3', ['r3']))
    expect(read('css/styles.bbb.css')).toBeUndefined()
    expect(read('css/styles.css')).toBe('r3')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('a static folder someone else filled (STATIC_ROOT outside the releases) is never written to nor pruned', () => {
    const other = cmd.layout(join(base, 'static-foreign'))
    mkdirSync(other.static, { recursive: true })
    writeFileSync(join(other.static, 'theirs.css'), 'theirs')
    const dir = join(other.releases, 'r1')
    mkdirSync(join(dir, '.venv/bin'), { recursive: true })
    mkdirSync(join(dir, 'staticfiles'))
    execFileSync('ln', ['-sf', '/usr/bin/python3', join(dir, '.venv/bin/python')])
    writeFileSync(join(dir, '.django-deploy-static'), 'staticfiles')
    writeFileSync(join(dir, 'staticfiles/ours.css'), 'ours')
    const linked = sh(cmd.liveStatic(other, 'r1'))
    expect(linked.code).toBe(0)
    expect(linked.out).toContain(`${cmd.WARN} ${other.static} holds files this action did not put there`)
    expect(sh(cmd.pruneStatic(other, 'r1', ['r1'])).code).toBe(0)
    expect(execFileSync('ls', ['-A', other.static]).toString()).toBe('theirs.css\n')
  })
  it('a release without a record (deployed before) links nothing; no shared folder: pruning does nothing', () => {
    const other = cmd.layout(join(base, 'static-none'))
    mkdirSync(join(other.releases, 'old'), { recursive: true })
    expect(sh(cmd.liveStatic(other, 'old'))).toMatchObject({ code: 0, out: '', err: '' })
    expect(sh(cmd.pruneStatic(other, 'old', ['old']))).toMatchObject({ code: 0, out: '', err: '' })
    expect(existsSync(other.static)).toBe(false)
  })
})
