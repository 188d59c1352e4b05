/**
 * Network namespaces joined to this one by a veth pair: the "network" of the fleet sandbox and of the systemd
 * containers. `127.<net>.<n>.1` is this side's end, `.2` the namespace's; both ends need route_localnet, as 127/8
 * addresses on a real link are otherwise refused.
 */
import { execFileSync } from 'node:child_process'

const ip = (...args: string[]): void => {
  execFileSync('/usr/bin/ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

export interface Netns {
  /** Namespace name (`ip netns`; its file is /run/netns/<name>). */
  name: string
  /** This side's end of the pair (its counters measure what crossed to the namespace). */
  veth: string
  /** `127.<net>.<n>.1`, the address of this side. */
  outside: string
  /** `127.<net>.<n>.2`, the namespace's address. */
  inside: string
}

/** Makes namespace `name` with a veth pair: `127.<net>.<n>.1` on this side, `.2` inside. Cleans up if it fails. */
export function makeNamespace(name: string, veth: string, net: number, n: number): Netns {
  if (!Number.isInteger(net) || net < 2 || net > 254) throw new Error(`net must be 2-254: ${net}`)
  if (!Number.isInteger(n) || n < 0 || n > 255) throw new Error(`namespace number must be 0-255: ${n}`)
  if (veth.length > 14) throw new Error(`veth name too long (its peer adds "n"; max 14): ${veth}`)
  const outside = `127.${net}.${n}.1`
  const inside = `127.${net}.${n}.2`
  ip('netns', 'add', name)
  try {
    ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}n`)
    ip('link', 'set', `${veth}n`, 'netns', name)
    ip('addr', 'add', `${outside}/30`, 'dev', veth)
    ip('link', 'set', veth, 'up')
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${inside}/30`, 'dev', `${veth}n`)
    ip('netns', 'exec', name, 'ip', 'link', 'set', `${veth}n`, 'up')
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up')
    // 127/8 addresses on a real link need route_localnet on both ends (else: Invalid argument).
    execFileSync('/usr/sbin/sysctl', ['-qw', `net.ipv4.conf.${veth}.route_localnet=1`])
    ip('netns', 'exec', name, '/usr/sbin/sysctl', '-qw', `net.ipv4.conf.${veth}n.route_localnet=1`)
  } catch (e) {
    removeNamespace(name, veth)
    throw e
  }
  return { name, veth, outside, inside }
}

/** Deletes the namespace and the veth pair; quiet about what is already gone. */
export function removeNamespace(name: string, veth: string): void {
  for (const args of [
    ['netns', 'del', name],
    ['link', 'del', veth]
  ]) {
    try {
      ip(...args)
    } catch {
      // already gone (deleting the namespace takes its end of the pair, and with it the pair)
    }
  }
}
