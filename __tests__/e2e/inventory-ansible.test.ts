/**
 * src/inventory.ts against the real thing: for each inventory under __tests__/fixtures/inventory (INI and
 * YAML, with children declared before their groups, group vars at several depths, group priority, ports,
 * users, `ansible_host`, ranges, IPv6), every group's hosts and every host's variables must be what Debian's
 * `ansible-inventory --list` prints, and the host order what `ansible GROUP --list-hosts` prints.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { groupHosts, groupNames, parseInventory } from '../../src/inventory.js'
import { ROOT } from '../helpers/action.js'

jest.setTimeout(120_000)

const DIR = join(ROOT, '__tests__/fixtures/inventory')
const home = mkdtempSync(join(tmpdir(), 'dd-ansible-'))
afterAll(() => rmSync(home, { recursive: true, force: true }))
writeFileSync(join(home, 'ansible.cfg'), '')

// A file Ansible cannot parse is an error, not a warning and an empty inventory; nothing from the machine's
// own Ansible configuration or home directory is read.
const env = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: home,
  LANG: 'C.UTF-8',
  ANSIBLE_CONFIG: join(home, 'ansible.cfg'),
  ANSIBLE_INVENTORY_UNPARSED_FAILED: 'true',
  ANSIBLE_LOCAL_TEMP: join(home, 'tmp')
}

function ansible(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    const err = e as { code?: string; stderr?: string }
    if (err.code === 'ENOENT')
      throw new Error(`${cmd} is missing: bash scripts/setup.sh installs Debian's ansible`)
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr}`)
  }
}

type Listing = Record<string, { hosts?: string[]; children?: string[] }> & {
  _meta: { hostvars: Record<string, Record<string, unknown>> }
}

/** A group's hosts in `--list` output: its own and its descendants'. */
function members(list: Listing, group: string, seen = new Set<string>()): Set<string> {
  const out = new Set<string>(list[group]?.hosts ?? [])
  for (const c of list[group]?.children ?? []) {
    if (seen.has(c)) continue
    seen.add(c)
    for (const h of members(list, c, seen)) out.add(h)
  }
  return out
}

const files = readdirSync(DIR).sort()

test('the fixtures cover INI and YAML inventories', () => {
  expect(files).toEqual(expect.arrayContaining(['fleet.ini', 'nested.ini', 'fleet.yml', 'noext']))
})

describe.each(files)('%s read as ansible-inventory reads it', file => {
  const path = join(DIR, file)
  const inv = parseInventory(readFileSync(path, 'utf8'), file)
  const list = JSON.parse(ansible('ansible-inventory', ['-i', path, '--list'])) as Listing

  it('has the same groups', () => {
    // --list leaves out groups with neither hosts nor children (an empty `ungrouped`)
    const theirs = Object.keys(list).filter(k => k !== '_meta')
    const ours = groupNames(inv).filter(g => {
      const { hosts, children } = inv.groups.get(g)!
      return g === 'all' || hosts.length > 0 || children.length > 0
    })
    expect(ours.sort()).toEqual(theirs.sort())
  })

  it('gives every group the same hosts, each with the same variables', () => {
    for (const group of Object.keys(list).filter(k => k !== '_meta')) {
      const ours = groupHosts(inv, group)
      expect({ group, hosts: ours.map(h => h.name).sort() }).toEqual({
        group,
        hosts: [...members(list, group)].sort()
      })
      for (const h of ours) {
        expect({ host: h.name, vars: h.vars }).toEqual({
          host: h.name,
          vars: list._meta.hostvars[h.name] ?? {}
        })
      }
    }
  })

  it('lists the hosts of all (and of the first group) in the order ansible --list-hosts does', () => {
    const first = Object.keys(list).filter(k => !['_meta', 'all', 'ungrouped'].includes(k))[0]
    for (const group of ['all', first]) {
      const out = ansible('ansible', [group, '-i', path, '--list-hosts'])
      const theirs = out
        .split('\n')
        .slice(1)
        .map(l => l.trim())
        .filter(Boolean)
      expect({ group, hosts: groupHosts(inv, group).map(h => h.name) }).toEqual({ group, hosts: theirs })
    }
  })
})
