import { createHmac, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  fingerprint,
  keyTypeOf,
  parseKnownHosts,
  pinnedKeyTypes,
  verifyHostKey
} from '../../src/remote/hostkeys.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-hk-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
function hostKey(): { blob: Buffer; line: string; fp: string } {
  const f = join(dir, `h${Math.random().toString(36).slice(2)}`)
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', f])
  const pub = readFileSync(`${f}.pub`, 'utf8').trim()
  const fp = execFileSync('ssh-keygen', ['-lf', `${f}.pub`])
    .toString()
    .split(' ')[1]
  return { blob: Buffer.from(pub.split(' ')[1], 'base64'), line: pub.split(' ').slice(0, 2).join(' '), fp }
}

describe('host key pinning', () => {
  const a = hostKey()
  const b = hostKey()
  it('computes the fingerprint ssh-keygen prints', () => {
    expect(fingerprint(a.blob)).toBe(a.fp)
    expect(keyTypeOf(a.blob)).toBe('ssh-ed25519')
  })
  it('accepts the pinned key for that host and port only', () => {
    const pins = {
      knownHosts: parseKnownHosts(`# comment\n[127.0.0.1]:2222 ${a.line}\nother.example ${b.line}\n`),
      fingerprints: []
    }
    expect(verifyHostKey(a.blob, '127.0.0.1', 2222, pins)).toMatchObject({ ok: true })
    expect(verifyHostKey(a.blob, '127.0.0.1', 22, pins)).toMatchObject({
      ok: false,
      reason: expect.stringContaining('is not pinned')
    })
    expect(verifyHostKey(b.blob, '127.0.0.1', 2222, pins)).toMatchObject({
      ok: false,
      reason: expect.stringContaining('does NOT match the key pinned for [127.0.0.1]:2222')
    })
  })
  it('matches hashed entries, wildcards and negations', () => {
    const salt = randomBytes(20)
    const hash = createHmac('sha1', salt).update('web1.example.com').digest()
    const text = `|1|${salt.toString('base64')}|${hash.toString('base64')} ${a.line}\n*.example.org,!bad.example.org ${b.line}`
    const pins = { knownHosts: parseKnownHosts(text), fingerprints: [] }
    expect(verifyHostKey(a.blob, 'web1.example.com', 22, pins).ok).toBe(true)
    expect(verifyHostKey(a.blob, 'web2.example.com', 22, pins).ok).toBe(false)
    expect(verifyHostKey(b.blob, 'x.example.org', 22, pins).ok).toBe(true)
    expect(verifyHostKey(b.blob, 'bad.example.org', 22, pins).ok).toBe(false)
  })
  it('honours @revoked and fingerprints', () => {
    const revoked = {
      knownHosts: parseKnownHosts(`@revoked * ${a.line}`),
      fingerprints: [{ host: 'h', fingerprint: a.fp }]
    }
    expect(verifyHostKey(a.blob, 'h', 22, revoked)).toMatchObject({
      ok: false,
      reason: expect.stringContaining('@revoked')
    })
    const pin = (fp: string) => ({ knownHosts: [], fingerprints: [{ host: 'h', fingerprint: fp }] })
    expect(verifyHostKey(b.blob, 'h', 22, pin(b.fp)).ok).toBe(true)
    expect(verifyHostKey(b.blob, 'h', 22, pin(a.fp)).ok).toBe(false)
  })
  it('asks the server for the pinned key type first', () => {
    // SHA-1 ssh-rsa signatures are not asked for (OpenSSH's client dropped them in 8.8).
    const pins = parseKnownHosts(`h ${a.line}\nh ssh-rsa AAAAB3NzaC1yc2E=`)
    expect(pinnedKeyTypes(pins, 'h', 22)).toEqual(['ssh-ed25519', 'rsa-sha2-512', 'rsa-sha2-256'])
  })
})
