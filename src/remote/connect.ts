/**
 * Opening a verified SSH connection, through the jump host when there is one. The host key is checked during
 * key exchange, before authentication, against the pins of exactly that host (the jump host has its own).
 * A fingerprint does not say its key type, so when the server presents a key of a type nothing pins, the
 * client asks again without that type, until the pinned key is presented or the server has no other type.
 */
import { NodeSSH } from 'node-ssh'
import type { ClientChannel, ConnectConfig } from 'ssh2'
import type { Host, SshSettings } from '../settings.js'
import {
  fingerprint,
  firstAlgorithms,
  keyTypeOf,
  nextAlgorithms,
  parseKnownHosts,
  verifyHostKey,
  type HostPins,
  type Verdict
} from './hostkeys.js'

export class ConnectError extends Error {
  constructor(
    readonly host: string,
    message: string
  ) {
    super(`host ${host}: ${message}`)
    this.name = 'ConnectError'
  }
}

/** One try: the exact, ordered host key algorithms offered, and the key the server presented for them. */
export interface HostKeyTry {
  algorithms: string[]
  presented?: { type: string; fingerprint: string }
}

export interface Connection {
  ssh: NodeSSH
  via?: NodeSSH
  /** The tries it took to reach the host (the last one succeeded). */
  tries: HostKeyTry[]
}

/** Connects to `host` (through `s.jumpHost` if set) with its host key verified; `name` is for messages. */
export async function connectHost(host: Host, s: SshSettings, name: string): Promise<Connection> {
  const pins: HostPins = { knownHosts: parseKnownHosts(s.knownHosts ?? ''), fingerprints: s.fingerprints }
  let via: NodeSSH | undefined
  let hop: (() => Promise<ClientChannel>) | undefined
  if (s.jumpHost) {
    const j = s.jumpHost
    via = (await open({ host: j.host, port: j.port }, j.user, s, pins, `jump host ${j.host}`)).ssh
    const jump = via
    // Until the Remote exists (it listens for good), an error of the jump host's connection must not be an
    // uncaught exception: the target's connect fails on its own.
    jump.connection?.on('error', () => undefined)
    hop = () => forward(jump, host, s.connectTimeout, name, j.host)
  }
  try {
    const { ssh, tries } = await open(host, host.user ?? s.user, s, pins, name, hop)
    return { ssh, via, tries }
  } catch (e) {
    via?.dispose()
    throw e
  }
}

/** A channel from the jump host to `host`, or a clear error within the connect timeout. */
function forward(
  via: NodeSSH,
  host: Host,
  seconds: number,
  name: string,
  jumpName: string
): Promise<ClientChannel> {
  const connection = via.connection
  if (!connection) return Promise.reject(new ConnectError(name, `jump host ${jumpName} is not connected`))
  return new Promise((resolve, reject) => {
    let settled = false
    const timer = setTimeout(() => {
      settled = true
      reject(
        new ConnectError(
          name,
          `jump host ${jumpName} did not open a connection to port ${host.port} within ${seconds} s (firewall, wrong port, or host down behind the jump host)`
        )
      )
    }, seconds * 1000)
    connection.forwardOut('127.0.0.1', 0, host.host, host.port, (err, stream) => {
      clearTimeout(timer)
      if (settled) {
        stream?.destroy() // answered after the timeout: nobody will use it
        return
      }
      settled = true
      if (err) reject(new ConnectError(name, `jump host ${jumpName} cannot reach it: ${err.message}`))
      else resolve(stream)
    })
  })
}

async function open(
  host: Host,
  user: string,
  s: SshSettings,
  pins: HostPins,
  label: string,
  hop?: () => Promise<ClientChannel>
): Promise<{ ssh: NodeSSH; tries: HostKeyTry[] }> {
  const tries: HostKeyTry[] = []
  let algorithms = firstAlgorithms(pins, host.host, host.port)
  let firstRefusal: string | undefined
  for (;;) {
    const attempt: HostKeyTry = { algorithms }
    tries.push(attempt)
    const sock: ConnectConfig['sock'] = hop ? await hop() : undefined
    const ssh = new NodeSSH()
    let refusal: Extract<Verdict, { ok: false }> | undefined
    try {
      await ssh.connect({
        host: host.host,
        port: host.port,
        sock,
        username: user,
        privateKey: s.privateKey,
        passphrase: s.passphrase,
        readyTimeout: s.connectTimeout * 1000,
        keepaliveInterval: 10_000,
        keepaliveCountMax: 3,
        tryKeyboard: false,
        agentForward: false,
        // An exact list, in this order: the server picks the first one it has a key for.
        algorithms: {
          serverHostKey: algorithms as NonNullable<ConnectConfig['algorithms']>['serverHostKey']
        },
        // Called during key exchange, before any authentication is attempted.
        hostVerifier: (key: Buffer) => {
          attempt.presented = { type: keyTypeOf(key), fingerprint: fingerprint(key) }
          const v = verifyHostKey(key, host.host, host.port, pins)
          if (!v.ok) refusal = v
          return v.ok
        }
      })
      return { ssh, tries }
    } catch (e) {
      ssh.dispose()
      sock?.destroy()
      const msg = e instanceof Error ? e.message : String(e)
      const presented = tries.flatMap(t =>
        t.presented ? [`${t.presented.fingerprint} (${t.presented.type})`] : []
      )
      if (refusal) {
        firstRefusal ??= refusal.reason
        const next =
          refusal.retry && attempt.presented ? nextAlgorithms(algorithms, attempt.presented.type) : []
        if (next.length) {
          algorithms = next
          continue
        }
        throw new ConnectError(label, withPresented(firstRefusal, presented))
      }
      if (firstRefusal && /no matching host key format/i.test(msg)) {
        // The server has no key of a type not yet refused: none of its keys is pinned.
        throw new ConnectError(label, withPresented(firstRefusal, presented))
      }
      throw connectFailure(msg, label, user, host.port, s.connectTimeout, algorithms)
    }
  }
}

/** What a failed connection (not a refused host key) tells the user: the likely cause, in their words. */
function connectFailure(
  msg: string,
  label: string,
  user: string,
  port: number | undefined,
  connectTimeout: number,
  algorithms: string[]
): ConnectError {
  if (/no matching host key format/i.test(msg))
    return new ConnectError(
      label,
      `the server has no host key of a type this action accepts (${algorithms.join(', ')})`
    )
  if (/authentication methods failed/i.test(msg))
    return new ConnectError(
      label,
      `authentication as ${user} failed: the server does not accept ssh-key for that user (is its public key in ~${user}/.ssh/authorized_keys?)`
    )
  if (/ECONNREFUSED/.test(msg))
    return new ConnectError(label, `connection refused on port ${port}: is sshd running there?`)
  if (/Timed out|ETIMEDOUT/i.test(msg))
    return new ConnectError(
      label,
      `no SSH handshake within ${connectTimeout} s (firewall, wrong port, or host down)`
    )
  if (/ENOTFOUND|EAI_AGAIN/.test(msg)) return new ConnectError(label, `host name does not resolve`)
  return new ConnectError(label, msg)
}

function withPresented(reason: string, presented: string[]): string {
  return presented.length > 1 ? `${reason}. Keys the server presented: ${presented.join(', ')}` : reason
}
