/**
 * SSH and pins: the deploy key, the jump host, and the host key pins bound to the hosts (no trust on first use).
 */
import ssh2 from 'ssh2'
import {
  hasPin,
  KnownHostsError,
  knownHostsName,
  parseFingerprintPins,
  parseKnownHosts,
  pinMatches,
  type FingerprintPin
} from '../remote/hostkeys.js'
import { parseHost, USERNAME, type Host } from './hosts.js'
import type { RawValues } from './sources.js'

export interface SshSettings {
  hosts: Host[]
  user: string
  /** PEM/OpenSSH private key text; kept in memory only. */
  privateKey: string
  passphrase?: string
  /** known_hosts lines (OpenSSH format) that pin host keys. */
  knownHosts?: string
  /** `SHA256:…` fingerprints, each pinned for one host (`host-fingerprint` pairs, hosts entries of the config file). */
  fingerprints: FingerprintPin[]
  /** `user@host:port` of a bastion, when one is used. */
  jumpHost?: { user: string; host: string; port: number }
  /** Seconds to wait for a TCP connection and the SSH handshake. */
  connectTimeout: number
  /** Seconds one remote command may run. */
  commandTimeout: number
}

/** The private key (and its passphrase), checked to be a private key that the passphrase decrypts. */
export function readKey(raw: RawValues, deploying: boolean): { privateKey: string; passphrase?: string } {
  const privateKey = raw.get('ssh-key').value.replace(/\r\n/g, '\n')
  const passphrase = raw.get('ssh-key-passphrase').value || undefined
  if (deploying && !privateKey)
    raw.fail("input 'ssh-key'", 'is empty; expected the private key text, e.g. ${{ secrets.DEPLOY_KEY }}')
  else if (privateKey) {
    const parsed = ssh2.utils.parseKey(privateKey, passphrase)
    if (parsed instanceof Error) {
      const encrypted = /encrypted|passphrase/i.test(parsed.message)
      raw.fail(
        encrypted ? "input 'ssh-key-passphrase'" : "input 'ssh-key'",
        encrypted
          ? passphrase
            ? 'does not decrypt ssh-key; expected the passphrase of that key'
            : 'is empty but ssh-key is encrypted; expected its passphrase'
          : 'is not a private key; expected the text of an OpenSSH or PEM private key (BEGIN … PRIVATE KEY), not a public key or a file path'
      )
    } else if (!parsed || (Array.isArray(parsed) && parsed.length === 0)) {
      raw.fail("input 'ssh-key'", 'is not a private key')
    } else {
      const key = Array.isArray(parsed) ? parsed[0] : parsed
      if (!key.isPrivateKey()) raw.fail("input 'ssh-key'", 'is a public key; expected the private key')
    }
  }
  return { privateKey, passphrase }
}

export function readJumpHost(raw: RawValues): SshSettings['jumpHost'] {
  const jumpRaw = raw.get('jump-host')
  if (!jumpRaw.value) return undefined
  const m = /^([^@\s]+)@(.+)$/.exec(jumpRaw.value)
  const h = m ? parseHost(m[2], 22) : 'expected user@host[:port]'
  if (!m || typeof h === 'string' || !USERNAME.test(m[1])) {
    raw.fail(jumpRaw, `"${jumpRaw.value}" is not user@host[:port]`)
    return undefined
  }
  return { user: m[1], host: h.host, port: h.port }
}

/**
 * Host key pins, bound to hosts: known-hosts is checked line by line as OpenSSH would read it, a bare
 * `host-fingerprint` binds to the only host (never to the jump host), pairs must name a host or the jump host,
 * and when deploying every host and the jump host must have a pin.
 */
export function readPins(
  raw: RawValues,
  hosts: Host[],
  jump: Host | undefined,
  deploying: boolean
): FingerprintPin[] {
  const before = raw.problems.length
  const khRaw = raw.get('known-hosts')
  let knownHosts: ReturnType<typeof parseKnownHosts> = []
  try {
    knownHosts = parseKnownHosts(khRaw.value)
  } catch (e) {
    if (!(e instanceof KnownHostsError)) throw e
    raw.fail(khRaw, `${e.message}. Nothing was connected to`)
    return []
  }
  const fpRaw = raw.get('host-fingerprint')
  const targets = jump ? [...hosts, jump] : hosts
  const label = (h: Host): string => knownHostsName(h.host, h.port).replace(/^\[(.*)\]:(\d+)$/, '$1:$2')
  const pins = inputPins(raw, hosts, targets, label)
  // A config file's hosts entry carries its own pins: when the hosts input replaces the file's hosts, the pins of
  // hosts no longer deployed to are simply unused.
  const entries = raw.fileHosts?.entries.filter(e => e.pins.length || e.pinProblems.length) ?? []
  for (const e of entries) e.pinProblems.forEach(p => raw.fail(raw.fileHosts!.where, p))
  for (const e of entries)
    pins.push(...e.pins.filter(pin => targets.some(h => pinMatches(pin, h.host, h.port))))
  // With no valid host, the hosts error says what is wrong; pins cannot be checked against nothing.
  if (!deploying || raw.problems.length > before || hosts.length === 0) return pins
  if (!khRaw.value && !fpRaw.value && entries.length === 0) {
    raw.fail(
      "input 'known-hosts'",
      "and host-fingerprint are both empty; the server's host key must be pinned (no trust on first use). Expected known_hosts lines (ssh-keyscan -p PORT HOST, checked by hand) or SHA256:… fingerprints"
    )
    return pins
  }
  for (const h of targets) {
    if (hasPin({ knownHosts, fingerprints: pins }, h.host, h.port)) continue
    raw.fail(
      fpRaw,
      `nothing pins the host key of ${h === jump ? 'the jump host ' : ''}${label(h)}: known-hosts has no entry for ${knownHostsName(h.host, h.port)} and host-fingerprint no ${label(h)}=SHA256:… pair; expected one of them (no trust on first use)`
    )
  }
  return pins
}

/** The `host-fingerprint` input: `host=SHA256:…` pairs for a host or the jump host, or one bare fingerprint. */
function inputPins(
  raw: RawValues,
  hosts: Host[],
  targets: Host[],
  label: (h: Host) => string
): FingerprintPin[] {
  const fpRaw = raw.get('host-fingerprint')
  const pins: FingerprintPin[] = []
  const { bare, bound, problems } = parseFingerprintPins(fpRaw.value)
  problems.forEach(p => raw.fail(fpRaw, p))
  for (const pin of bound) {
    if (targets.some(h => pinMatches(pin, h.host, h.port))) pins.push(pin)
    else {
      const name = pin.port === undefined ? pin.host : `${pin.host}:${pin.port}`
      raw.fail(
        fpRaw,
        `${name}=${pin.fingerprint} names a host that is neither in hosts nor the jump-host; expected one of ${targets.map(label).join(', ') || '(no hosts given)'}`
      )
    }
  }
  if (bare.length && hosts.length > 1) {
    raw.fail(
      fpRaw,
      `${bare[0]} is not bound to a host, and there are ${hosts.length} hosts; a bare fingerprint is accepted only with one host. Expected host=SHA256:… pairs, e.g. ${label(hosts[0])}=${bare[0]}`
    )
  } else if (bare.length && hosts.length === 1) {
    pins.push(
      ...bare.map(fingerprint => ({ host: hosts[0].host.toLowerCase(), port: hosts[0].port, fingerprint }))
    )
  }
  return pins
}
