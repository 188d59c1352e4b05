/**
 * An Ansible inventory as Ansible's inventory manager holds it: groups with their variables, children and
 * parents, hosts with their own variables, and host patterns (`name:port`, ranges) as its parse_address reads them.
 */
export class InventoryError extends Error {}

export type Value = string | number | boolean | null | unknown[] | Record<string, unknown>
export type Vars = Record<string, Value>

export interface Group {
  name: string
  vars: Vars
  /** Direct hosts in the order they were added. */
  hosts: string[]
  children: string[]
  parents: string[]
  /** `ansible_group_priority`: kept apart from the variables, as Ansible does. */
  priority: number
}

export interface Inventory {
  groups: Map<string, Group>
  /** Host name → its own variables (from the host line, `host:port`, YAML host entries). */
  hostVars: Map<string, Vars>
}

export interface InventoryHost {
  /** The inventory name of the host. */
  name: string
  /** Its variables after Ansible's precedence (what `ansible-inventory --list` prints in _meta.hostvars). */
  vars: Vars
}

export function newInventory(): Inventory {
  const inv: Inventory = { groups: new Map(), hostVars: new Map() }
  addGroup(inv, 'all')
  addGroup(inv, 'ungrouped')
  addChild(inv, 'all', 'ungrouped')
  return inv
}

export function addGroup(inv: Inventory, name: string): Group {
  let g = inv.groups.get(name)
  if (!g) {
    g = { name, vars: {}, hosts: [], children: [], parents: [], priority: 1 }
    inv.groups.set(name, g)
  }
  return g
}

export function setGroupVar(g: Group, key: string, value: Value): void {
  if (key !== 'ansible_group_priority') {
    g.vars[key] = value
    return
  }
  const n = typeof value === 'number' ? value : Number(String(value).trim())
  if (!Number.isInteger(n))
    throw new InventoryError(
      `group ${g.name}: ansible_group_priority "${String(value)}" is not a whole number`
    )
  g.priority = n
}

export function ancestors(inv: Inventory, name: string): Set<string> {
  const seen = new Set<string>()
  const walk = (n: string): void => {
    for (const p of inv.groups.get(n)?.parents ?? []) {
      if (!seen.has(p)) {
        seen.add(p)
        walk(p)
      }
    }
  }
  walk(name)
  return seen
}

export function addChild(inv: Inventory, parent: string, child: string): void {
  if (parent === child) throw new InventoryError(`group ${child} cannot be a child of itself`)
  const p = addGroup(inv, parent)
  const c = addGroup(inv, child)
  if (p.children.includes(child)) return
  if (ancestors(inv, parent).has(child)) {
    throw new InventoryError(
      `adding group ${child} as a child of ${parent} makes a loop (${child} is already above ${parent})`
    )
  }
  p.children.push(child)
  if (!c.parents.includes(parent)) c.parents.push(parent)
}

export function addHost(
  inv: Inventory,
  group: string,
  host: string,
  port: number | undefined,
  vars: Vars
): void {
  const g = addGroup(inv, group)
  if (!g.hosts.includes(host)) g.hosts.push(host)
  const own = inv.hostVars.get(host) ?? {}
  if (port !== undefined) own.ansible_port = port
  Object.assign(own, vars)
  inv.hostVars.set(host, own)
}

/**
 * What Ansible's reconcile_inventory does: every group without a parent goes under `all`; a host in no group
 * but `all` is in `ungrouped`, and a host in another group is not.
 */
export function reconcile(inv: Inventory): void {
  for (const g of inv.groups.values()) {
    if (g.name !== 'all' && g.parents.length === 0) addChild(inv, 'all', g.name)
  }
  const ungrouped = inv.groups.get('ungrouped')!
  for (const host of inv.hostVars.keys()) {
    const mine = [...inv.groups.values()].filter(g => g.hosts.includes(host)).map(g => g.name)
    if (mine.includes('ungrouped')) {
      if (mine.some(g => g !== 'all' && g !== 'ungrouped'))
        ungrouped.hosts = ungrouped.hosts.filter(h => h !== host)
    } else if (mine.every(g => g === 'all')) ungrouped.hosts.push(host)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host patterns: `name`, `name:port`, `[v6]:port`, ranges.

/** Splits a host pattern into the pattern and the port it ends with, as Ansible's parse_address does. */
function splitPort(pattern: string): { pattern: string; port?: number } {
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(pattern)
  if (v6 && v6[1].includes(':')) return { pattern: v6[1], port: Number(v6[2]) }
  // A colon outside brackets ends the name: `web[01:03]:2222`. More than one (IPv6 without brackets): no port.
  let depth = 0
  const colons: number[] = []
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]
    if (ch === '[') depth++
    else if (ch === ']') depth--
    else if (ch === ':' && depth === 0) colons.push(i)
  }
  if (colons.length === 1) {
    const port = pattern.slice(colons[0] + 1)
    const name = pattern.slice(0, colons[0])
    if (/^\d+$/.test(port) && name) return { pattern: name, port: Number(port) }
    if (port === '')
      throw new InventoryError(
        `host pattern "${pattern}" ends in ':'; that character is reserved for a port (name:2222)`
      )
  }
  return { pattern }
}

const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'

/** Expands `[beg:end(:step)]` ranges, numeric (zero-padded when begin is) or single letters, as Ansible does. */
export function expandRange(pattern: string): string[] {
  const open = pattern.indexOf('[')
  if (open < 0) return [pattern]
  const close = pattern.indexOf(']', open)
  if (close < 0) throw new InventoryError(`host range in "${pattern}" has no closing ]`)
  const head = pattern.slice(0, open)
  const tail = pattern.slice(close + 1)
  const bounds = pattern.slice(open + 1, close).split(':')
  const bad = (why: string): never => {
    throw new InventoryError(`host range in "${pattern}": ${why}`)
  }
  if (bounds.length !== 2 && bounds.length !== 3) bad('expected [begin:end] or [begin:end:step]')
  const beg = bounds[0] || '0'
  const end = bounds[1]
  const stepText = bounds.length === 3 ? bounds[2] : '1'
  if (!end) bad('the end is missing')
  if (!/^\d+$/.test(stepText) || Number(stepText) < 1)
    bad(`step "${stepText}" is not a positive whole number`)
  const step = Number(stepText)
  const pad = beg.length > 1 && beg[0] === '0'
  if (pad && beg.length !== end.length) bad('begin and end must have the same length when zero-padded')
  let seq: string[] = []
  const ib = beg.length === 1 ? LETTERS.indexOf(beg) : -1
  const ie = end.length === 1 ? LETTERS.indexOf(end) : -1
  if (ib >= 0 && ie >= 0) {
    if (ib > ie) bad('begin must not come after end')
    for (let i = ib; i <= ie; i += step) seq.push(LETTERS[i])
  } else {
    if (!/^\d+$/.test(beg) || !/^\d+$/.test(end))
      bad(`"${beg}:${end}" is neither a number nor a letter range`)
    const b = Number(beg)
    const e = Number(end)
    if (e - b > 10_000 * step) bad('more than 10000 hosts')
    for (let i = b; i <= e; i += step) seq.push(pad ? String(i).padStart(beg.length, '0') : String(i))
  }
  seq = seq.map(s => `${head}${s}${tail}`)
  return seq.flatMap(expandRange)
}

export function hostPattern(pattern: string): { hosts: string[]; port?: number } {
  const { pattern: p, port } = splitPort(pattern.trim())
  if (p.trim() === '---')
    throw new InventoryError(`host "---" is a sign of a YAML file; name it .yml or .yaml`)
  return { hosts: p.includes('[') ? expandRange(p) : [p], port }
}
