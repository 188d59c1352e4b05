/**
 * Host key benchmark: how long a verified connection takes for each kind of pin, against one sandbox target
 * (real OpenSSH 9 on 127.0.0.2 with an ed25519, an ECDSA P-256 and an RSA 3072 host key). A SHA256 fingerprint
 * does not say its key type, so a fingerprint of a key the server does not offer first costs a try per type
 * before it (ECDSA: 2 tries, RSA: 3); a known-hosts entry says its type, so it is asked for first (1 try).
 * Each sample is `connectHost()` (TCP, key exchange, host key check, public key authentication) then dispose;
 * the kinds alternate round by round.
 *
 * Run: `bash bench/run.sh hostkeys` (root: the sandbox makes a user). Env: BENCH_ROUNDS (default 21).
 * Writes bench/results-hostkeys.md and prints it.
 */
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startTarget } from '../sandbox/target.js'
import { connectHost } from '../src/remote/connect.js'
import type { SshSettings } from '../src/settings.js'
import { ROOT } from '../__tests__/helpers/action.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS || 21)
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 500) throw new Error('BENCH_ROUNDS must be 1..500')

const t = await startTarget({ name: 'ddbhk', bindIp: '127.0.0.2', hostKeyTypes: ['ed25519', 'ecdsa', 'rsa'] })
try {
  const host = { host: t.host, port: t.sshPort }
  const key = (type: string) => t.hostKeys.find(k => k.type === type)!
  const base: SshSettings = {
    hosts: [host],
    user: t.user,
    privateKey: t.privateKey,
    fingerprints: [],
    connectTimeout: 20,
    commandTimeout: 900
  }
  const pin = (fp: string): Partial<SshSettings> => ({
    fingerprints: [{ host: t.host, port: t.sshPort, fingerprint: fp }]
  })
  const kinds: Array<{ name: string; s: SshSettings }> = [
    { name: 'ed25519 fingerprint (`host-fingerprint`)', s: { ...base, ...pin(key('ed25519').fingerprint) } },
    { name: 'ECDSA fingerprint (`host-fingerprint`)', s: { ...base, ...pin(key('ecdsa').fingerprint) } },
    { name: 'RSA fingerprint (`host-fingerprint`)', s: { ...base, ...pin(key('rsa').fingerprint) } },
    { name: 'ed25519 `known-hosts` line', s: { ...base, knownHosts: key('ed25519').knownHosts } },
    { name: 'ECDSA `known-hosts` line', s: { ...base, knownHosts: key('ecdsa').knownHosts } },
    { name: 'RSA `known-hosts` line', s: { ...base, knownHosts: key('rsa').knownHosts } }
  ]
  const samples = kinds.map(() => [] as number[])
  const tries = kinds.map(() => 0)
  // One unmeasured connection each (JIT, sshd's first fork).
  for (const k of kinds) (await connectHost(host, k.s, 'warm-up')).ssh.dispose()
  for (let r = 0; r < ROUNDS; r++) {
    for (let j = 0; j < kinds.length; j++) {
      const i = (j + r) % kinds.length
      const started = process.hrtime.bigint()
      const c = await connectHost(host, kinds[i].s, 'bench')
      samples[i].push(Number(process.hrtime.bigint() - started) / 1e6)
      tries[i] = c.tries.length
      c.ssh.dispose()
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y)
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
  }
  const ms = (x: number) => x.toFixed(1)
  const rows = kinds.map(
    (k, i) =>
      `| ${k.name} | ${tries[i]} | ${ms(median(samples[i]))} | ${ms(Math.min(...samples[i]))} – ${ms(Math.max(...samples[i]))} |`
  )
  const report = [
    '# Host key benchmark: connect time per kind of pin',
    '',
    `Command: \`bash bench/run.sh hostkeys\` with BENCH_ROUNDS=${ROUNDS}.`,
    '',
    `Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), Node ${process.version}, load average ${os
      .loadavg()
      .map(x => x.toFixed(1))
      .join(' ')} at the end.`,
    '',
    'One sandbox sshd on 127.0.0.2 with ed25519, ECDSA P-256 and RSA 3072 host keys; each sample is `connectHost()`',
    '(TCP + key exchange + host key check + public key authentication), then dispose.',
    '',
    '| pin | tries | median (ms) | min – max (ms) |',
    '|---|---|---|---|',
    ...rows,
    ''
  ].join('\n')
  writeFileSync(path.join(ROOT, 'bench/results-hostkeys.md'), report)
  process.stdout.write(report)
} finally {
  await t.stop()
}
