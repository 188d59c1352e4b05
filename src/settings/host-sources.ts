/**
 * Where the hosts come from: the `hosts` input (words), the config file's typed `hosts:` entries, or the group of
 * an Ansible inventory in the repository. Each source gives typed hosts; nothing is joined into text and parsed
 * again.
 */
import { realpathSync } from 'node:fs'
import { isAbsolute, relative, resolve } from 'node:path'
import { deployHosts, groupHosts, groupNames, InventoryError, parseInventory } from '../inventory.js'
import { entryHost, parseHost, parsePort, type Host } from './hosts.js'
import { didYouMean, INPUTS, splitList, type Raw, type RawValues } from './sources.js'

export interface HostsRead {
  hosts: Host[]
  /** Each host as its source names it (the entry as written, the inventory name), for errors. */
  labels: Map<Host, string>
  /** The `port` input: the port of hosts that do not give their own. */
  port: number
  /** Where the hosts came from, for the errors about them as a whole. */
  where: Raw
}

export function readHosts(raw: RawValues, workspace: string, readFile: (p: string) => string): HostsRead {
  const portRaw = raw.get('port')
  let port = 22
  const p = parsePort(portRaw.value)
  if (typeof p === 'string') raw.fail(portRaw, p)
  else port = p
  const hostsRaw = raw.get('hosts')
  const hosts: Host[] = []
  const labels = new Map<Host, string>()
  const entries = hostsRaw.fromFile
    ? (raw.fileHosts?.entries ?? []).map(e => [e.label, entryHost(e, port)] as const)
    : splitList(hostsRaw.value).map(entry => [entry, parseHost(entry, port)] as const)
  for (const [label, h] of entries) {
    if (typeof h === 'string') raw.fail(hostsRaw, h)
    else {
      hosts.push(h)
      labels.set(h, label)
    }
  }
  const inventoryRaw = raw.get('inventory')
  const groupRaw = raw.get('inventory-group')
  if (inventoryRaw.value) hosts.push(...inventoryHosts(raw, hostsRaw, port, workspace, readFile))
  else if (groupRaw.value !== INPUTS['inventory-group'].default)
    raw.fail(groupRaw, 'is set but inventory is empty; expected the inventory file it is a group of')
  return { hosts, labels, port, where: inventoryRaw.value ? inventoryRaw : hostsRaw }
}

function outside(rel: string): boolean {
  return rel === '..' || rel.startsWith('../') || isAbsolute(rel)
}

/** The path with every symlink in it resolved; as given when it does not exist (reading it then says so). */
function realOrSelf(path: string): string {
  try {
    return realpathSync(path)
  } catch {
    return path
  }
}

/**
 * The hosts of `inventory-group` in the Ansible inventory file `inventory` (a path in the repository), with
 * their `ansible_host`, `ansible_port` (else the `port` input) and `ansible_user` (else the `user` input).
 */
function inventoryHosts(
  raw: RawValues,
  hostsRaw: Raw,
  defaultPort: number,
  workspace: string,
  readFile: (p: string) => string
): Host[] {
  const invRaw = raw.get('inventory')
  const groupRaw = raw.get('inventory-group')
  if (hostsRaw.value) {
    raw.fail(
      invRaw,
      `is set together with hosts (${hostsRaw.where}); expected one source of hosts: hosts, or inventory with inventory-group`
    )
    return []
  }
  const file = invRaw.value
  const inv = readInventory(raw, invRaw, resolve(workspace, file), workspace, readFile)
  if (!inv) return []
  const group = groupRaw.value
  const names = groupNames(inv)
  if (!names.includes(group)) {
    raw.fail(
      groupRaw,
      `"${group}" is not a group in ${file}${didYouMean(group, names)}; expected one of ${names.join(', ')}`
    )
    return []
  }
  const found = groupHosts(inv, group)
  if (found.length === 0) {
    raw.fail(groupRaw, `group ${group} in ${file} has no hosts; expected a group with at least one host`)
    return []
  }
  const { hosts, problems } = deployHosts(found, defaultPort)
  for (const { name, message } of problems)
    raw.fail(invRaw, `host ${name} of group ${group} in ${file}: ${message}`)
  return hosts
}

function readInventory(
  raw: RawValues,
  invRaw: Raw,
  full: string,
  workspace: string,
  readFile: (p: string) => string
): ReturnType<typeof parseInventory> | undefined {
  const file = invRaw.value
  // The file's lines can appear in errors: only a file of the repository, never one elsewhere on the runner. A
  // symlink is judged by where it leads (deploy/inventory.ini -> /etc/shadow is outside).
  if (outside(relative(realOrSelf(workspace), realOrSelf(full)))) {
    raw.fail(
      invRaw,
      `"${file}" ${outside(relative(workspace, full)) ? 'is' : 'is a symlink that leads'} outside the repository; expected a path inside it, e.g. deploy/inventory.ini`
    )
    return undefined
  }
  let text: string
  try {
    text = readFile(full)
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message
    raw.fail(
      invRaw,
      `cannot read "${file}" (${why}); expected the path of an Ansible inventory file (INI or YAML) in the repository`
    )
    return undefined
  }
  try {
    return parseInventory(text, file)
  } catch (e) {
    if (!(e instanceof InventoryError)) throw e
    raw.fail(invRaw, `"${file}" is not an inventory Ansible reads: ${e.message}`)
    return undefined
  }
}
