/**
 * A test ACME server: Debian's `pebble` (standing in for Let's Encrypt) and `pebble-challtestsrv` (its DNS,
 * answering the test domains with the container's address), both on `bindIp` — the outside end of a container's
 * veth is reachable from inside the container and from here. Pebble validates HTTP-01 on port 80, as Let's
 * Encrypt does (its default is 5002). Its API's TLS pair is made fresh here; each run has its own issuing root.
 */
import { spawn } from 'node:child_process'
import { closeSync, openSync, promises as fs } from 'node:fs'
import https from 'node:https'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { freePorts, isAlive, mustExec, waitDead } from './target.js'

export interface AcmeOptions {
  /** Address pebble and its DNS listen on (127.0.0.0/8), e.g. a container's `outside`. */
  bindIp: string
  /** Domain → IPv4 address its A record answers (the HTTP-01 validation connects there, on port 80). */
  domains: Record<string, string>
}

export interface Acme {
  /** `https://<bindIp>:<port>/dir` */
  directory: string
  /** PEM of the CA that signed pebble's API certificate (what `acme-ca-certificate` receives). */
  caPem: string
  /** The same, as a file here. */
  caFile: string
  /** PEM of the root that issues certificates (pebble's management `/roots/0`; new on every start). */
  issuingRoot(): Promise<string>
  /** Adds or changes an A record. */
  setA(domain: string, ip: string): Promise<void>
  logs(): Promise<{ pebble: string; dns: string }>
  /** PIDs of pebble-challtestsrv and pebble. */
  pids: number[]
  /** Temp dir holding config, keys and logs (removed by `stop()`). */
  dir: string
  stop(): Promise<void>
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** A CA and a certificate for `ip` signed by it (pebble's API and management listeners). */
async function makeTls(dir: string, ip: string): Promise<void> {
  const o = (...a: string[]): Promise<string> => mustExec('/usr/bin/openssl', a, { cwd: dir })
  await o(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=django-deploy sandbox ACME API CA',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign'
  )
  await o(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    `/CN=${ip}`,
    '-keyout',
    'key.pem',
    '-out',
    'api.csr'
  )
  await fs.writeFile(
    path.join(dir, 'ext.cnf'),
    `subjectAltName=IP:${ip},DNS:localhost\nextendedKeyUsage=serverAuth\n`
  )
  await o(
    'x509',
    '-req',
    '-in',
    'api.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
    '-out',
    'cert.pem'
  )
}

function spawnLogged(file: string, args: string[], log: string, env: NodeJS.ProcessEnv): number {
  const fd = openSync(log, 'a', 0o600)
  try {
    const child = spawn(file, args, { stdio: ['ignore', fd, fd], detached: true, env })
    child.on('error', () => undefined)
    child.unref()
    if (child.pid === undefined) throw new Error(`${file} did not start`)
    return child.pid
  } finally {
    closeSync(fd)
  }
}

function request(
  url: string,
  opts: { ca?: string; method?: string; body?: string } = {}
): Promise<{ status: number; body: string }> {
  const mod = url.startsWith('https:') ? https : http
  return new Promise((resolve, reject) => {
    const req = mod.request(
      url,
      { method: opts.method ?? 'GET', ca: opts.ca, agent: false, timeout: 5000 },
      res => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') })
        )
      }
    )
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)))
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** Writes pebble's config and starts pebble-challtestsrv and pebble (their PIDs pushed on `pids`). */
async function spawnServers(
  dir: string,
  bindIp: string,
  ports: { api: number; mgmt: number; dns: number; dnsMgmt: number },
  pids: number[]
): Promise<void> {
  const { api, mgmt, dns, dnsMgmt } = ports
  const config = {
    pebble: {
      listenAddress: `${bindIp}:${api}`,
      managementListenAddress: `${bindIp}:${mgmt}`,
      certificate: path.join(dir, 'cert.pem'),
      privateKey: path.join(dir, 'key.pem'),
      httpPort: 80,
      tlsPort: 443,
      ocspResponderURL: '',
      externalAccountBindingRequired: false
    }
  }
  await fs.writeFile(path.join(dir, 'pebble.json'), JSON.stringify(config, null, 2))
  const env = { PATH, LANG: 'C.UTF-8', PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' }
  // challtestsrv: DNS only (the container's nginx answers HTTP-01), no AAAA answers (pebble would try ::1).
  const dnsArgs = [
    '-dns01',
    `${bindIp}:${dns}`,
    '-management',
    `${bindIp}:${dnsMgmt}`,
    '-http01',
    '',
    '-https01',
    '',
    '-tlsalpn01',
    '',
    '-defaultIPv6',
    '',
    '-defaultIPv4',
    ''
  ]
  pids.push(spawnLogged('/usr/bin/pebble-challtestsrv', dnsArgs, path.join(dir, 'dns.log'), env))
  const pebbleArgs = ['-config', path.join(dir, 'pebble.json'), '-dnsserver', `${bindIp}:${dns}`]
  pids.push(spawnLogged('/usr/bin/pebble', pebbleArgs, path.join(dir, 'pebble.log'), env))
}

/** Until every URL answers; fails when a process exits or after 20 s, with the logs. */
async function waitUp(
  pids: number[],
  probes: Array<() => Promise<unknown>>,
  logs: () => Promise<{ pebble: string; dns: string }>
): Promise<void> {
  const deadline = Date.now() + 20_000
  for (;;) {
    for (const p of pids)
      if (!(await isAlive(p))) throw new Error(`ACME server exited:\n${JSON.stringify(await logs())}`)
    const up = await Promise.all(
      probes.map(f =>
        f().then(
          () => true,
          () => false
        )
      )
    )
    if (up.every(Boolean)) return
    if (Date.now() > deadline)
      throw new Error(`ACME server did not come up in 20 s:\n${JSON.stringify(await logs())}`)
    await sleep(100)
  }
}

export async function startAcme(o: AcmeOptions): Promise<Acme> {
  if (process.getuid?.() !== 0) throw new Error('startAcme needs root (pebble validates on port 80)')
  if (!/^127\.\d+\.\d+\.\d+$/.test(o.bindIp))
    throw new Error(`acme bindIp must be in 127.0.0.0/8: ${o.bindIp}`)
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dd-acme-'))
  const pids: number[] = []
  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      for (const p of pids) if (await isAlive(p)) process.kill(p, 'SIGTERM')
      const left = await waitDead(pids, 5000)
      for (const p of left) process.kill(p, 'SIGKILL')
      await waitDead(left, 5000)
      await fs.rm(dir, { recursive: true, force: true })
    })())
  try {
    await makeTls(dir, o.bindIp)
    const [api, mgmt, dns, dnsMgmt] = await freePorts(o.bindIp, 4)
    await spawnServers(dir, o.bindIp, { api, mgmt, dns, dnsMgmt }, pids)
    const caPem = await fs.readFile(path.join(dir, 'ca.pem'), 'utf8')
    const dnsUrl = `http://${o.bindIp}:${dnsMgmt}`
    const directory = `https://${o.bindIp}:${api}/dir`
    const logs = async (): Promise<{ pebble: string; dns: string }> => ({
      pebble: await fs.readFile(path.join(dir, 'pebble.log'), 'utf8').catch(() => ''),
      dns: await fs.readFile(path.join(dir, 'dns.log'), 'utf8').catch(() => '')
    })
    const setA = async (domain: string, ip: string): Promise<void> => {
      const r = await request(`${dnsUrl}/add-a`, {
        method: 'POST',
        body: JSON.stringify({ host: domain, addresses: [ip] })
      })
      if (r.status !== 200) throw new Error(`challtestsrv add-a ${domain}: HTTP ${r.status} ${r.body}`)
    }
    await waitUp(pids, [() => request(directory, { ca: caPem }), () => request(`${dnsUrl}/`)], logs)
    for (const [d, ip] of Object.entries(o.domains)) await setA(d, ip)
    return {
      directory,
      caPem,
      caFile: path.join(dir, 'ca.pem'),
      issuingRoot: async () => {
        const r = await request(`https://${o.bindIp}:${mgmt}/roots/0`, { ca: caPem })
        if (r.status !== 200) throw new Error(`pebble /roots/0: HTTP ${r.status}`)
        return r.body
      },
      setA,
      logs,
      pids,
      dir,
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}
