/**
 * Hosts and roles: the typed host every source produces (the hosts input, deploy.yml `hosts:` entries, an Ansible
 * inventory), how an address and a port are written, roles, and when two entries are one server.
 */
import { parseFingerprintPins, type FingerprintPin } from '../remote/hostkeys.js'

export interface Host {
  /** Host name or address as given. */
  host: string
  /** SSH port (the `port` input unless the host entry has its own `:port`). */
  port: number
  /** SSH user for this host when it has its own (an inventory's `ansible_user`); else the `user` input. */
  user?: string
  /** The host's name in the inventory it came from, when that differs from `host` (its `ansible_host`). */
  name?: string
  /** The host's own deploy-path (a config file's hosts entry), else the `deploy-path` input. */
  deployPath?: string
  /** Runs the migrations of a fleet (`primary: true` in a config file's hosts entry; else the first host). */
  primary?: boolean
  /**
   * What the host runs (`roles` of a config file's hosts entry, an inventory's `deploy_roles`); none given: web.
   * Only `web` hosts run the Gunicorn reload, nginx and the health checks; every role may have its own
   * `reload-command`.
   */
  roles?: string[]
}

/** A role's name: `web` (Gunicorn behind nginx) or any other, e.g. `worker`, `scheduler`. */
export const ROLE = /^[a-z][a-z0-9_-]{0,31}$/

export const HOSTNAME =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/
export const IPV6 = /^[0-9A-Fa-f:.]+$/
export const USERNAME = /^[a-z_][a-z0-9_.-]{0,31}\$?$/i

/** Splits "host[:port]", "[v6]:port" and "v6" entries. */
export function parseHost(entry: string, defaultPort: number): Host | string {
  let host = entry
  let port = defaultPort
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(entry)
  if (bracket) {
    host = bracket[1]
    if (bracket[2] !== undefined) {
      const p = parsePort(bracket[2])
      if (typeof p === 'string') return p
      port = p
    }
    if (!IPV6.test(host))
      return `"${entry}" is not a valid host; expected a name, an IPv4 address or [IPv6]:port`
    return { host, port }
  }
  const colons = entry.split(':').length - 1
  if (colons === 1) {
    ;[host] = entry.split(':')
    const p = parsePort(entry.slice(host.length + 1))
    if (typeof p === 'string') return `"${entry}": ${p}`
    port = p
  } else if (colons > 1) {
    if (!IPV6.test(entry))
      return `"${entry}" is not a valid host; expected a name, an IPv4 address or [IPv6]:port`
    return { host: entry, port }
  }
  if (!HOSTNAME.test(host)) {
    return `"${entry}" is not a valid host; expected a host name or address, optionally with :port (e.g. web1.example.com:2222)`
  }
  return { host, port }
}

export function parsePort(text: string): number | string {
  if (!/^\d+$/.test(text.trim())) return `port "${text}" is not a whole number; expected 1–65535`
  const n = Number(text)
  if (n < 1 || n > 65535) return `port ${n} is out of range; expected 1–65535`
  return n
}

/** A bare address (no port): a host name, an IPv4 address or an IPv6 address without brackets. */
export function isAddress(address: string): boolean {
  return HOSTNAME.test(address) || (address.split(':').length > 2 && IPV6.test(address))
}

/** A hosts entry's or inventory host's roles (a list, or one name, or names separated by commas). */
export function rolesOf(value: unknown, whose: string): string[] | string {
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined
  if (!items || items.length === 0 || !items.every(r => typeof r === 'string'))
    return `roles of ${whose} must be a role name or a list of them, e.g. [web, worker]`
  const roles = [...new Set(items.map(r => (r as string).trim()))]
  const bad = roles.find(r => !ROLE.test(r))
  if (bad !== undefined)
    return `role "${bad}" of ${whose} is not a role name; expected lowercase letters, digits, - and _ (e.g. web, worker)`
  return roles
}

/** The config file's `reload-command` as a mapping: `{ web: command, worker: command, … }`. */
export function roleCommands(map: Record<string, unknown>): Record<string, string> | string {
  const out: Record<string, string> = {}
  for (const [role, command] of Object.entries(map)) {
    if (!ROLE.test(role))
      return `"${role}" is not a role name; expected a mapping of roles (web, worker, …: lowercase letters, digits, - and _) to commands`
    if (typeof command !== 'string' || !command.trim())
      return `the command of role ${role} must be a non-empty string, e.g. ${role}: sudo -n systemctl restart celery`
    out[role] = command.trim()
  }
  return out
}

/** What is wrong with a deploy path, if anything. */
export function deployPathProblem(value: string): string | undefined {
  const path = value.replace(/\/+$/, '')
  if (!path.startsWith('/'))
    return `"${value}" is relative; expected an absolute path on the server, e.g. /srv/myapp`
  if (path.split('/').some(s => s === '..' || s === '.'))
    return `"${value}" contains . or ..; expected a plain absolute path`
  if (path === '' || /[\0\n\r]/.test(path))
    return `"${value}" cannot be used; expected a directory below /, e.g. /srv/myapp`
  return undefined
}

/**
 * One `hosts` entry of the config file, checked for its shape: `web1:2222` or `{ host, port, fingerprint (or a
 * list), user, deploy-path, primary, roles }`. Its address is resolved against the `port` input by `entryHost`,
 * once that is known.
 */
export interface HostEntry {
  /** The entry as written (`web1:2222`; `host:` with `port:` as `[v6]:port`), for errors. */
  label: string
  /** What the entry gives beside the address. */
  extras: Pick<Host, 'user' | 'deployPath' | 'roles' | 'primary'>
  /** Its `fingerprint`s, each bound to this entry's address (and port, when the entry has one). */
  pins: FingerprintPin[]
  /** Problems with those fingerprints, as a `host-fingerprint` pair would have them. */
  pinProblems: string[]
}

const SHAPE =
  'an entry that is a mapping must be { host: name[:port], port: number, fingerprint: SHA256:… or a list of them, user: name, deploy-path: /abs/path, primary: true or false, roles: [web, worker, …] }'

/** The config file's `hosts` list as typed entries, or what is wrong with it. */
export function hostEntries(items: unknown[]): HostEntry[] | string {
  // One row per entry, in order, not a map by host: the same host twice with two deploy-paths is two deployments.
  const entries: HostEntry[] = []
  let primary: string | undefined
  for (const item of items) {
    if (typeof item !== 'object' || item === null) {
      entries.push(
        ...splitWordsOf(String(item)).map(label => ({ label, extras: {}, pins: [], pinProblems: [] }))
      )
      continue
    }
    const entry = mappingEntry(item as Record<string, unknown>)
    if (typeof entry === 'string') return entry
    if (entry.extras.primary) {
      if (primary) return `only one host can be primary (${primary} and ${entry.label} are)`
      primary = entry.label
    }
    entries.push(entry)
  }
  return entries
}

/** A plain entry may hold several hosts separated by commas or spaces, as the hosts input does. */
function splitWordsOf(text: string): string[] {
  return text.split(/[\s,]+/).filter(Boolean)
}

function mappingEntry(item: Record<string, unknown>): HostEntry | string {
  const {
    host: given,
    port: portGiven,
    fingerprint,
    primary: isPrimary,
    user,
    'deploy-path': deployPath,
    roles: rolesGiven,
    ...rest
  } = item
  const fps = Array.isArray(fingerprint) ? fingerprint : fingerprint === undefined ? [] : [fingerprint]
  if (
    Object.keys(rest).length ||
    typeof given !== 'string' ||
    (portGiven !== undefined && typeof portGiven !== 'number' && typeof portGiven !== 'string') ||
    !fps.every(f => typeof f === 'string') ||
    (isPrimary !== undefined && typeof isPrimary !== 'boolean') ||
    (user !== undefined && typeof user !== 'string') ||
    (deployPath !== undefined && typeof deployPath !== 'string')
  )
    return SHAPE
  // `port:` is the same as `host: name:port` (an IPv6 address gets its brackets).
  let label = given
  if (portGiven !== undefined) {
    if (/^\[.*\]:|^[^:]*:[^:]*$/.test(given))
      return `host ${given} has a port in its name and a port: ${String(portGiven)}; expected one of them`
    label = `${given.includes(':') && !given.startsWith('[') ? `[${given}]` : given}:${String(portGiven)}`
  }
  if (typeof user === 'string' && !USERNAME.test(user))
    return `user "${user}" of host ${label} is not a valid user name`
  if (typeof deployPath === 'string') {
    const bad = deployPathProblem(deployPath)
    if (bad) return `deploy-path of host ${label}: ${bad}`
  }
  const roles = rolesGiven === undefined ? undefined : rolesOf(rolesGiven, `host ${label}`)
  if (typeof roles === 'string') return roles
  // The pins are checked as host-fingerprint pairs (`label=SHA256:…`) are, for the same messages.
  const parsed = (fps as string[]).map(f => parseFingerprintPins(`${label}=${f}`))
  return {
    label,
    extras: {
      ...(user ? { user: user as string } : {}),
      ...(deployPath ? { deployPath: (deployPath as string).replace(/\/+$/, '') } : {}),
      ...(roles ? { roles } : {}),
      ...(isPrimary === true ? { primary: true } : {})
    },
    pins: parsed.flatMap(p => p.bound),
    pinProblems: parsed.flatMap(p => p.problems)
  }
}

/** The entry's host: its address and port (else `defaultPort`), with what the entry gives beside them. */
export function entryHost(entry: HostEntry, defaultPort: number): Host | string {
  const h = parseHost(entry.label, defaultPort)
  return typeof h === 'string' ? h : { ...h, ...entry.extras }
}

/**
 * Two hosts entries that are one server and one deploy-path would run every step twice on the same directory at
 * once (two uploads, two switches racing): refused, naming both. "One server" is the same address and port after
 * normalising how the address is written (case, a trailing dot, IPv4 and IPv6 notation); names are never resolved
 * through DNS, so web1.example.com and its IP address count as two hosts. The SSH user does not tell hosts apart.
 */
export function sameServerProblems(hosts: Host[], label: (h: Host) => string, path: string): string[] {
  const seen = new Map<string, Host>()
  const problems: string[] = []
  for (const h of hosts) {
    const key = `${normalAddress(h.host)} ${h.port} ${h.deployPath ?? path}`
    const first = seen.get(key)
    if (!first) {
      seen.set(key, h)
      continue
    }
    problems.push(
      `${label(first)} and ${label(h)} are the same server (address ${normalAddress(h.host)}, port ${h.port}, deploy-path ${h.deployPath ?? path}); expected each server once, or a deploy-path of its own for each`
    )
  }
  return problems
}

/** An address as compared for sameness: lowercase, no trailing dot, IP addresses in their canonical notation. */
function normalAddress(host: string): string {
  const name = host.toLowerCase().replace(/\.$/, '')
  try {
    // The WHATWG URL parser normalises IPv4 (127.1, 0x7f.0.0.1) and IPv6 (::0001) notation, and nothing else.
    const parsed = new URL(`http://${name.includes(':') ? `[${name}]` : name}/`).hostname
    return parsed.replace(/^\[(.*)\]$/, '$1')
  } catch {
    return name
  }
}
