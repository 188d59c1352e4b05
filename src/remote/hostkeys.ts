/**
 * Host key pinning, read the way OpenSSH reads it: the presented key must match a known_hosts entry for that
 * host and port, or a SHA256 fingerprint pinned for that host. Pure functions; the SSH transport calls
 * `verifyHostKey` during key exchange, before authenticating.
 */
import { createHash, createHmac } from 'node:crypto'

export interface KnownHost {
  /** Host patterns, lowercased (OpenSSH matches host names without regard to case). */
  patterns: string[]
  /** `|1|salt|hash` entries. */
  hashed?: { salt: Buffer; hash: Buffer }
  keyType: string
  key: Buffer
  revoked: boolean
  /** 1-based line in the known-hosts text, for messages. */
  line: number
}

/** A `SHA256:…` fingerprint pinned for one host (`port` undefined: that host on any port). */
export interface FingerprintPin {
  /** Lowercased host name or address. */
  host: string
  port?: number
  fingerprint: string
}

export interface HostPins {
  knownHosts: KnownHost[]
  fingerprints: FingerprintPin[]
}

/** A known-hosts line that cannot be trusted to mean what it says; refused before any connection. */
export class KnownHostsError extends Error {
  constructor(
    readonly line: number,
    text: string,
    message: string
  ) {
    super(`line ${line} ("${text.length > 60 ? text.slice(0, 57) + '…' : text}"): ${message}`)
    this.name = 'KnownHostsError'
  }
}

const MARKERS = ['@revoked', '@cert-authority']

/**
 * Parses known_hosts text. Throws KnownHostsError for a line that OpenSSH would skip or treat differently
 * than it looks: an unknown `@marker` (OpenSSH ignores such a line, so a typo of `@revoked` would silently
 * un-revoke a key), a `@cert-authority` line (host certificates are not supported by the transport), or a
 * line that is not `hosts keytype base64-key` (a broken `@revoked` line must not be dropped quietly).
 */
export function parseKnownHosts(text: string): KnownHost[] {
  const out: KnownHost[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const lineNo = i + 1
    const line = raw.trim()
    if (!line || line.startsWith('#')) return
    const fields = line.split(/\s+/)
    let revoked = false
    if (fields[0].startsWith('@')) {
      const marker = fields.shift()!
      if (marker === '@cert-authority') {
        throw new KnownHostsError(
          lineNo,
          line,
          '@cert-authority lines are not supported: OpenSSH host certificates cannot be verified by this action yet; pin the host key itself (ssh-keyscan -p PORT HOST, checked by hand)'
        )
      }
      if (!MARKERS.includes(marker)) {
        throw new KnownHostsError(
          lineNo,
          line,
          `unknown marker "${marker.slice(0, 40)}"; expected @revoked (or no marker). OpenSSH ignores such a line, so it is refused rather than guessed at`
        )
      }
      revoked = marker === '@revoked'
    }
    const [hosts, keyType, keyB64] = fields
    const key =
      keyB64 && /^[A-Za-z0-9+/]+={0,2}$/.test(keyB64) ? Buffer.from(keyB64, 'base64') : Buffer.alloc(0)
    if (!hosts || !keyType || key.length === 0 || keyTypeOf(key) !== keyType) {
      throw new KnownHostsError(
        lineNo,
        line,
        'is not a known_hosts entry; expected `[@revoked] host[,host…] keytype base64-key`, as ssh-keyscan prints'
      )
    }
    const h = /^\|1\|([^|]+)\|(.+)$/.exec(hosts)
    out.push({
      patterns: h ? [] : hosts.toLowerCase().split(','),
      hashed: h ? { salt: Buffer.from(h[1], 'base64'), hash: Buffer.from(h[2], 'base64') } : undefined,
      keyType,
      key,
      revoked,
      line: lineNo
    })
  })
  return out
}

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise; lowercased, as OpenSSH does. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase()
  return port === 22 ? h : `[${h}]:${port}`
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('')
        .map(c => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('') +
      '$'
  )
  return re.test(name)
}

function entryMatches(entry: KnownHost, host: string, port: number): boolean {
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

export function pinMatches(pin: FingerprintPin, host: string, port: number): boolean {
  return pin.host === host.toLowerCase() && (pin.port === undefined || pin.port === port)
}

/** Whether anything (a known-hosts entry or a fingerprint) pins a key for this host. */
export function hasPin(pins: HostPins, host: string, port: number): boolean {
  return (
    pins.fingerprints.some(p => pinMatches(p, host, port)) ||
    pins.knownHosts.some(e => !e.revoked && entryMatches(e, host, port))
  )
}

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/

/**
 * Parses `host-fingerprint`: `SHA256:…` (bare, bound later to the only host) or `host=SHA256:…` /
 * `host:port=SHA256:…` / `[v6addr]:port=SHA256:…` pairs, separated by spaces, commas or newlines.
 * Returns the pins and, for each bad word, a message.
 */
export function parseFingerprintPins(text: string): {
  bare: string[]
  bound: FingerprintPin[]
  problems: string[]
} {
  const bare: string[] = []
  const bound: FingerprintPin[] = []
  const problems: string[] = []
  for (const word of text.split(/[\s,]+/).filter(Boolean)) {
    const pair = /^([^=]+)=(SHA256:.*)$/.exec(word)
    const [spec, fp] = pair ? [pair[1], pair[2]] : ['', word]
    if (!FINGERPRINT.test(fp)) {
      problems.push(
        `"${word.slice(0, 80)}" is not a SHA256 fingerprint; expected the form ssh-keygen -lf prints, e.g. SHA256:abc…(43 characters), or host=SHA256:…`
      )
      continue
    }
    if (!spec) {
      bare.push(fp)
      continue
    }
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(spec) ?? /^([^:[\]]+):(\d+)$/.exec(spec)
    const host = (m ? m[1] : spec).toLowerCase()
    const port = m ? Number(m[2]) : undefined
    if (!/^[a-z0-9._:-]+$/.test(host) || (port !== undefined && (port < 1 || port > 65535))) {
      problems.push(
        `"${spec.slice(0, 80)}" in "${word.slice(0, 80)}" is not a host; expected host=SHA256:… or host:port=SHA256:…`
      )
      continue
    }
    bound.push({ host, port, fingerprint: fp })
  }
  return { bare, bound, problems }
}

export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '')
}

/** The key type inside an SSH public key blob (its first string). */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown'
  const n = key.readUInt32BE(0)
  if (n > key.length - 4) return 'unknown'
  return key.subarray(4, 4 + n).toString('latin1')
}

/**
 * `retry`: the refused key is of a type nothing pins for this host by type, and a pin could be a key of
 * another type (a fingerprint does not say its type), so asking the server for another type may find it.
 */
export type Verdict = { ok: true; how: string } | { ok: false; reason: string; retry: boolean }

export function verifyHostKey(key: Buffer, host: string, port: number, pins: HostPins): Verdict {
  const fp = fingerprint(key)
  const type = keyTypeOf(key)
  const entries = pins.knownHosts.filter(e => entryMatches(e, host, port))
  const fps = pins.fingerprints.filter(p => pinMatches(p, host, port))
  if (entries.some(e => e.revoked && e.key.equals(key))) {
    return { ok: false, retry: false, reason: `host key ${fp} is marked @revoked in known-hosts` }
  }
  const pinned = entries.filter(e => !e.revoked)
  if (pinned.some(e => e.key.equals(key))) return { ok: true, how: `known-hosts (${fp})` }
  if (fps.some(p => p.fingerprint === fp)) return { ok: true, how: `host-fingerprint (${fp})` }
  const name = knownHostsName(host, port)
  // A known-hosts key of the same type that differs is a changed key (OpenSSH's "REMOTE HOST IDENTIFICATION
  // HAS CHANGED"): never look for another key then.
  const sameType = pinned.some(e => e.keyType === type)
  const retry = !sameType && (fps.length > 0 || pinned.length > 0)
  const reason =
    pinned.length > 0 || fps.length > 0
      ? `host key ${fp} (${type}) does NOT match the key pinned for ${name} in ${pinned.length ? 'known-hosts' : 'host-fingerprint'}: it changed, or someone is in the middle. Refusing to connect. If the server's key changed on purpose, update ${pinned.length ? 'known-hosts' : 'host-fingerprint'}`
      : `host key ${fp} (${type}) is not pinned: no known-hosts entry and no host-fingerprint for ${name}. Refusing to connect (no trust on first use). Add the output of \`ssh-keyscan -p ${port} ${host}\` to known-hosts after checking it, or ${host}=SHA256:… to host-fingerprint`
  return { ok: false, reason, retry }
}

/**
 * Host key algorithms the client offers, best first, as OpenSSH 9's default minus the SHA-1 `ssh-rsa`
 * signature (disabled by OpenSSH since 8.8).
 */
export const HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256'
]

/** The key type (as in a public key blob) an algorithm signs with. */
function keyTypeOfAlgorithm(alg: string): string {
  return alg.startsWith('rsa-sha2-') ? 'ssh-rsa' : alg
}

/**
 * Host key algorithms to ask for first, so a server with several keys presents the one that was pinned. Types
 * the transport cannot verify (ssh-dss, sk-…@openssh.com) are left out: ssh2 refuses an unknown name in the
 * list, and such a key can never be presented anyway.
 */
export function pinnedKeyTypes(knownHosts: KnownHost[], host: string, port: number): string[] {
  const out = new Set<string>()
  for (const e of knownHosts) {
    if (e.revoked || !entryMatches(e, host, port)) continue
    if (e.keyType === 'ssh-rsa') ['rsa-sha2-512', 'rsa-sha2-256'].forEach(x => out.add(x))
    else if (HOST_KEY_ALGORITHMS.includes(e.keyType)) out.add(e.keyType)
  }
  return [...out]
}

/** The exact, ordered algorithm list of the first try: the types known-hosts pins for the host, then the rest. */
export function firstAlgorithms(pins: HostPins, host: string, port: number): string[] {
  const first = pinnedKeyTypes(pins.knownHosts, host, port)
  return [...new Set([...first, ...HOST_KEY_ALGORITHMS])]
}

/** The list of the next try after the server presented a key of `refusedType` that nothing pins. */
export function nextAlgorithms(tried: string[], refusedType: string): string[] {
  return tried.filter(a => keyTypeOfAlgorithm(a) !== refusedType)
}
