/**
 * Host keys, exactly as OpenSSH reads them, against real OpenSSH servers on 127.0.0.2 and 127.0.0.3:
 * fingerprint pins of any key type, pins bound to their host, the jump host with its own pin, known_hosts
 * lines that cannot be trusted refused before connecting, and the jump hop under the connect timeout.
 */
import { jest } from '@jest/globals'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { deployInputs } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { connectHost, type Connection } from '../../src/remote/connect.js'
import { HOST_KEY_ALGORITHMS } from '../../src/remote/hostkeys.js'
import { loadSettings, type InputName, type SshSettings } from '../../src/settings.js'
import { Repo, runAction } from '../helpers/action.js'

jest.setTimeout(240_000)

/** A: three host key types; B: ed25519 only; B's deploy user also accepts A's client key (to be a jump host). */
let a: Target
let b: Target
let repo: Repo

beforeAll(async () => {
  ;[a, b] = await Promise.all([
    startTarget({ name: 'ddhka', bindIp: '127.0.0.2', hostKeyTypes: ['ed25519', 'ecdsa', 'rsa'] }),
    startTarget({ name: 'ddhkb', bindIp: '127.0.0.3' })
  ])
  const r = await b.run(`printf '%s\\n' '${a.publicKey}' >> ~/.ssh/authorized_keys`)
  if (r.code !== 0) throw new Error(r.stderr)
  repo = new Repo()
}, 120_000)

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  repo?.remove()
}, 120_000)

const hostOf = (t: Target): string => `${t.host}:${t.sshPort}`
const key = (t: Target, type: string) => t.hostKeys.find(k => k.type === type)!
const log = (t: Target): string => readFileSync(t.logs.sshd, 'utf8')

/** SshSettings as the action reads them, from inputs (A's user and client key unless given). */
function ssh(inputs: Partial<Record<InputName, string>>): SshSettings {
  const all: Record<string, string> = {
    ...deployInputs(a, { mode: 'deploy', hosts: hostOf(a), 'known-hosts': '' }),
    ...inputs
  }
  return loadSettings({
    input: n => all[n] ?? '',
    env: {
      GITHUB_WORKSPACE: repo.dir,
      GITHUB_EVENT_NAME: 'push',
      GITHUB_REF: 'refs/heads/main',
      GITHUB_SHA: 'abc1234'
    }
  }).ssh
}

/** Connects to the first host, then disconnects; rejects with the connect error. */
async function connect(s: SshSettings, host = s.hosts[0]): Promise<Connection> {
  const c = await connectHost(host, s, `${host.host}:${host.port}`)
  c.ssh.dispose()
  c.via?.dispose()
  return c
}

test('a fingerprint pin of a key type the client does not ask for first (ECDSA, RSA) connects', async () => {
  const ecdsa = await connect(ssh({ hosts: hostOf(a), 'host-fingerprint': key(a, 'ecdsa').fingerprint }))
  expect(ecdsa.tries.map(t => t.presented?.type)).toEqual(['ssh-ed25519', 'ecdsa-sha2-nistp256'])
  expect(ecdsa.tries[0].algorithms).toEqual(HOST_KEY_ALGORITHMS)
  expect(ecdsa.tries[1].algorithms).toEqual(HOST_KEY_ALGORITHMS.filter(x => x !== 'ssh-ed25519'))
  expect(ecdsa.tries[1].presented?.fingerprint).toBe(key(a, 'ecdsa').fingerprint)

  const rsa = await connect(
    ssh({ hosts: hostOf(a), 'host-fingerprint': `${hostOf(a)}=${key(a, 'rsa').fingerprint}` })
  )
  expect(rsa.tries.map(t => t.presented?.type)).toEqual(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ssh-rsa'])
  expect(rsa.tries[2].algorithms).toEqual([
    'ecdsa-sha2-nistp384',
    'ecdsa-sha2-nistp521',
    'rsa-sha2-512',
    'rsa-sha2-256'
  ])
  expect(rsa.tries[2].presented?.fingerprint).toBe(key(a, 'rsa').fingerprint)

  // A known_hosts entry says its type: that type is asked for first, one try.
  const known = await connect(ssh({ hosts: hostOf(a), 'known-hosts': key(a, 'rsa').knownHosts }))
  expect(known.tries).toHaveLength(1)
  expect(known.tries[0].algorithms.slice(0, 2)).toEqual(['rsa-sha2-512', 'rsa-sha2-256'])

  // A pin that matches none of the server's keys: every key type is tried once, then a clear refusal.
  await expect(connect(ssh({ hosts: hostOf(a), 'host-fingerprint': b.fingerprint }))).rejects.toThrow(
    /host 127\.0\.0\.2:\d+: host key SHA256:\S+ \(ssh-ed25519\) does NOT match the key pinned for \[127\.0\.0\.2\]:\d+ in host-fingerprint.*Keys the server presented: SHA256:\S+ \(ssh-ed25519\), SHA256:\S+ \(ecdsa-sha2-nistp256\), SHA256:\S+ \(ssh-rsa\)/
  )
  expect(log(a)).toMatch(/Accepted publickey for ddhka/)
})

test('pins bind to hosts: a key pinned for host A is refused for host B', async () => {
  const hosts = `${hostOf(a)}, ${hostOf(b)}`
  // Swapped: each host's own key is pinned, but for the other host.
  const swapped = ssh({ hosts, 'host-fingerprint': `${a.host}=${b.fingerprint}\n${b.host}=${a.fingerprint}` })
  for (const [i, t] of [a, b].entries()) {
    const before = log(t).length
    await expect(connect(swapped, swapped.hosts[i])).rejects.toThrow(
      new RegExp(
        `host ${t.host.replace(/\./g, '\\.')}:\\d+: host key \\S+ \\(ssh-ed25519\\) does NOT match the key pinned`
      )
    )
    expect(log(t).slice(before)).not.toMatch(/Accepted publickey|Failed publickey|Postponed publickey/)
  }
  // Bound right, both connect.
  const right = ssh({
    hosts,
    'host-fingerprint': `${hostOf(a)}=${a.fingerprint}, ${hostOf(b)}=${b.fingerprint}`
  })
  await connect(right, right.hosts[0])
  await connect({ ...right, user: b.user, privateKey: b.privateKey }, right.hosts[1])
  // One bare fingerprint for two hosts is a settings error, before anything connects.
  expect(() => ssh({ hosts, 'host-fingerprint': a.fingerprint })).toThrow(
    /input 'host-fingerprint': SHA256:\S+ is not bound to a host, and there are 2 hosts/
  )
})

test('the jump host is verified against its own pin', async () => {
  const jump = { hosts: hostOf(a), 'jump-host': `${b.user}@${hostOf(b)}` }
  // A bare fingerprint binds to the one host, not to the jump host: the jump host is then unpinned.
  expect(() => ssh({ ...jump, 'host-fingerprint': a.fingerprint })).toThrow(
    /nothing pins the host key of the jump host 127\.0\.0\.3:\d+/
  )
  // The jump host's key pinned for the target only (as a second key of it) and A's key pinned for the jump
  // host: the jump host is refused, before authentication.
  const before = log(b).length
  const crossed = ssh({
    ...jump,
    'host-fingerprint': `${hostOf(a)}=${a.fingerprint} ${hostOf(a)}=${b.fingerprint} ${hostOf(b)}=${a.fingerprint}`
  })
  await expect(connect(crossed)).rejects.toThrow(
    /host jump host 127\.0\.0\.3: host key \S+ \(ssh-ed25519\) does NOT match the key pinned for \[127\.0\.0\.3\]:\d+/
  )
  expect(log(b).slice(before)).not.toMatch(/Accepted publickey|Failed publickey|Postponed publickey/)
  // Each with its own pin (the jump host's in known-hosts, the target's in host-fingerprint): connects.
  const c = await connect(ssh({ ...jump, 'known-hosts': b.knownHosts, 'host-fingerprint': a.fingerprint }))
  expect(c.via).toBeDefined()
  expect(log(b).slice(before)).toMatch(new RegExp(`Accepted publickey for ${b.user}`))
})

test('a known_hosts line with a typo of @revoked or a @cert-authority line is refused before connecting', async () => {
  const key = a.knownHosts.split(' ').slice(1).join(' ')
  const cases = [
    // OpenSSH ignores a line with an unknown marker; reading it as a plain entry would trust a revoked key.
    {
      lines: `@revokd [${a.host}]:${a.sshPort} ${key}`,
      error: /line 1 \("@revokd .*"\): unknown marker "@revokd"/
    },
    {
      lines: `${a.knownHosts}\n@cert-authority *.example.com,[${a.host}]:${a.sshPort} ${key}`,
      error:
        /line 2 \("@cert-authority .*"\): @cert-authority lines are not supported: OpenSSH host certificates/
    }
  ]
  for (const c of cases) {
    const before = log(a).length
    const r = await runAction(
      deployInputs(a, {
        mode: 'deploy',
        checks: 'none',
        'dry-run': 'true',
        hosts: hostOf(a),
        'known-hosts': c.lines
      }),
      { workspace: repo.dir }
    )
    expect(r.code).not.toBe(0)
    const errors = r.log.split('\n').filter(l => l.startsWith('::error'))
    expect(errors.join('\n')).toMatch(/input 'known-hosts': /)
    expect(errors.join('\n')).toMatch(c.error)
    expect(r.log).not.toContain('connected as')
    // sshd saw no connection at all.
    expect(log(a).slice(before)).toBe('')
  }
  expect(existsSync(join(a.deployPath, 'releases'))).toBe(false)
})

test('the jump hop has the connect timeout', async () => {
  // A listening socket whose accept queue is full: the jump host's connect() to it never completes.
  const blackhole: ChildProcess = spawn(
    '/usr/bin/python3',
    [
      '-c',
      [
        'import socket, time',
        "s = socket.socket(); s.bind(('127.0.0.4', 0)); s.listen(0)",
        'port = s.getsockname()[1]',
        'fill = [socket.socket() for _ in range(4)]',
        "[(c.setblocking(False), c.connect_ex(('127.0.0.4', port))) for c in fill]",
        'time.sleep(0.3)',
        'print(port, flush=True)',
        'time.sleep(600)'
      ].join('\n')
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] }
  )
  try {
    const port = await new Promise<number>((resolve, reject) => {
      blackhole.stdout!.once('data', d => resolve(Number(String(d).trim())))
      blackhole.once('exit', code => reject(new Error(`blackhole exited ${code}`)))
    })
    const s = {
      ...ssh({
        hosts: `127.0.0.4:${port}`,
        'jump-host': `${b.user}@${hostOf(b)}`,
        'known-hosts': b.knownHosts,
        'host-fingerprint': a.fingerprint
      }),
      connectTimeout: 2
    }
    const started = Date.now()
    const outcome = await Promise.race([
      connect(s).then(
        () => 'connected',
        (e: Error) => e.message
      ),
      new Promise<string>(r => setTimeout(() => r('still waiting after 20 s'), 20_000).unref())
    ])
    expect(outcome).toMatch(
      new RegExp(
        `^host 127\\.0\\.0\\.4:${port}: jump host 127\\.0\\.0\\.3 did not open a connection to port ${port} within 2 s`
      )
    )
    expect(Date.now() - started).toBeLessThan(6000)
  } finally {
    blackhole.kill('SIGKILL')
  }
})

test('a hosts entry of deploy.yml carries its own fingerprint (an ECDSA one), through the built action', async () => {
  repo
    .write(
      'hostpins.yml',
      `hosts:\n  - host: ${hostOf(a)}\n    fingerprint: ${key(a, 'ecdsa').fingerprint}\n`
    )
    .commit('host pins')
  const before = log(a).length
  const r = await runAction(
    deployInputs(a, {
      mode: 'deploy',
      checks: 'none',
      'dry-run': 'true',
      config: 'hostpins.yml',
      hosts: '',
      'known-hosts': ''
    }),
    { workspace: repo.dir }
  )
  expect(r.log).toContain('connected as')
  expect(r.code).toBe(0)
  expect(log(a).slice(before)).toMatch(new RegExp(`Accepted publickey for ${a.user}`))
})
