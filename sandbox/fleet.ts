/**
 * A fleet of sandbox hosts on one machine: each host is its own network namespace (own loopback, own ports)
 * joined to this one by a veth pair, with its own sshd, nginx, gunicorn and deploy root; the namespaces share the
 * file system, so the hosts can share one SQLite database as a fleet shares its database server. The bytes a host
 * exchanged are its veth's counters.
 */
import { readFileSync } from 'node:fs'
import { makeNamespace, removeNamespace } from './netns.js'
import { startTarget, type Target, type TargetOptions } from './target.js'

export interface FleetHost extends Target {
  /** Network namespace the host's daemons run in. */
  netns: string
  /** This side's end of the host's veth pair (its counters measure what crossed to that host). */
  veth: string
}

export interface Fleet {
  hosts: FleetHost[]
  /** Bytes through each host's veth so far, both directions. */
  bytes(): number[]
  stop(): Promise<void>
}

/**
 * Starts `count` hosts. `name` (lowercase letters and digits, ≤ 8) prefixes namespaces, veths and users;
 * `net` (2–254) picks the 127.<net>.0.0/16 block, so fleets of concurrent test files don't collide.
 */
export async function startFleet(
  count: number,
  o: { name: string; net: number } & Omit<TargetOptions, 'name' | 'bindIp' | 'netns'>
): Promise<Fleet> {
  if (!/^[a-z][a-z0-9]{0,7}$/.test(o.name)) throw new Error(`bad fleet name: ${o.name}`)
  const hosts: FleetHost[] = []
  const made: Array<{ netns: string; veth: string }> = []
  const stop = async (): Promise<void> => {
    await Promise.all(hosts.map(h => h.stop()))
    for (const m of made) removeNamespace(m.netns, m.veth)
  }
  try {
    for (let n = 1; n <= count; n++) {
      const netns = `${o.name}-h${n}`
      const veth = `${o.name}h${n}`
      const { inside } = makeNamespace(netns, veth, o.net, n)
      made.push({ netns, veth })
      const t = await startTarget({ ...o, name: `${o.name}h${n}`, bindIp: inside, netns })
      hosts.push(Object.assign(t, { netns, veth }))
    }
    // One deploy key for the fleet, as a team has: every host also accepts the first host's key.
    for (const h of hosts.slice(1)) {
      const w = await h.run('cat >> ~/.ssh/authorized_keys', { input: `${hosts[0].publicKey}\n` })
      if (w.code !== 0) throw new Error(`authorized_keys of ${h.user}: ${w.stderr}`)
    }
  } catch (e) {
    await stop()
    throw e
  }
  const counter = (veth: string, f: string): number =>
    Number(readFileSync(`/sys/class/net/${veth}/statistics/${f}`, 'utf8'))
  return {
    hosts,
    bytes: () => hosts.map(h => counter(h.veth, 'rx_bytes') + counter(h.veth, 'tx_bytes')),
    stop
  }
}
