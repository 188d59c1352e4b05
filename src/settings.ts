/**
 * Settings: every input and the optional config file, validated once into one typed value. The sections live in
 * src/settings/ (sources and defaults, context, hosts and roles, ssh and pins, deploy, checks, github); this module
 * composes them and holds the rules that cross sections (what a deploy needs, which host needs which input).
 * Nothing below this module reads `core.getInput` or `process.env`.
 */
import { readFileSync } from 'node:fs'
import { readChecks, type ChecksSettings } from './settings/checks.js'
import {
  isPullRequestEvent,
  readRunContext,
  resolveMode,
  type Mode,
  type RequestedMode,
  type RunContext
} from './settings/context.js'
import { readDeploy, readDeployPath, type DeploySettings } from './settings/deploy.js'
import { readMigrations } from './settings/migrations.js'
import { readGithub, type GithubSettings } from './settings/github.js'
import { readHosts, type HostsRead } from './settings/host-sources.js'
import { sameServerProblems, USERNAME, type Host } from './settings/hosts.js'
import { didYouMean, RawValues, SettingsError, type SettingsSources } from './settings/sources.js'
import { readSetup, type SetupSettings } from './settings/setup.js'
import { readJumpHost, readKey, readPins, type SshSettings } from './settings/ssh.js'

export { CHECK_NAMES, type CheckName } from './settings/checks.js'
export { defaultReleaseName, resolveMode, type Mode, type RunContext } from './settings/context.js'
export { isSafeReleaseName, type DeploySettings } from './settings/deploy.js'
export { parseHost, type Host } from './settings/hosts.js'
export { INPUTS, SettingsError, type InputName } from './settings/sources.js'
export type { SshSettings } from './settings/ssh.js'
export type { SetupSettings } from './settings/setup.js'

export interface Settings extends ChecksSettings {
  /** Mode after `auto` was resolved against the event. */
  mode: Mode
  requestedMode: RequestedMode
  ssh: SshSettings
  deploy: DeploySettings
  github: GithubSettings
  context: RunContext
  /** mode: setup only: the administrator's connection and what setup makes. */
  setup?: SetupSettings
  /** Where the config file was read from, if any. */
  configFile?: string
}

const MODES = ['auto', 'check', 'deploy', 'rollback', 'setup']

/** Parses and validates everything once. Throws SettingsError listing every problem found. */
export function loadSettings(sources: SettingsSources, now = new Date()): Settings {
  const readFile = sources.readFile ?? ((p: string) => readFileSync(p, 'utf8'))
  const workspace = sources.env.GITHUB_WORKSPACE || process.cwd()
  const raw = new RawValues(sources)
  raw.loadConfig(workspace, readFile)
  const context = readRunContext(sources.env, readFile, workspace)
  const { mode, requestedMode } = readMode(raw, context)
  const deploying = mode !== 'check'
  const checks = readChecks(raw, workspace)
  const hostsRead = readHosts(raw, workspace, readFile)
  const ssh = readSshSection(raw, hostsRead, mode)
  const path = readDeployPath(raw)
  const { hosts, labels } = hostsRead
  if (deploying && !path && (hosts.length === 0 || hosts.some(h => !h.deployPath)))
    raw.fail(raw.get('deploy-path'), 'is empty; expected an absolute path on the server, e.g. /srv/myapp')
  const label = (h: Host): string => labels.get(h) ?? h.name ?? h.host
  for (const p of sameServerProblems(hosts, label, path)) raw.fail(hostsRead.where, p)
  const read = readDeploy(raw, mode, context, now)
  const deploy: DeploySettings = {
    path,
    ...read,
    roleReloadCommands: roleReloads(raw, hosts),
    migrations: readMigrations(raw, hosts.length > 1 || read.rolling !== undefined)
  }
  const settings: Settings = {
    mode,
    requestedMode,
    ...checks,
    ssh,
    deploy,
    github: readGithub(raw),
    context,
    configFile: raw.configFile,
    setup:
      mode === 'setup'
        ? readSetup(raw, context.repo, checks.workingDirectory, [path, ...hosts.map(h => h.deployPath ?? '')])
        : undefined
  }
  if (raw.problems.length) throw new SettingsError(raw.problems)
  return settings
}

/** The mode asked for and what it resolves to; deploy and rollback are refused on a pull request's events. */
function readMode(raw: RawValues, context: RunContext): { mode: Mode; requestedMode: RequestedMode } {
  const modeRaw = raw.get('mode')
  if (!MODES.includes(modeRaw.value)) {
    raw.fail(
      modeRaw,
      `unknown mode "${modeRaw.value}"${didYouMean(modeRaw.value, MODES)}; expected one of ${MODES.join(', ')}`
    )
    // An unknown mode is reported alone: guessing one would bury it under that mode's requirements.
    return { mode: 'check', requestedMode: 'auto' }
  }
  const requestedMode = modeRaw.value as RequestedMode
  const mode = resolveMode(requestedMode, context)
  if (mode !== 'check' && isPullRequestEvent(context.eventName)) {
    raw.fail(
      modeRaw,
      `mode ${mode} is refused on a ${context.eventName} event: a pull request's code must never reach deploy credentials; deploy from a tag push or workflow_dispatch`
    )
  }
  return { mode, requestedMode }
}

/** SSH with the rules across hosts: a deploy needs hosts, and a user for each host that has none of its own. */
function readSshSection(raw: RawValues, read: HostsRead, mode: Mode): SshSettings {
  const deploying = mode !== 'check'
  const { hosts } = read
  const hostsRaw = raw.get('hosts')
  const inventoryRaw = raw.get('inventory')
  if (deploying && hosts.length === 0 && !hostsRaw.value.trim() && !inventoryRaw.value) {
    raw.fail(hostsRaw, `is empty; ${mode} needs at least one server, e.g. hosts: web1.example.com`)
  }
  const userRaw = raw.get('user')
  const withoutUser = hosts.filter(h => !h.user)
  if (deploying && !userRaw.value && (hosts.length === 0 || withoutUser.length > 0))
    raw.fail(
      userRaw,
      `is empty; ${mode} needs the SSH user that owns deploy-path${inventoryRaw.value ? ` (the inventory gives no ansible_user for ${withoutUser.map(h => h.name ?? h.host).join(', ')})` : ''}`
    )
  else if (userRaw.value && !USERNAME.test(userRaw.value))
    raw.fail(userRaw, `"${userRaw.value}" is not a valid user name`)
  const key = readKey(raw, deploying)
  const jumpHost = readJumpHost(raw)
  return {
    hosts,
    user: userRaw.value,
    ...key,
    knownHosts: raw.text('known-hosts'),
    fingerprints: readPins(raw, hosts, jumpHost, deploying),
    jumpHost,
    connectTimeout: 20,
    commandTimeout: raw.int('command-timeout')
  }
}

/** Each role's reload-command must be some host's role: a typo would otherwise leave workers on old code. */
function roleReloads(raw: RawValues, hosts: Host[]): Record<string, string> {
  const commands = raw.roleReloads?.commands ?? {}
  const held = new Set(hosts.flatMap(h => h.roles ?? ['web']))
  for (const role of Object.keys(commands)) {
    if (held.has(role) || hosts.length === 0) continue
    raw.fail(
      raw.roleReloads!.where,
      `role ${role} is no host's role${didYouMean(role, [...held])}; expected the roles the hosts have (${[...held].join(', ')}), set by roles: in deploy.yml hosts entries or deploy_roles in the inventory`
    )
  }
  return commands
}
