/**
 * Host key pinning: the presented key must match a known_hosts entry for that host and port, or one of the
 * SHA256 fingerprints. Pure functions; the SSH transport calls `verifyHostKey` before authenticating.
 */
import { createHash, createHmac } from 'node:crypto'

export interface KnownHost {
  patterns: string[]
  /** `|1|salt|hash` entries. */
  hashed?: { salt: Buffer; hash: Buffer }
  keyType: string
  key: Buffer
  revoked: boolean
}

export function parseKnownHosts(text: string): KnownHost[] {
  const out: KnownHost[] = []
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (!line || line.startsWith('#')) continue
    const fields = line.split(/\s+/)
    let revoked = false
    if (fields[0].startsWith('@')) {
      const marker = fields.shift()
      if (marker === '@cert-authority') continue
      revoked = marker === '@revoked'
    }
    if (fields.length < 3) continue
    const [hosts, keyType, keyB64] = fields
    const key = Buffer.from(keyB64, 'base64')
    if (key.length === 0) continue
    const h = /^\|1\|([^|]+)\|(.+)$/.exec(hosts)
    out.push({
      patterns: h ? [] : hosts.split(','),
      hashed: h ? { salt: Buffer.from(h[1], 'base64'), hash: Buffer.from(h[2], 'base64') } : undefined,
      keyType,
      key,
      revoked
    })
  }
  return out
}

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('')
        .map(c => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('') +
      '$',
    'i'
  )
  return re.test(name)
}

export function entryMatches(entry: KnownHost, host: string, port: number): boolean {
  const name = knownHostsName(host, port)
  if (entry.hashed) {
    const digest = createHmac('sha1', entry.hashed.salt).update(name).digest()
    return digest.equals(entry.hashed.hash)
  }
  let matched = false
  for (const p of entry.patterns) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false
    } else if (globMatch(p, name)) matched = true
  }
  return matched
}

export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '')
}

/** The key type inside an SSH public key blob (its first string). */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown'
  const n = key.readUInt32BE(0)
  return key.subarray(4, 4 + n).toString('latin1')
}

export type Verdict = { ok: true; how: string } | { ok: false; reason: string }

export function verifyHostKey(
  key: Buffer,
  host: string,
  port: number,
  pins: { knownHosts: KnownHost[]; fingerprints: string[] }
): Verdict {
  const fp = fingerprint(key)
  const entries = pins.knownHosts.filter(e => entryMatches(e, host, port))
  if (entries.some(e => e.revoked && e.key.equals(key))) {
    return { ok: false, reason: `host key ${fp} is marked @revoked in known-hosts` }
  }
  if (entries.some(e => !e.revoked && e.key.equals(key))) return { ok: true, how: `known-hosts (${fp})` }
  if (pins.fingerprints.includes(fp)) return { ok: true, how: `host-fingerprint (${fp})` }
  const name = knownHostsName(host, port)
  const reason =
    entries.length > 0
      ? `host key ${fp} (${keyTypeOf(key)}) does NOT match the key pinned for ${name} in known-hosts: it changed, or someone is in the middle. Refusing to connect. If the server's key changed on purpose, update known-hosts`
      : `host key ${fp} (${keyTypeOf(key)}) is not pinned: no known-hosts entry for ${name} and no matching host-fingerprint. Refusing to connect (no trust on first use). Add the output of \`ssh-keyscan -p ${port} ${host}\` to known-hosts after checking it`
  return { ok: false, reason }
}

/** Host key algorithms to ask for first, so a server with several keys presents the one that was pinned. */
export function pinnedKeyTypes(knownHosts: KnownHost[], host: string, port: number): string[] {
  const types = knownHosts.filter(e => !e.revoked && entryMatches(e, host, port)).map(e => e.keyType)
  const out = new Set<string>()
  for (const t of types) {
    if (t === 'ssh-rsa') ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'].forEach(x => out.add(x))
    else out.add(t)
  }
  return [...out]
}
