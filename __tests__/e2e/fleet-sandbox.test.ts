/**
 * The fleet sandbox: hosts in network namespaces of their own, each with its own sshd, reached through its
 * veth pair only, with the bytes each exchanged counted on that pair.
 */
import { jest } from '@jest/globals'
import { connect } from 'node:net'
import { execFileSync } from 'node:child_process'
import { startFleet, type Fleet } from '../../sandbox/fleet.js'

jest.setTimeout(120_000)

const reachable = (host: string, port: number): Promise<boolean> =>
  new Promise(resolve => {
    const s = connect({ host, port, timeout: 2000 })
    s.on('connect', () => (s.destroy(), resolve(true)))
    s.on('error', () => resolve(false))
    s.on('timeout', () => (s.destroy(), resolve(false)))
  })

let fleet: Fleet | undefined
afterAll(async () => {
  await fleet?.stop()
})

test('each host is its own namespace, reached through its veth, its traffic counted there; stop removes it all', async () => {
  fleet = await startFleet(2, { name: 'fltst', net: 221 })
  const [a, b] = fleet.hosts
  expect(a.host).toBe('127.221.1.2')
  expect(b.host).toBe('127.221.2.2')
  // sshd listens inside the namespace only: not on this side's loopback.
  expect(await reachable(a.host, a.sshPort)).toBe(true)
  expect(await reachable('127.0.0.1', a.sshPort)).toBe(false)
  const before = fleet.bytes()
  const banner = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: a.host, port: a.sshPort })
    s.once('data', d => (s.destroy(), resolve(d.toString())))
    s.on('error', reject)
  })
  expect(banner).toMatch(/^SSH-2\.0-OpenSSH/)
  const after = fleet.bytes()
  expect(after[0] - before[0]).toBeGreaterThan(banner.length)
  expect(after[1] - before[1]).toBeLessThan(200)
  // Commands on a host run there: its own loopback, its own address.
  const r = await a.run('ip -4 -o addr show | grep -c 127.221.1.2')
  expect(r.stdout.trim()).toBe('1')
  const names = [a.netns, b.netns]
  await fleet.stop()
  fleet = undefined
  const left = execFileSync('ip', ['netns', 'list']).toString()
  for (const n of names) expect(left).not.toContain(n)
})
