import { createHmac, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  firstAlgorithms,
  HOST_KEY_ALGORITHMS,
  nextAlgorithms,
  parseFingerprintPins,
  parseKnownHosts,
  verifyHostKey,
  type FingerprintPin
} from '../../src/remote/hostkeys.js'
import { loadSettings, SettingsError, type InputName } from '../../src/settings.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-pins-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function keygen(type: string, comment = 'k'): { blob: Buffer; line: string; fp: string; priv: string } {
  const f = join(dir, `h${Math.random().toString(36).slice(2)}`)
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', comment, '-f', f])
  const pub = readFileSync(`${f}.pub`, 'utf8').trim()
  const fp = execFileSync('ssh-keygen', ['-lf', `${f}.pub`])
    .toString()
    .split(' ')[1]
  const [t, b64] = pub.split(' ')
  return { blob: Buffer.from(b64, 'base64'), line: `${t} ${b64}`, fp, priv: readFileSync(f, 'utf8') }
}
const ed = keygen('ed25519')
const ec = keygen('ecdsa')
const FP_A = 'SHA256:' + 'A'.repeat(43)
const FP_B = 'SHA256:' + 'B'.repeat(42) + 'Q'

describe('known_hosts as OpenSSH reads it', () => {
  it('refuses an unknown @marker (a typo of @revoked) naming the line, instead of trusting the key', () => {
    expect(() => parseKnownHosts(`# pins\nh ${ec.line}\n@revokd h ${ed.line}\n`)).toThrow(
      /^line 3 \("@revokd h ssh-ed25519 .*…"\): unknown marker "@revokd"; expected @revoked/
    )
  })
  it('refuses @cert-authority lines: host certificates are not supported', () => {
    expect(() => parseKnownHosts(`@cert-authority *.example.com ${ed.line}`)).toThrow(
      /^line 1 .*@cert-authority lines are not supported: OpenSSH host certificates cannot be verified/
    )
  })
  it('refuses a broken line rather than dropping it (a dropped @revoked line would un-revoke a key)', () => {
    for (const text of [
      `@revoked h ${ed.line.slice(0, 30)}!`,
      `@revoked h`,
      `h ssh-rsa ${ed.line.split(' ')[1]}`
    ]) {
      expect(() => parseKnownHosts(text)).toThrow(/^line 1 .*is not a known_hosts entry/)
    }
  })
  it('matches host names without regard to case, in patterns, hosts and hashed entries', () => {
    const salt = randomBytes(20)
    const hash = createHmac('sha1', salt).update('[web2.example.com]:2222').digest()
    const pins = {
      knownHosts: parseKnownHosts(
        `Web1.Example.COM ${ed.line}\n|1|${salt.toString('base64')}|${hash.toString('base64')} ${ec.line}\n!BAD.example.org,*.EXAMPLE.org ${ed.line}`
      ),
      fingerprints: []
    }
    expect(verifyHostKey(ed.blob, 'web1.example.com', 22, pins).ok).toBe(true)
    expect(verifyHostKey(ed.blob, 'WEB1.example.com', 22, pins).ok).toBe(true)
    expect(verifyHostKey(ec.blob, 'Web2.Example.Com', 2222, pins).ok).toBe(true)
    expect(verifyHostKey(ed.blob, 'x.example.ORG', 22, pins).ok).toBe(true)
    expect(verifyHostKey(ed.blob, 'bad.EXAMPLE.org', 22, pins).ok).toBe(false)
  })
})

describe('host-fingerprint pins', () => {
  it('parses bare fingerprints and host=, host:port=, [v6]:port= pairs, separated by spaces, commas, new lines', () => {
    const withPad = `${ed.fp}=`
    expect(
      parseFingerprintPins(
        `${FP_A}\nWeb1.example.com=${FP_B}, web2:2222=${withPad} [::1]:2200=${FP_A}\n10.0.0.5=${FP_A}`
      )
    ).toEqual({
      bare: [FP_A],
      bound: [
        { host: 'web1.example.com', port: undefined, fingerprint: FP_B },
        { host: 'web2', port: 2222, fingerprint: withPad },
        { host: '::1', port: 2200, fingerprint: FP_A },
        { host: '10.0.0.5', port: undefined, fingerprint: FP_A }
      ],
      problems: []
    })
  })
  it('names each bad word', () => {
    const { problems } = parseFingerprintPins(`web1=SHA256:short md5=ab:cd bad$host=${FP_A} h:99999=${FP_A}`)
    expect(problems).toEqual([
      expect.stringMatching(/^"web1=SHA256:short" is not a SHA256 fingerprint/),
      expect.stringMatching(/^"md5=ab:cd" is not a SHA256 fingerprint/),
      expect.stringMatching(/^"bad\$host" in .* is not a host/),
      expect.stringMatching(/^"h:99999" in .* is not a host/)
    ])
  })
  it('a key pinned for host A is refused for host B; a port in the pin binds that port only', () => {
    const fingerprints: FingerprintPin[] = [
      { host: 'a.example.com', fingerprint: ed.fp },
      { host: 'b.example.com', port: 2222, fingerprint: ec.fp }
    ]
    const pins = { knownHosts: [], fingerprints }
    expect(verifyHostKey(ed.blob, 'A.example.com', 2200, pins)).toMatchObject({ ok: true })
    expect(verifyHostKey(ed.blob, 'b.example.com', 2222, pins)).toMatchObject({
      ok: false,
      reason: expect.stringContaining(
        'does NOT match the key pinned for [b.example.com]:2222 in host-fingerprint'
      )
    })
    expect(verifyHostKey(ec.blob, 'b.example.com', 2222, pins).ok).toBe(true)
    expect(verifyHostKey(ec.blob, 'b.example.com', 22, pins)).toMatchObject({
      ok: false,
      reason: expect.stringContaining('is not pinned')
    })
  })
})

describe('asking the server for the pinned key type', () => {
  it('first try: the known-hosts types of that host first, then every type, as an exact ordered list', () => {
    const knownHosts = parseKnownHosts(`[h]:2222 ${ec.line}\nother ssh-rsa AAAAB3NzaC1yc2E=`)
    expect(firstAlgorithms({ knownHosts, fingerprints: [] }, 'h', 2222)).toEqual([
      'ecdsa-sha2-nistp256',
      'ssh-ed25519',
      'ecdsa-sha2-nistp384',
      'ecdsa-sha2-nistp521',
      'rsa-sha2-512',
      'rsa-sha2-256'
    ])
    expect(firstAlgorithms({ knownHosts, fingerprints: [] }, 'x', 22)).toEqual(HOST_KEY_ALGORITHMS)
    // ssh2 throws on a name it does not support: a pinned ssh-dss or security-key host key is not asked for.
    const odd = parseKnownHosts(
      `h ssh-dss AAAAB3NzaC1kc3M=\nh sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t`
    )
    expect(firstAlgorithms({ knownHosts: odd, fingerprints: [] }, 'h', 22)).toEqual(HOST_KEY_ALGORITHMS)
  })
  it('next try: without the refused key type (both RSA signature algorithms for an RSA key)', () => {
    expect(nextAlgorithms(HOST_KEY_ALGORITHMS, 'ssh-ed25519')).toEqual(HOST_KEY_ALGORITHMS.slice(1))
    expect(nextAlgorithms(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-ed25519'], 'ssh-rsa')).toEqual([
      'ssh-ed25519'
    ])
  })
  it('retries only when a pin could be a key of another type, never for a changed or revoked key', () => {
    const fp = { knownHosts: [], fingerprints: [{ host: 'h', fingerprint: ec.fp }] }
    expect(verifyHostKey(ed.blob, 'h', 22, fp)).toMatchObject({ ok: false, retry: true })
    const other = keygen('ed25519')
    const changed = { knownHosts: parseKnownHosts(`h ${other.line}`), fingerprints: [] }
    expect(verifyHostKey(ed.blob, 'h', 22, changed)).toMatchObject({ ok: false, retry: false })
    const revoked = {
      knownHosts: parseKnownHosts(`@revoked h ${ed.line}`),
      fingerprints: [...fp.fingerprints]
    }
    expect(verifyHostKey(ed.blob, 'h', 22, revoked)).toMatchObject({ ok: false, retry: false })
    const none = { knownHosts: [], fingerprints: [] }
    expect(verifyHostKey(ed.blob, 'h', 22, none)).toMatchObject({ ok: false, retry: false })
  })
})

describe('settings: pins bound to hosts', () => {
  const base: Partial<Record<InputName, string>> = {
    mode: 'deploy',
    user: 'deploy',
    'ssh-key': ed.priv,
    'deploy-path': '/srv/app'
  }
  const load = (inputs: Partial<Record<InputName, string>>) =>
    loadSettings({
      input: n => inputs[n] ?? '',
      env: {
        GITHUB_WORKSPACE: dir,
        GITHUB_EVENT_NAME: 'push',
        GITHUB_REF: 'refs/heads/main',
        GITHUB_SHA: 'abc1234'
      }
    })
  const problems = (inputs: Partial<Record<InputName, string>>): string[] => {
    try {
      load(inputs)
    } catch (e) {
      if (e instanceof SettingsError) return e.problems.map(p => `${p.where}: ${p.message}`)
      throw e
    }
    return []
  }

  it('binds one bare fingerprint to the one host, not to the jump host', () => {
    const s = load({
      ...base,
      hosts: 'web1:2222',
      'host-fingerprint': FP_A,
      'known-hosts': `bastion ${ed.line}`,
      'jump-host': 'j@bastion'
    })
    expect(s.ssh.fingerprints).toEqual([{ host: 'web1', port: 2222, fingerprint: FP_A }])
    expect(problems({ ...base, hosts: 'web1', 'host-fingerprint': FP_A, 'jump-host': 'j@bastion' })).toEqual([
      expect.stringMatching(
        /^input 'host-fingerprint': nothing pins the host key of the jump host bastion: known-hosts has no entry for bastion/
      )
    ])
  })
  it('refuses a bare fingerprint with several hosts, naming host-fingerprint and showing the pair form', () => {
    expect(problems({ ...base, hosts: 'web1, web2', 'host-fingerprint': FP_A })).toEqual([
      `input 'host-fingerprint': ${FP_A} is not bound to a host, and there are 2 hosts; a bare fingerprint is accepted only with one host. Expected host=SHA256:… pairs, e.g. web1=${FP_A}`
    ])
  })
  it('accepts pairs for every host and the jump host; refuses a pair for a host that is not there', () => {
    const s = load({
      ...base,
      hosts: 'web1, web2:2222',
      'jump-host': 'j@Bastion:2200',
      'host-fingerprint': `web1=${FP_A} web2:2222=${FP_B} bastion:2200=${FP_A}`
    })
    expect(s.ssh.fingerprints.map(p => p.host)).toEqual(['web1', 'web2', 'bastion'])
    expect(
      problems({ ...base, hosts: 'web1, web2', 'host-fingerprint': `web1=${FP_A} web2=${FP_A} wbe2=${FP_B}` })
    ).toEqual([
      expect.stringMatching(
        /^input 'host-fingerprint': wbe2=SHA256:B+Q names a host that is neither in hosts nor the jump-host; expected one of web1, web2$/
      )
    ])
    expect(problems({ ...base, hosts: 'web1, web2', 'host-fingerprint': `web1=${FP_A}` })).toEqual([
      expect.stringMatching(
        /nothing pins the host key of web2: known-hosts has no entry for web2 and host-fingerprint no web2=SHA256:… pair/
      )
    ])
  })
  it('reads per-host fingerprints from the hosts entries of the config file', () => {
    writeFileSync(
      join(dir, 'deploy.yml'),
      `hosts:\n  - host: web1.example.com:2222\n    fingerprint: ${FP_A}\n  - host: web2.example.com\n    fingerprint: [${FP_A}, ${FP_B}]\n  - web3.example.com\n`
    )
    try {
      expect(problems({ ...base })).toEqual([
        expect.stringMatching(/nothing pins the host key of web3\.example\.com:/)
      ])
      const s = load({ ...base, 'host-fingerprint': `web3.example.com=${FP_B}` })
      expect(s.ssh.hosts).toEqual([
        { host: 'web1.example.com', port: 2222 },
        { host: 'web2.example.com', port: 22 },
        { host: 'web3.example.com', port: 22 }
      ])
      expect(s.ssh.fingerprints).toEqual([
        { host: 'web3.example.com', port: undefined, fingerprint: FP_B },
        { host: 'web1.example.com', port: 2222, fingerprint: FP_A },
        { host: 'web2.example.com', port: undefined, fingerprint: FP_A },
        { host: 'web2.example.com', port: undefined, fingerprint: FP_B }
      ])
      // The hosts input replaces the file's hosts: their pins are unused, not an error.
      expect(load({ ...base, hosts: 'web9', 'host-fingerprint': FP_B }).ssh.fingerprints).toEqual([
        { host: 'web9', port: 22, fingerprint: FP_B }
      ])
      writeFileSync(join(dir, 'deploy.yml'), `hosts:\n  - host: web1\n    fingreprint: ${FP_A}\n`)
      expect(problems({ ...base, 'host-fingerprint': FP_A })[0]).toMatch(
        /^deploy\.yml: key 'hosts' \(line 1\): an entry that is a mapping must be \{ host: name\[:port\], port: number, fingerprint:/
      )
    } finally {
      rmSync(join(dir, 'deploy.yml'))
    }
  })
  it('refuses a known-hosts line OpenSSH would not read as it looks, naming the input and the line', () => {
    expect(
      problems({ ...base, hosts: 'web1', 'known-hosts': `web1 ${ed.line}\n@revokd web1 ${ec.line}` })
    ).toEqual([
      expect.stringMatching(
        /^input 'known-hosts': line 2 \("@revokd web1 ecdsa-sha2-nistp256 .*"\): unknown marker "@revokd"/
      )
    ])
  })
})
