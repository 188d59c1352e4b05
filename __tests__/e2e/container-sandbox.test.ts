/**
 * The systemd container sandbox and the test ACME server (sandbox/container.ts, sandbox/acme.ts): a bare Debian
 * server with systemd as PID 1, reached over its own veth; and, by hand inside it, the certbot recipe the setup
 * mode automates — a certificate from pebble over real HTTP-01, served by nginx and verified against pebble's root.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'
import { startAcme, type Acme } from '../../sandbox/acme.js'
import { pidsInNamespace, startContainer, type Container } from '../../sandbox/container.js'
import { execFile, isAlive } from '../../sandbox/target.js'

jest.setTimeout(180_000)

const NET = 251
const DOMAIN = 'smoke.ctrsmk.test'
let c: Container | undefined
let acme: Acme | undefined
const tmp = mkdtempSync(path.join(os.tmpdir(), 'ctrsmk-'))

beforeAll(async () => {
  c = await startContainer({ name: 'ctrsmk', net: NET })
  acme = await startAcme({ bindIp: c.outside, domains: { [DOMAIN]: c.host } })
})

afterAll(async () => {
  await acme?.stop()
  await c?.stop()
  rmSync(tmp, { recursive: true, force: true })
})

const sh = async (cmd: string, env?: Record<string, string>): Promise<string> => {
  const r = await c!.exec(cmd, { env })
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}\n${r.stdout}\n${r.stderr}`)
  return r.stdout.trim()
}

/** Files and users another test makes on this machine while the container runs: the container must not see them. */
function hostUser(): () => void {
  const user = `ctrsmk${randomBytes(3).toString('hex')}`
  const sudoers = `/etc/sudoers.d/${user}`
  const site = `/etc/nginx/sites-enabled/${user}`
  const live = mkdtempSync('/tmp/ctrsmk-live-')
  const etcFile = `/etc/${user}.conf`
  writeFileSync(etcFile, '# made by container-sandbox.test.ts\n')
  execFileSync('/usr/sbin/useradd', ['-M', '-d', '/nonexistent', user])
  writeFileSync(sudoers, `# ${user}: made by container-sandbox.test.ts\n`, { mode: 0o440 })
  writeFileSync(site, `# ${user}: made by container-sandbox.test.ts\n`)
  return () => {
    rmSync(sudoers, { force: true })
    rmSync(site, { force: true })
    rmSync(live, { recursive: true, force: true })
    rmSync(etcFile, { force: true })
    execFileSync('/usr/sbin/userdel', [user])
  }
}

test('boots to running as a bare server: sshd and nginx units, no deploy user, no app units, nothing of this machine', async () => {
  const state = await sh('systemctl is-system-running || true')
  expect(['running', 'degraded']).toContain(state)
  expect(await sh('systemctl is-active ssh nginx')).toBe('active\nactive')
  expect(await sh('systemctl is-active postgresql@15-main || true')).not.toBe('active')
  const removeHostUser = hostUser()
  try {
    // Only system accounts and nobody; not the users this machine has or gets now (other tests make them).
    expect(await sh("getent passwd | awk -F: '$3 >= 1000 {print $1}'")).toBe('nobody')
    expect(await sh('ls -A /etc/sudoers.d')).toBe('README')
    expect(await sh('ls -A /etc/nginx/sites-enabled')).toBe('default')
    expect(await sh('ls /tmp | grep -c ctrsmk- || true')).toBe('0')
    expect(await sh('ls /etc | grep -c ctrsmk || true')).toBe('0')
    expect(await sh('grep -c ctrsmk /etc/passwd- /etc/group- || true')).toBe('/etc/passwd-:0\n/etc/group-:0')
  } finally {
    removeHostUser()
  }
  expect(await sh('ls -A /home')).toBe('')
  expect(await sh('ls -A /etc/nginx/conf.d')).toBe('')
  expect(await sh('hostname')).toBe(c!.machine)
  expect(await sh("find /etc/systemd/system -maxdepth 1 -type f -name '*.s*' | wc -l")).toBe('0')
})

test('root logs in over ssh with the admin key only, the host key pinned', async () => {
  const key = path.join(tmp, 'admin')
  writeFileSync(key, c!.privateKey, { mode: 0o600 })
  const kh = path.join(tmp, 'known_hosts')
  const ssh = (knownHosts: string) => {
    writeFileSync(kh, `${knownHosts}\n`)
    return execFile('/usr/bin/ssh', [
      ...[
        '-i',
        key,
        '-o',
        `UserKnownHostsFile=${kh}`,
        '-o',
        'StrictHostKeyChecking=yes',
        '-o',
        'BatchMode=yes'
      ],
      ...['-o', 'IdentitiesOnly=yes', '-o', 'ConnectTimeout=10', `root@${c!.host}`, 'id -u; hostname']
    ])
  }
  const ok = await ssh(c!.knownHosts)
  expect(ok.stderr).not.toMatch(/Warning|added/)
  expect(ok.stdout).toBe(`0\n${c!.machine}\n`)
  expect(execFileSync('/usr/bin/ssh-keygen', ['-lf', kh]).toString()).toContain(c!.fingerprint)
  // Another machine's key under this address: refused.
  const other = readFileSync('/etc/ssh/ssh_host_ed25519_key.pub', 'utf8').split(' ')
  const wrong = await ssh(`${c!.host} ${other[0]} ${other[1]}`)
  expect(wrong.code).not.toBe(0)
  expect(wrong.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/)
  expect(await sh("sshd -T | grep -E '^permitrootlogin'")).toBe('permitrootlogin without-password')
})

function httpsGet(host: string, ca: string | undefined): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host, port: 443, path: '/', servername: DOMAIN, ca, agent: false, timeout: 10_000 },
      res => {
        let body = ''
        res.on('data', d => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      }
    )
    req.on('error', reject)
  })
}

test('by hand inside: certbot gets a certificate from pebble over HTTP-01; nginx serves it, verified against pebble’s root', async () => {
  await c!.writeFile('/etc/ssl/acme-ca.pem', acme!.caPem)
  const bundle = { REQUESTS_CA_BUNDLE: '/etc/ssl/acme-ca.pem' }
  await sh(
    `certbot certonly --webroot -w /var/www/html -d ${DOMAIN} --server ${acme!.directory} ` +
      '--non-interactive --agree-tos -m admin@ctrsmk.test --no-eff-email --deploy-hook "systemctl reload nginx"',
    bundle
  )
  const live = `/etc/letsencrypt/live/${DOMAIN}`
  await c!.writeFile(
    '/etc/nginx/sites-enabled/tls',
    `server {\n listen 443 ssl;\n server_name ${DOMAIN};\n ssl_certificate ${live}/fullchain.pem;\n` +
      ` ssl_certificate_key ${live}/privkey.pem;\n location / { return 200 "tls ok\\n"; }\n}\n`
  )
  await sh('nginx -t 2>&1 && systemctl reload nginx')
  const root = await acme!.issuingRoot()
  let res = await httpsGet(c!.host, root)
  for (let i = 0; i < 20 && res.body !== 'tls ok\n'; i++) res = await httpsGet(c!.host, root) // reload is async
  expect(res).toEqual({ status: 200, body: 'tls ok\n' })
  await expect(httpsGet(c!.host, undefined)).rejects.toThrow(/certificate/)
  await expect(httpsGet(c!.host, acme!.caPem)).rejects.toThrow(/certificate/)
  // The trap: renewal runs from certbot.timer, without the variable; the CA must reach certbot.service too.
  const renew = `certbot renew --dry-run --no-random-sleep-on-renew --server ${acme!.directory}`
  const dry = await c!.exec(renew)
  expect(dry.code).not.toBe(0)
  expect(dry.stdout + dry.stderr).toMatch(/CERTIFICATE_VERIFY_FAILED|SSLError/)
  await c!.writeFile(
    '/etc/systemd/system/certbot.service.d/acme-ca.conf',
    '[Service]\nEnvironment=REQUESTS_CA_BUNDLE=/etc/ssl/acme-ca.pem\n'
  )
  await sh('systemctl daemon-reload')
  expect(await sh('systemctl show certbot.service -p Environment')).toBe(
    'Environment=REQUESTS_CA_BUNDLE=/etc/ssl/acme-ca.pem'
  )
  await sh(renew, bundle)
})

test('a second container: its own files, /etc/os-release and PostgreSQL, its own units (stopping its nginx leaves the first’s)', async () => {
  const hostRelease = readFileSync('/etc/os-release', 'utf8')
  const other = await startContainer({
    name: 'ctrsmk',
    net: NET,
    n: 2,
    osRelease: 'ID=centos\nVERSION_ID="7"\n',
    files: { '/etc/ctrsmk/secret': { content: 'x\n', mode: 0o600 } },
    postgres: true
  })
  try {
    const r = await other.exec('. /etc/os-release && echo "$ID $VERSION_ID"; stat -c %a /etc/ctrsmk/secret')
    expect(r.stdout).toBe('centos 7\n600\n')
    const pg = await other.exec('runuser -u postgres -- psql -Atc "select 6 * 7"')
    expect(pg.stdout).toBe('42\n')
    expect((await other.exec('systemctl stop nginx && systemctl is-active nginx')).stdout).toBe('inactive\n')
    expect(await sh('systemctl is-active nginx')).toBe('active')
    expect(await sh('pgrep -c nginx')).not.toBe('0')
  } finally {
    await other.stop()
  }
  expect(readFileSync('/etc/os-release', 'utf8')).toBe(hostRelease)
  expect(existsSync('/etc/ctrsmk')).toBe(false)
})

test('a boot that times out says so and leaves nothing behind', async () => {
  const mounts = (): string[] =>
    readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .filter(l => l.includes('/var/lib/machines/dd-ctrsmk'))
  const before = mounts()
  await expect(startContainer({ name: 'ctrsmk', net: NET, n: 3, bootTimeoutMs: 1 })).rejects.toThrow(
    /did not reach running\/degraded in 1 ms/
  )
  expect(mounts()).toEqual(before)
  const cgroupParent = path.dirname(c!.cgroups[0])
  const ours = readdirSync(cgroupParent).filter(n => n.startsWith('dd-ctrsmk'))
  expect(ours).toEqual([path.basename(c!.cgroups[0])]) // the first container's only
  expect(execFileSync('/usr/bin/ip', ['-o', 'addr']).toString()).not.toContain(`127.${NET}.3.1`)
  expect(execFileSync('/usr/bin/ip', ['netns', 'list']).toString()).not.toMatch(
    /dd-ctrsmk\S* .*\n.*dd-ctrsmk/
  )
})

test('stop() leaves no mount, namespace, veth, process or file', async () => {
  const { root, netns, veth, pid, pidNamespace, cgroups } = c!
  expect(cgroups.length).toBeGreaterThan(0)
  for (const g of cgroups)
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(`:/${path.basename(g)}/`)
  const { pids, dir } = acme!
  await acme!.stop()
  await c!.stop()
  await c!.stop() // idempotent
  expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(root)
  expect(execFileSync('/usr/bin/ip', ['netns', 'list']).toString()).not.toContain(netns)
  expect(existsSync(`/sys/class/net/${veth}`)).toBe(false)
  expect(await isAlive(pid)).toBe(false)
  expect(await pidsInNamespace(pidNamespace)).toEqual([])
  expect(existsSync(root) || existsSync(`${root}.ovl`)).toBe(false)
  for (const g of cgroups) expect(existsSync(g)).toBe(false)
  for (const p of pids) expect(await isAlive(p)).toBe(false)
  expect(existsSync(dir)).toBe(false)
})
