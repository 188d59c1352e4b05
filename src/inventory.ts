/**
 * Hosts from an Ansible inventory file (INI or YAML), read the way Ansible 2.14's `ini` and `yaml` inventory
 * plugins and its inventory manager read them: groups, `[group:children]`, `[group:vars]`, host variables on
 * the host line, `host:port`, host ranges (`web[01:03]`, `db-[a:c]`, with a step), the YAML form
 * (`all: children: …: hosts: …: vars:`), groups without a parent under `all`, and variable precedence: the host's
 * own variables over its groups', and among groups the deeper (a child) over the shallower (its parent, `all`
 * last), then `ansible_group_priority`, then the group name, as Ansible's sort_groups orders them.
 *
 * Pure: text in, hosts out. What is read from each host is `ansible_host`, `ansible_port`, `ansible_user` and
 * `deploy_roles`, into the same typed `Host` the other sources of hosts give (`deployHosts`).
 * Not read: group_vars/ and host_vars/ directories, vault-encrypted values, dynamic inventory scripts or plugins.
 */
import { parseDocument } from 'yaml'
import {
  addChild,
  addGroup,
  addHost,
  ancestors,
  hostPattern,
  InventoryError,
  newInventory,
  reconcile,
  setGroupVar,
  type Inventory,
  type InventoryHost,
  type Value,
  type Vars
} from './inventory/model.js'
import { isAddress, parsePort, rolesOf, USERNAME, type Host } from './settings/hosts.js'

export { expandRange, InventoryError, type Inventory, type InventoryHost } from './inventory/model.js'

// ---------------------------------------------------------------------------------------------------------
// INI

/** Python's `shlex.split(line, comments=True)`: POSIX quoting, `#` outside quotes starts a comment. */
function shlexSplit(line: string): string[] {
  const out: string[] = []
  let word = ''
  let inWord = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n') {
      if (inWord) out.push(word)
      word = ''
      inWord = false
    } else if (ch === '#') {
      break
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1)
      if (end < 0) throw new InventoryError('no closing quotation')
      word += line.slice(i + 1, end)
      inWord = true
      i = end
    } else if (ch === '"') {
      inWord = true
      for (i++; ; i++) {
        if (i >= line.length) throw new InventoryError('no closing quotation')
        const c = line[i]
        if (c === '"') break
        if (c === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) word += line[++i]
        else word += c
      }
    } else if (ch === '\\') {
      if (i + 1 >= line.length) throw new InventoryError('no escaped character')
      word += line[++i]
      inWord = true
    } else {
      word += ch
      inWord = true
    }
  }
  if (inWord) out.push(word)
  return out
}

/**
 * Python's `ast.literal_eval` for what inventory values hold: whole numbers, decimals, quoted strings,
 * True/False/None; anything else stays the text (lists and mappings included: none of the values read here
 * is one).
 */
export function literalValue(text: string): Value {
  const t = text.trim()
  if (/^[-+]?\d+$/.test(t)) return Number(t)
  if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(t)) return Number(t)
  if (t === 'True') return true
  if (t === 'False') return false
  if (t === 'None') return null
  const m = /^'([^'\\]*)'$|^"([^"\\]*)"$/.exec(t)
  if (m) return m[1] ?? m[2]
  return text
}

const SECTION = /^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$/
const GROUP_NAME = /^([^:\]\s]+)\s*(?:#.*)?$/

/** A host line of an INI inventory: a host pattern and its `key=value` variables. */
function iniHostLine(inv: Inventory, group: string, line: string, fail: (message: string) => never): void {
  let tokens: string[]
  try {
    tokens = shlexSplit(line)
  } catch (e) {
    return fail(`cannot split the host line "${line}": ${(e as Error).message}`)
  }
  if (tokens.length === 0) return
  let parsed: { hosts: string[]; port?: number }
  try {
    parsed = hostPattern(tokens[0])
  } catch (e) {
    return fail((e as Error).message)
  }
  const vars: Vars = {}
  for (const t of tokens.slice(1)) {
    const eq = t.indexOf('=')
    if (eq < 0) fail(`"${t}" is not a key=value host variable`)
    vars[t.slice(0, eq)] = literalValue(t.slice(eq + 1))
  }
  for (const h of parsed.hosts) addHost(inv, group, h, parsed.port, vars)
}

export function parseIni(text: string): Inventory {
  const inv = newInventory()
  // Groups named in [x:children] or [x:vars] before their own section, as Ansible keeps them.
  const pending = new Map<string, { line: number; state: 'children' | 'vars'; parents: string[] }>()
  let group = 'ungrouped'
  let state = 'hosts'
  const lines = text.split(/\r?\n/)
  const addPendingChildren = (g: string): void => {
    const decl = pending.get(g)
    if (!decl) return
    for (const parent of decl.parents) {
      addChild(inv, parent, g)
      if (pending.get(parent)?.state === 'children') addPendingChildren(parent)
    }
    pending.delete(g)
  }
  lines.forEach((raw, index) => {
    const lineno = index + 1
    const line = raw.trim()
    const fail = (message: string): never => {
      throw new InventoryError(`line ${lineno}: ${message}`)
    }
    if (!line || line[0] === '#' || line[0] === ';') return
    const section = SECTION.exec(line)
    if (section) {
      group = section[1]
      state = section[2] ?? 'hosts'
      if (!['hosts', 'children', 'vars'].includes(state))
        fail(`section [${group}:${state}] has an unknown type "${state}"; expected hosts, children or vars`)
      if (!inv.groups.has(group)) {
        if (state === 'vars' && !pending.has(group)) pending.set(group, { line: lineno, state, parents: [] })
        addGroup(inv, group)
      }
      const decl = pending.get(group)
      if (decl && state !== 'vars') {
        if (decl.state === 'children') addPendingChildren(group)
        else pending.delete(group)
      }
      return
    }
    if (line.startsWith('[') && line.endsWith(']'))
      fail(`invalid section "${line}"; expected [group], [group:children] or [group:vars] without spaces`)
    if (state === 'hosts') {
      iniHostLine(inv, group, line, fail)
    } else if (state === 'vars') {
      const eq = line.indexOf('=')
      if (eq < 0) fail(`expected key=value in [${group}:vars], got "${line}"`)
      try {
        setGroupVar(addGroup(inv, group), line.slice(0, eq).trim(), literalValue(line.slice(eq + 1).trim()))
      } catch (e) {
        fail((e as Error).message)
      }
    } else {
      const m = GROUP_NAME.exec(line)
      if (!m) return fail(`expected a group name in [${group}:children], got "${line}"`)
      const child = m[1]
      if (!inv.groups.has(child)) {
        const decl = pending.get(child)
        if (decl) decl.parents.push(group)
        else pending.set(child, { line: lineno, state: 'children', parents: [group] })
      } else {
        try {
          addChild(inv, group, child)
        } catch (e) {
          fail((e as Error).message)
        }
      }
    }
  })
  for (const [name, decl] of pending) {
    if (decl.state === 'vars')
      throw new InventoryError(
        `line ${decl.line}: section [${name}:vars] is for a group that is never defined`
      )
    throw new InventoryError(
      `line ${decl.line}: section [${decl.parents[decl.parents.length - 1]}:children] names group ${name}, which is never defined`
    )
  }
  reconcile(inv)
  return inv
}

// ---------------------------------------------------------------------------------------------------------
// YAML

const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

export function parseYaml(text: string): Inventory {
  const doc = parseDocument(text, { uniqueKeys: false })
  if (doc.errors.length) {
    const e = doc.errors[0]
    const line = e.linePos?.[0]?.line
    throw new InventoryError(`${line ? `line ${line}: ` : ''}invalid YAML: ${e.message.split('\n')[0]}`)
  }
  const data: unknown = doc.toJS()
  if (data === null || data === undefined || data === '') throw new InventoryError('the YAML file is empty')
  if (!isMap(data))
    throw new InventoryError(
      'a YAML inventory is a mapping of group names (all: hosts: …, children: …, vars: …)'
    )
  if (data.plugin) throw new InventoryError('this is an inventory plugin configuration, not a YAML inventory')
  const inv = newInventory()
  const parseGroup = (name: string, body: unknown): string | undefined => {
    if (!isMap(body) && body !== null && body !== undefined) return undefined // Ansible skips it, with a warning
    addGroup(inv, name)
    if (!isMap(body)) return name
    for (const key of ['vars', 'children', 'hosts'] as const) {
      const section = typeof body[key] === 'string' ? { [body[key]]: null } : body[key]
      if (section !== undefined && section !== null && !isMap(section))
        throw new InventoryError(`the "${key}" of group ${name} must be a mapping`)
      if (!isMap(section)) continue
      if (key === 'vars') {
        for (const [k, v] of Object.entries(section)) setGroupVar(addGroup(inv, name), k, v as Value)
      } else if (key === 'children') {
        for (const [child, childBody] of Object.entries(section)) {
          const c = parseGroup(child, childBody)
          if (c) addChild(inv, name, c)
        }
      } else {
        for (const [pattern, hostBody] of Object.entries(section)) {
          const { hosts, port } = hostPattern(pattern)
          const vars = hostBody ?? {}
          if (!isMap(vars))
            throw new InventoryError(`host ${pattern} in group ${name}: its variables must be a mapping`)
          for (const h of hosts) addHost(inv, name, h, port, vars as Vars)
        }
      }
    }
    return name
  }
  for (const [name, body] of Object.entries(data)) parseGroup(name, body)
  reconcile(inv)
  return inv
}

// ---------------------------------------------------------------------------------------------------------

/**
 * Reads an inventory: `.yml`, `.yaml` and `.json` files as YAML; a file without one of those extensions as YAML
 * when it parses to a mapping, else as INI (the order Ansible's plugins try them in).
 */
export function parseInventory(text: string, fileName: string): Inventory {
  const ext = /\.([^./]+)$/.exec(fileName)?.[1]?.toLowerCase()
  if (ext === 'yml' || ext === 'yaml' || ext === 'json') return parseYaml(text)
  if (ext === undefined) {
    try {
      return parseYaml(text)
    } catch {
      // not a YAML inventory: INI
    }
  }
  return parseIni(text)
}

/** Longest path from `all`, as Ansible's group depth. */
function depths(inv: Inventory): Map<string, number> {
  const depth = new Map<string, number>()
  const visit = (name: string, d: number): void => {
    if ((depth.get(name) ?? -1) >= d) return
    depth.set(name, d)
    for (const c of inv.groups.get(name)?.children ?? []) visit(c, d + 1)
  }
  visit('all', 0)
  return depth
}

/** The hosts of a group and of its descendants, in Ansible's order (the group's own, then breadth first). */
export function groupHosts(inv: Inventory, group: string): InventoryHost[] {
  const g = inv.groups.get(group)
  if (!g) throw new InventoryError(`no group named ${group}`)
  const order: string[] = [group]
  const seen = new Set(order)
  for (let i = 0; i < order.length; i++) {
    for (const c of inv.groups.get(order[i])?.children ?? []) {
      if (!seen.has(c)) {
        seen.add(c)
        order.push(c)
      }
    }
  }
  const names: string[] = []
  for (const n of order) for (const h of inv.groups.get(n)!.hosts) if (!names.includes(h)) names.push(h)
  const depth = depths(inv)
  return names.map(name => ({ name, vars: hostVars(inv, name, depth) }))
}

function hostVars(inv: Inventory, host: string, depth: Map<string, number>): Vars {
  const direct = [...inv.groups.values()].filter(g => g.hosts.includes(host)).map(g => g.name)
  const all = new Set(direct)
  for (const d of direct) for (const a of ancestors(inv, d)) all.add(a)
  const priority = (name: string): number => inv.groups.get(name)!.priority
  const sorted = [...all].sort(
    (a, b) =>
      (depth.get(a) ?? 0) - (depth.get(b) ?? 0) || priority(a) - priority(b) || (a < b ? -1 : a > b ? 1 : 0)
  )
  const vars: Vars = {}
  for (const g of sorted) Object.assign(vars, inv.groups.get(g)!.vars)
  Object.assign(vars, inv.hostVars.get(host) ?? {})
  return vars
}

/** Group names, for "did you mean" and error messages. */
export function groupNames(inv: Inventory): string[] {
  return [...inv.groups.keys()]
}

/**
 * The hosts of a group as deploy targets: their `ansible_host` (else the name), `ansible_port` (else
 * `defaultPort`), `ansible_user` and `deploy_roles`; a host whose variables cannot be used is a problem instead.
 */
export function deployHosts(
  found: InventoryHost[],
  defaultPort: number
): { hosts: Host[]; problems: Array<{ name: string; message: string }> } {
  const hosts: Host[] = []
  const problems: Array<{ name: string; message: string }> = []
  for (const { name, vars } of found) {
    const bad = (message: string): void => void problems.push({ name, message })
    const address = vars.ansible_host ?? name
    const user = vars.ansible_user
    if (typeof address !== 'string' || !isAddress(address)) {
      bad(
        `ansible_host "${String(address)}" is not a host name or address; expected e.g. web1.example.com or 10.0.0.5`
      )
      continue
    }
    const port = parsePort(String(vars.ansible_port ?? defaultPort))
    if (typeof port === 'string') {
      bad(`ansible_port: ${port}`)
      continue
    }
    if (user !== undefined && (typeof user !== 'string' || !USERNAME.test(user))) {
      bad(`ansible_user "${String(user)}" is not a valid user name`)
      continue
    }
    const roles = vars.deploy_roles === undefined ? undefined : rolesOf(vars.deploy_roles, 'deploy_roles')
    if (typeof roles === 'string') {
      bad(roles)
      continue
    }
    hosts.push({
      host: address,
      port,
      ...(user ? { user } : {}),
      ...(address !== name ? { name } : {}),
      ...(roles ? { roles } : {})
    })
  }
  return { hosts, problems }
}
