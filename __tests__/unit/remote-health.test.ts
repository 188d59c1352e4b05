/**
 * The health check after the switch, run with the real /bin/sh (curl, or the release's Python) against local
 * HTTP(S) servers: its answers, its timeouts, and credentials that reach neither a command line nor another origin.
 */
import { execFileSync, spawn } from 'node:child_process'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, createServer as createNetServer, type Server as NetServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { q } from '../../src/remote/quote.js'

const base = mkdtempSync(join(tmpdir(), 'dd-cmd-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

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
