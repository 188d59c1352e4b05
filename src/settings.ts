/**
 * Settings: every input and the optional config file, validated once into one typed value.
 * Nothing below this module reads `core.getInput` or `process.env`.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { isAbsolute, relative, resolve } from 'node:path'
import ssh2 from 'ssh2'
import { parseDocument } from 'yaml'
import {
  hasPin,
  KnownHostsError,
  knownHostsName,
  parseFingerprintPins,
  parseKnownHosts,
  pinMatches,
  type FingerprintPin
} from './remote/hostkeys.js'
import { withoutCredentials } from './github/redact.js'
import { groupHosts, groupNames, InventoryError, parseInventory } from './inventory.js'
import { splitWords, WordsError } from './shellwords.js'

export type Mode = 'check' | 'deploy' | 'rollback'
export type RequestedMode = 'auto' | Mode
export const DEPLOY_CHECK_MODES = ['warn', 'fail', 'off'] as const
export type DeployCheck = (typeof DEPLOY_CHECK_MODES)[number]

export const CHECK_NAMES = ['check', 'deploy', 'migrations', 'test'] as const
export type CheckName = (typeof CHECK_NAMES)[number]

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

export interface SshSettings {
  hosts: Host[]
  user: string
  /** PEM/OpenSSH private key text; kept in memory only. */
  privateKey: string
  passphrase?: string
  /** known_hosts lines (OpenSSH format) that pin host keys. */
  knownHosts?: string
  /** `SHA256:…` fingerprints, each pinned for one host (`host-fingerprint` pairs, hosts entries of the config file). */
  fingerprints: FingerprintPin[]
  /** `user@host:port` of a bastion, when one is used. */
  jumpHost?: { user: string; host: string; port: number }
  /** Seconds to wait for a TCP connection and the SSH handshake. */
  connectTimeout: number
  /** Seconds one remote command may run. */
  commandTimeout: number
}

export interface DeploySettings {
  /** Absolute path on the server: holds releases/, shared/, current. */
  path: string
  /** Paths relative to the release that live in shared/ and are linked into each release. */
  sharedPaths: string[]
  remotePython: string
  venvOptions: string[]
  pipArgs: string[]
  migrate: boolean
  /** `migrate: every-host`: each host has its own database and migrates it; else migrations run once. */
  migrateEveryHost: boolean
  /** Hosts worked on at once in each phase (`max-parallel`). */
  maxParallel: number
  /** `rolling`: hosts switched per batch (a count, or a percentage of the hosts); none: all at once. */
  rolling?: { count: number } | { percent: number }
  collectstatic: boolean
  gunicornPidfile?: string
  gunicornService?: string
  reloadCommand?: string
  /**
   * `reload-command` per role other than `web` (a mapping in the config file, e.g. `worker: sudo systemctl
   * restart celery`), run on the hosts that have the role, after the switch. The web role's is `reloadCommand`.
   */
  roleReloadCommands: Record<string, string>
  nginx: boolean
  nginxTestCommand: string
  nginxReloadCommand: string
  healthCheckUrl?: string
  /** Seconds. */
  healthCheckTimeout: number
  /** Django's `check --deploy` with the server's settings, in the preflight: report, fail on warnings, or skip. */
  deployCheck: DeployCheck
  keepReleases: number
  /** Explicit release name (deploy) or rollback target (rollback). */
  releaseName?: string
  /** Seconds to wait for another deploy's lock. */
  lockTimeout: number
  dryRun: boolean
}

/** What the workflow run is about; read from the runner's environment in one place. */
export interface RunContext {
  eventName: string
  /** e.g. refs/tags/v1.2.0, refs/heads/main, refs/pull/7/merge */
  ref: string
  sha: string
  owner: string
  repo: string
  /** Pull request number for pull-request events (`PULL_REQUEST_EVENTS`), from the payload or the ref. */
  prNumber?: number
  /** Link to this workflow run, for reports. */
  runUrl?: string
  /** The checkout on the runner (GITHUB_WORKSPACE): finding paths are relative to it. */
  workspace: string
}

/** When the PR comment is posted: on every run, only when the run failed (then kept up to date), or never. */
export type CommentMode = 'always' | 'on-failure' | 'never'
export const COMMENT_MODES: readonly CommentMode[] = ['always', 'on-failure', 'never']

export interface GithubSettings {
  token?: string
  environment: string
  environmentUrl?: string
  /** Create a GitHub deployment (off when the job's own `environment:` already records one). */
  deployment: boolean
  comment: CommentMode
  /** Tells this job's PR comment apart from other jobs' (matrix jobs): one comment per key. */
  commentKey?: string
}

export interface Settings {
  /** Mode after `auto` was resolved against the event. */
  mode: Mode
  requestedMode: RequestedMode
  /** Absolute path of the Django project on the runner (holds manage.py). */
  workingDirectory: string
  python: string
  checks: CheckName[]
  testCommand?: string
  /** Seconds one check may run before its process group is killed. */
  checkTimeout: number
  ssh: SshSettings
  deploy: DeploySettings
  github: GithubSettings
  context: RunContext
  /** Where the config file was read from, if any. */
  configFile?: string
}

/**
 * Every input of the action with its default. action.yml declares no `default:` for the ones a config file may
 * set, because GitHub passes a declared default as if the user had typed it, and inputs override the file.
 * `secret` inputs are never accepted from the config file (it is committed) and never echoed in errors.
 */
export const INPUTS = {
  mode: { default: 'auto' },
  'working-directory': { default: '.' },
  python: { default: 'python3' },
  checks: { default: 'check, migrations, test' },
  'test-command': { default: '' },
  'check-timeout': { default: '1800' },
  hosts: { default: '' },
  inventory: { default: '' },
  'inventory-group': { default: 'all' },
  user: { default: '' },
  port: { default: '22' },
  'ssh-key': { default: '', secret: true },
  'ssh-key-passphrase': { default: '', secret: true },
  'known-hosts': { default: '' },
  'host-fingerprint': { default: '' },
  'jump-host': { default: '' },
  'deploy-path': { default: '' },
  'shared-paths': { default: '.env, media' },
  'remote-python': { default: 'python3' },
  'venv-options': { default: '' },
  'pip-args': { default: '' },
  migrate: { default: 'true' },
  'max-parallel': { default: '10' },
  rolling: { default: '' },
  collectstatic: { default: 'true' },
  'gunicorn-pidfile': { default: '' },
  'gunicorn-service': { default: '' },
  'reload-command': { default: '' },
  nginx: { default: 'false' },
  'nginx-test-command': { default: 'sudo -n nginx -t' },
  'nginx-reload-command': { default: 'sudo -n nginx -s reload' },
  'health-check-url': { default: '' },
  'health-check-timeout': { default: '30' },
  'deploy-check': { default: 'warn' },
  'keep-releases': { default: '5' },
  'release-name': { default: '' },
  'lock-timeout': { default: '300' },
  'command-timeout': { default: '900' },
  config: { default: '' },
  'dry-run': { default: 'false' },
  'github-token': { default: '', secret: true },
  environment: { default: 'production' },
  'environment-url': { default: '' },
  'github-deployment': { default: 'true' },
  comment: { default: 'always' },
  'comment-key': { default: '' }
} as const satisfies Record<string, { default: string; secret?: boolean }>

export type InputName = keyof typeof INPUTS

/** One problem with the input: where it came from, what was wrong, what is expected. */
export interface SettingsProblem {
  /** `input 'port'` or `deploy.yml: key 'port' (line 4)` */
  where: string
  message: string
}

export class SettingsError extends Error {
  constructor(readonly problems: SettingsProblem[]) {
    super(problems.map(p => `${p.where}: ${p.message}`).join('\n'))
    this.name = 'SettingsError'
  }
}

export interface SettingsSources {
  /** The action's inputs as given (empty string = not given), e.g. from `core.getInput`. */
  input: (name: InputName) => string
  /** The runner's environment: GITHUB_WORKSPACE, GITHUB_EVENT_NAME, GITHUB_REF, … */
  env: Record<string, string | undefined>
  /** Reads a file (the config file, the event payload); injectable for tests. */
  readFile?: (path: string) => string
}

const SAFE_RELEASE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$/
const HOSTNAME =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/
const IPV6 = /^[0-9A-Fa-f:.]+$/
const USERNAME = /^[a-z_][a-z0-9_.-]{0,31}\$?$/i

/** A release name the remote side can trust: refused, never rewritten, when it has anything else. */
export function isSafeReleaseName(name: string): boolean {
  return SAFE_RELEASE.test(name) && name !== '.' && name !== '..' && !name.includes('..')
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]
    d[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j]
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return d[b.length]
}

export function didYouMean(word: string, choices: readonly string[]): string {
  const best = choices.map(c => ({ c, d: distance(word.toLowerCase(), c) })).sort((x, y) => x.d - y.d)[0]
  return best && best.d <= Math.max(2, Math.floor(word.length / 3)) ? ` (did you mean '${best.c}'?)` : ''
}

/** Splits a list given as commas, spaces or new lines (or a YAML sequence already joined). */
export function splitList(value: string): string[] {
  return value
    .split(/[\s,]+/)
    .map(s => s.trim())
    .filter(Boolean)
}

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

function parsePort(text: string): number | string {
  if (!/^\d+$/.test(text.trim())) return `port "${text}" is not a whole number; expected 1–65535`
  const n = Number(text)
  if (n < 1 || n > 65535) return `port ${n} is out of range; expected 1–65535`
  return n
}

/** Resolves `auto` against the event that started the workflow. */
export function resolveMode(requested: RequestedMode, ctx: Pick<RunContext, 'eventName' | 'ref'>): Mode {
  if (requested !== 'auto') return requested
  if (isPullRequestEvent(ctx.eventName)) return 'check'
  // A manual run deploys only when the workflow says so (mode: deploy, e.g. from a `type: choice` input): a
  // workflow_dispatch trigger added to re-run the checks by hand must not ship to production.
  if (ctx.eventName === 'push' && ctx.ref.startsWith('refs/tags/')) return 'deploy'
  return 'check'
}

/**
 * Events that run for a pull request. A review or review comment runs the workflow from the pull request's merge
 * ref too, so its code is the pull request's: never deployed.
 */
export const PULL_REQUEST_EVENTS = [
  'pull_request',
  'pull_request_target',
  'pull_request_review',
  'pull_request_review_comment'
] as const

export function isPullRequestEvent(eventName: string): boolean {
  return (PULL_REQUEST_EVENTS as readonly string[]).includes(eventName)
}

/** Reads the run's context from the runner's environment (the variables GitHub sets for every step). */
export function readRunContext(
  env: Record<string, string | undefined>,
  readFile: (path: string) => string,
  workspace: string
): RunContext {
  const [owner = '', repo = ''] = (env.GITHUB_REPOSITORY ?? '').split('/')
  let prNumber: number | undefined
  if (isPullRequestEvent(env.GITHUB_EVENT_NAME ?? '') && env.GITHUB_EVENT_PATH) {
    try {
      const payload = JSON.parse(readFile(env.GITHUB_EVENT_PATH)) as { pull_request?: { number?: number } }
      prNumber = payload.pull_request?.number
    } catch {
      prNumber = undefined
    }
  }
  if (prNumber === undefined) {
    const m = /^refs\/pull\/(\d+)\//.exec(env.GITHUB_REF ?? '')
    if (m) prNumber = Number(m[1])
  }
  const server = env.GITHUB_SERVER_URL ?? 'https://github.com'
  return {
    eventName: env.GITHUB_EVENT_NAME ?? '',
    ref: env.GITHUB_REF ?? '',
    sha: env.GITHUB_SHA ?? '',
    owner,
    repo,
    prNumber,
    runUrl:
      env.GITHUB_RUN_ID && owner ? `${server}/${owner}/${repo}/actions/runs/${env.GITHUB_RUN_ID}` : undefined,
    workspace
  }
}

/** Default release name: the tag, else the short SHA and the UTC time. */
export function defaultReleaseName(ctx: Pick<RunContext, 'ref' | 'sha'>, now: Date): string {
  if (ctx.ref.startsWith('refs/tags/')) return ctx.ref.slice('refs/tags/'.length)
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
  return `${(ctx.sha || 'local').slice(0, 7)}-${stamp}`
}

type Raw = { value: string; where: string; fromFile: boolean }

/** Collects the raw values: input if given, else config file, else default. */
class RawValues {
  readonly problems: SettingsProblem[] = []
  private file = new Map<string, { value: string; line?: number }>()
  /** `host=SHA256:…` pins from `hosts` entries of the config file that have their own `fingerprint`. */
  hostPins: Array<readonly [string, string]> = []
  /** The config file's hosts entry marked `primary: true`, as written. */
  primaryHost?: string
  /** Per-host user and deploy-path of the config file's hosts entries, by the entry's host as written. */
  hostExtras: Array<[string, HostExtras]> = []
  /** `reload-command` given in the config file as a mapping of role to command: the roles other than web. */
  roleReloads?: { commands: Record<string, string>; where: string }
  configFile?: string

  constructor(private readonly sources: SettingsSources) {}

  loadConfig(workspace: string, readFile: (p: string) => string): void {
    const given = this.sources.input('config').trim()
    const path = resolve(workspace, given || 'deploy.yml')
    if (!given && !existsSync(path)) return
    let text: string
    try {
      text = readFile(path)
    } catch {
      this.problems.push({
        where: "input 'config'",
        message: `cannot read "${given}"; expected a YAML file in the repository`
      })
      return
    }
    this.configFile = given || 'deploy.yml'
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
    if (doc.errors.length) {
      const e = doc.errors[0]
      const line = e.linePos?.[0]?.line
      this.problems.push({
        where: `${this.configFile}${line ? ` line ${line}` : ''}`,
        message: `invalid YAML: ${e.message.split('\n')[0]}`
      })
      return
    }
    const root = doc.contents
    if (root === null || root === undefined) return
    if (!('items' in root) || !Array.isArray(root.items) || root.constructor.name !== 'YAMLMap') {
      this.problems.push({ where: this.configFile, message: 'expected a mapping of input names to values' })
      return
    }
    const names = Object.keys(INPUTS)
    for (const pair of root.items as { key: { value?: unknown; range?: number[] }; value: unknown }[]) {
      const key = String(pair.key?.value ?? pair.key)
      const line = pair.key?.range ? lineOf(text, pair.key.range[0]) : undefined
      const where = `${this.configFile}: key '${key}'${line ? ` (line ${line})` : ''}`
      if (!names.includes(key)) {
        this.problems.push({
          where,
          message: `unknown key${didYouMean(key, names)}; expected one of the action's inputs`
        })
        continue
      }
      const spec = INPUTS[key as InputName] as { secret?: boolean }
      if (spec.secret || key === 'config') {
        this.problems.push({
          where,
          message:
            key === 'config'
              ? 'the config file cannot name another config file'
              : 'secrets do not belong in a committed file; pass it as an input from `secrets.*`'
        })
        continue
      }
      const json = (pair.value as { toJSON?: () => unknown })?.toJSON?.() ?? null
      let value: string
      if (key === 'hosts' && Array.isArray(json) && json.some(h => typeof h === 'object' && h !== null)) {
        const entries = hostEntries(json)
        if (typeof entries === 'string') {
          this.problems.push({ where, message: entries })
          continue
        }
        value = entries.hosts.join('\n')
        if (entries.pins.length) this.hostPins.push([where, entries.pins.join('\n')])
        this.primaryHost = entries.primary
        this.hostExtras = entries.extras
      } else if (
        key === 'reload-command' &&
        typeof json === 'object' &&
        json !== null &&
        !Array.isArray(json)
      ) {
        const byRole = roleCommands(json as Record<string, unknown>)
        if (typeof byRole === 'string') {
          this.problems.push({ where, message: byRole })
          continue
        }
        const { web, ...others } = byRole
        value = web ?? ''
        this.roleReloads = { commands: others, where }
      } else if (Array.isArray(json)) value = json.map(String).join('\n')
      else if (json === null) value = ''
      else if (typeof json === 'object') {
        this.problems.push({ where, message: 'expected a single value or a list, not a mapping' })
        continue
      } else value = String(json)
      this.file.set(key, { value, line })
    }
  }

  get(name: InputName): Raw {
    const given = this.sources.input(name)
    if (given.trim() !== '') return { value: given.trim(), where: `input '${name}'`, fromFile: false }
    const f = this.file.get(name)
    if (f && f.value.trim() !== '') {
      return {
        value: f.value.trim(),
        where: `${this.configFile}: key '${name}'${f.line ? ` (line ${f.line})` : ''}`,
        fromFile: true
      }
    }
    return { value: INPUTS[name].default, where: `input '${name}'`, fromFile: false }
  }

  fail(raw: Raw | string, message: string): void {
    this.problems.push({ where: typeof raw === 'string' ? raw : raw.where, message })
  }
}

/** `hosts` items of the config file: `web1:2222` or `{ host: web1:2222, fingerprint: SHA256:… (or a list) }`. */
interface HostExtras {
  user?: string
  deployPath?: string
  roles?: string[]
}

/** The config file's `reload-command` as a mapping: `{ web: command, worker: command, … }`. */
function roleCommands(map: Record<string, unknown>): Record<string, string> | string {
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

/** A hosts entry's or inventory host's roles (a list, or one name, or names separated by commas). */
function rolesOf(value: unknown, whose: string): string[] | string {
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined
  if (!items || items.length === 0 || !items.every(r => typeof r === 'string'))
    return `roles of ${whose} must be a role name or a list of them, e.g. [web, worker]`
  const roles = [...new Set(items.map(r => (r as string).trim()))]
  const bad = roles.find(r => !ROLE.test(r))
  if (bad !== undefined)
    return `role "${bad}" of ${whose} is not a role name; expected lowercase letters, digits, - and _ (e.g. web, worker)`
  return roles
}

function hostEntries(
  items: unknown[]
): { hosts: string[]; pins: string[]; primary?: string; extras: Array<[string, HostExtras]> } | string {
  const hosts: string[] = []
  const pins: string[] = []
  // One row per entry, in order, not a map by host: the same host twice with two deploy-paths is two deployments.
  const extras: Array<[string, HostExtras]> = []
  let primary: string | undefined
  for (const item of items) {
    if (typeof item !== 'object' || item === null) {
      hosts.push(String(item))
      extras.push([String(item), {}])
      continue
    }
    const {
      host: given,
      port: portGiven,
      fingerprint,
      primary: isPrimary,
      user,
      'deploy-path': deployPath,
      roles: rolesGiven,
      ...rest
    } = item as Record<string, unknown>
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
      return 'an entry that is a mapping must be { host: name[:port], port: number, fingerprint: SHA256:… or a list of them, user: name, deploy-path: /abs/path, primary: true or false, roles: [web, worker, …] }'
    // `port:` is the same as `host: name:port` (an IPv6 address gets its brackets).
    let host = given
    if (portGiven !== undefined) {
      if (/^\[.*\]:|^[^:]*:[^:]*$/.test(given))
        return `host ${given} has a port in its name and a port: ${String(portGiven)}; expected one of them`
      host = `${given.includes(':') && !given.startsWith('[') ? `[${given}]` : given}:${String(portGiven)}`
    }
    if (typeof user === 'string' && !USERNAME.test(user))
      return `user "${user}" of host ${host} is not a valid user name`
    if (typeof deployPath === 'string') {
      const bad = deployPathProblem(deployPath)
      if (bad) return `deploy-path of host ${host}: ${bad}`
    }
    const roles = rolesGiven === undefined ? undefined : rolesOf(rolesGiven, `host ${host}`)
    if (typeof roles === 'string') return roles
    extras.push([
      host,
      {
        ...(user ? { user: user as string } : {}),
        ...(deployPath ? { deployPath: (deployPath as string).replace(/\/+$/, '') } : {}),
        ...(roles ? { roles } : {})
      }
    ])
    if (isPrimary === true) {
      if (primary) return `only one host can be primary (${primary} and ${host} are)`
      primary = host
    }
    hosts.push(host)
    pins.push(...fps.map(f => `${host}=${f as string}`))
  }
  return { hosts, pins, primary, extras }
}

/** What is wrong with a deploy path, if anything. */
function deployPathProblem(value: string): string | undefined {
  const path = value.replace(/\/+$/, '')
  if (!path.startsWith('/'))
    return `"${value}" is relative; expected an absolute path on the server, e.g. /srv/myapp`
  if (path.split('/').some(s => s === '..' || s === '.'))
    return `"${value}" contains . or ..; expected a plain absolute path`
  if (path === '' || /[\0\n\r]/.test(path))
    return `"${value}" cannot be used; expected a directory below /, e.g. /srv/myapp`
  return undefined
}

function lineOf(text: string, offset: number): number {
  return text.slice(0, offset).split('\n').length
}

/** Parses and validates everything once. Throws SettingsError listing every problem found. */
export function loadSettings(sources: SettingsSources, now = new Date()): Settings {
  const readFile = sources.readFile ?? ((p: string) => readFileSync(p, 'utf8'))
  const env = sources.env
  const workspace = env.GITHUB_WORKSPACE || process.cwd()
  const raw = new RawValues(sources)
  raw.loadConfig(workspace, readFile)
  const context = readRunContext(env, readFile, workspace)

  const bool = (name: InputName): boolean => {
    const r = raw.get(name)
    const v = r.value.toLowerCase()
    if (['true', 'yes', 'on', '1'].includes(v)) return true
    if (['false', 'no', 'off', '0'].includes(v)) return false
    raw.fail(r, `"${r.value}" is not a boolean; expected true or false`)
    return false
  }
  const int = (name: InputName, min: number, unit: string): number => {
    const r = raw.get(name)
    if (!/^-?\d+$/.test(r.value)) {
      raw.fail(r, `"${r.value}" is not a whole number; expected ${unit} ≥ ${min}`)
      return Number(INPUTS[name].default)
    }
    const n = Number(r.value)
    if (n < min) raw.fail(r, `${n} is ${n < 0 ? 'negative' : 'too small'}; expected ${unit} ≥ ${min}`)
    return n
  }
  const text = (name: InputName): string | undefined => raw.get(name).value || undefined
  const migrateMode = (): { migrate: boolean; migrateEveryHost: boolean } => {
    const r = raw.get('migrate')
    const v = r.value.toLowerCase()
    if (v === 'every-host') return { migrate: true, migrateEveryHost: true }
    if (['true', 'yes', 'on', '1', 'false', 'no', 'off', '0'].includes(v))
      return { migrate: bool('migrate'), migrateEveryHost: false }
    raw.fail(
      r,
      `"${r.value}" is not a migrate mode; expected true (once, on the primary host), every-host (each host has its own database) or false`
    )
    return { migrate: false, migrateEveryHost: false }
  }
  const rollingOf = (): DeploySettings['rolling'] => {
    const r = raw.get('rolling')
    if (!r.value) return undefined
    const m = /^(\d+)(%?)$/.exec(r.value)
    const n = Number(m?.[1])
    if (!m || n < 1 || (m[2] && n > 100)) {
      raw.fail(
        r,
        `"${r.value}" is not a batch size; expected a count of hosts (e.g. 2) or a percentage (e.g. 25%)`
      )
      return undefined
    }
    return m[2] ? { percent: n } : { count: n }
  }
  const oneOf = <T extends string>(name: InputName, choices: readonly T[]): T => {
    const r = raw.get(name)
    const v = r.value.toLowerCase()
    if ((choices as readonly string[]).includes(v)) return v as T
    raw.fail(
      r,
      `"${r.value}" is not a valid value${didYouMean(v, choices)}; expected one of ${choices.join(', ')}`
    )
    return INPUTS[name].default as T
  }

  // mode
  const modeRaw = raw.get('mode')
  const modes = ['auto', 'check', 'deploy', 'rollback']
  let requestedMode: RequestedMode = 'auto'
  if (modes.includes(modeRaw.value)) requestedMode = modeRaw.value as RequestedMode
  else
    raw.fail(
      modeRaw,
      `unknown mode "${modeRaw.value}"${didYouMean(modeRaw.value, modes)}; expected one of ${modes.join(', ')}`
    )
  // An unknown mode is reported alone: guessing one would bury it under that mode's requirements.
  const mode = modes.includes(modeRaw.value) ? resolveMode(requestedMode, context) : 'check'
  if (mode !== 'check' && isPullRequestEvent(context.eventName)) {
    raw.fail(
      modeRaw,
      `mode ${mode} is refused on a ${context.eventName} event: a pull request's code must never reach deploy credentials; deploy from a tag push or workflow_dispatch`
    )
  }
  const deploying = mode !== 'check'

  // working directory and checks
  const wdRaw = raw.get('working-directory')
  const workingDirectory = resolve(workspace, wdRaw.value)
  if (!existsSync(workingDirectory))
    raw.fail(
      wdRaw,
      `"${wdRaw.value}" does not exist in the workspace; expected the folder that holds manage.py`
    )
  const checksRaw = raw.get('checks')
  const checkWords = splitList(checksRaw.value.toLowerCase())
  let checks: CheckName[] = []
  if (checkWords.length === 1 && checkWords[0] === 'none') checks = []
  else if (checkWords.length === 1 && checkWords[0] === 'all') checks = [...CHECK_NAMES]
  else {
    for (const w of checkWords) {
      if ((CHECK_NAMES as readonly string[]).includes(w)) {
        if (!checks.includes(w as CheckName)) checks.push(w as CheckName)
      } else {
        raw.fail(
          checksRaw,
          `unknown check "${w}"${didYouMean(w, CHECK_NAMES)}; expected any of ${CHECK_NAMES.join(', ')}, all or none`
        )
      }
    }
  }

  // SSH
  const port = (() => {
    const r = raw.get('port')
    const p = parsePort(r.value)
    if (typeof p === 'string') {
      raw.fail(r, p)
      return 22
    }
    return p
  })()
  const hostsRaw = raw.get('hosts')
  const hosts: Host[] = []
  /** Each host as its source names it (the entry as written, the inventory name), for errors. */
  const labels = new Map<Host, string>()
  for (const entry of splitList(hostsRaw.value)) {
    const h = parseHost(entry, port)
    if (typeof h === 'string') raw.fail(hostsRaw, h)
    else {
      hosts.push(h)
      labels.set(h, entry)
    }
  }
  if (hostsRaw.fromFile) {
    const done = new Set<Host>()
    for (const [entry, extra] of raw.hostExtras) {
      const p = parseHost(entry, port)
      const same = (x: Host): boolean => typeof p !== 'string' && x.host === p.host && x.port === p.port
      const h = hosts.find(x => same(x) && !done.has(x))
      if (!h) continue
      Object.assign(h, extra)
      done.add(h)
    }
  }
  if (raw.primaryHost && hostsRaw.fromFile) {
    const p = parseHost(raw.primaryHost, port)
    const at = typeof p === 'string' ? -1 : hosts.findIndex(h => h.host === p.host && h.port === p.port)
    if (at >= 0) hosts[at].primary = true
  }
  const inventoryRaw = raw.get('inventory')
  if (inventoryRaw.value) hosts.push(...inventoryHosts(raw, hostsRaw, port, workspace, readFile))
  else if (raw.get('inventory-group').value !== INPUTS['inventory-group'].default)
    raw.fail(
      raw.get('inventory-group'),
      'is set but inventory is empty; expected the inventory file it is a group of'
    )
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

  const privateKey = raw.get('ssh-key').value.replace(/\r\n/g, '\n')
  const passphrase = raw.get('ssh-key-passphrase').value || undefined
  if (deploying && !privateKey)
    raw.fail("input 'ssh-key'", 'is empty; expected the private key text, e.g. ${{ secrets.DEPLOY_KEY }}')
  else if (privateKey) {
    const parsed = ssh2.utils.parseKey(privateKey, passphrase)
    if (parsed instanceof Error) {
      const encrypted = /encrypted|passphrase/i.test(parsed.message)
      raw.fail(
        encrypted ? "input 'ssh-key-passphrase'" : "input 'ssh-key'",
        encrypted
          ? passphrase
            ? 'does not decrypt ssh-key; expected the passphrase of that key'
            : 'is empty but ssh-key is encrypted; expected its passphrase'
          : 'is not a private key; expected the text of an OpenSSH or PEM private key (BEGIN … PRIVATE KEY), not a public key or a file path'
      )
    } else if (!parsed || (Array.isArray(parsed) && parsed.length === 0)) {
      raw.fail("input 'ssh-key'", 'is not a private key')
    } else {
      const key = Array.isArray(parsed) ? parsed[0] : parsed
      if (!key.isPrivateKey()) raw.fail("input 'ssh-key'", 'is a public key; expected the private key')
    }
  }
  const jumpRaw = raw.get('jump-host')
  let jumpHost: SshSettings['jumpHost']
  if (jumpRaw.value) {
    const m = /^([^@\s]+)@(.+)$/.exec(jumpRaw.value)
    const h = m ? parseHost(m[2], 22) : 'expected user@host[:port]'
    if (!m || typeof h === 'string' || !USERNAME.test(m[1]))
      raw.fail(jumpRaw, `"${jumpRaw.value}" is not user@host[:port]`)
    else jumpHost = { user: m[1], host: h.host, port: h.port }
  }
  const knownHosts = text('known-hosts')
  const fingerprints = readPins(raw, hosts, jumpHost, deploying)

  // deploy
  const pathRaw = raw.get('deploy-path')
  const path = pathRaw.value.replace(/\/+$/, '')
  if (deploying && !pathRaw.value && (hosts.length === 0 || hosts.some(h => !h.deployPath)))
    raw.fail(pathRaw, 'is empty; expected an absolute path on the server, e.g. /srv/myapp')
  else if (pathRaw.value) {
    const bad = deployPathProblem(pathRaw.value)
    if (bad) raw.fail(pathRaw, bad)
  }
  refuseSameServer(
    raw,
    hosts,
    h => labels.get(h) ?? h.name ?? h.host,
    path,
    inventoryRaw.value ? inventoryRaw : hostsRaw
  )
  const sharedRaw = raw.get('shared-paths')
  const sharedPaths = splitList(sharedRaw.value).map(p => p.replace(/\/+$/, ''))
  for (const p of sharedPaths) {
    if (isAbsolute(p) || p.split('/').some(s => s === '..' || s === '.' || s === '') || /[\0\n\r]/.test(p)) {
      raw.fail(
        sharedRaw,
        `"${p}" must be a plain path inside the release (like .env or media/uploads), without / at the start or ..`
      )
    } else if (p === '.venv' || p.startsWith('.venv/')) {
      raw.fail(sharedRaw, `"${p}" is the release's virtualenv; it cannot be shared`)
    }
  }
  const reloaders = (['gunicorn-pidfile', 'gunicorn-service', 'reload-command'] as const).filter(
    n => raw.get(n).value
  )
  if (reloaders.length > 1) {
    raw.fail(
      `input '${reloaders[1]}'`,
      `is set together with ${reloaders[0]}; expected one way to reload Gunicorn`
    )
  }
  // Each role's reload-command must be some host's role: a typo would otherwise leave workers on old code.
  const roleReloadCommands = raw.roleReloads?.commands ?? {}
  const held = new Set(hosts.flatMap(h => h.roles ?? ['web']))
  for (const role of Object.keys(roleReloadCommands)) {
    if (held.has(role) || hosts.length === 0) continue
    raw.fail(
      raw.roleReloads!.where,
      `role ${role} is no host's role${didYouMean(role, [...held])}; expected the roles the hosts have (${[...held].join(', ')}), set by roles: in deploy.yml hosts entries or deploy_roles in the inventory`
    )
  }
  const pidRaw = raw.get('gunicorn-pidfile')
  if (pidRaw.value && !pidRaw.value.startsWith('/'))
    raw.fail(pidRaw, `"${pidRaw.value}" is relative; expected an absolute path on the server`)
  const serviceRaw = raw.get('gunicorn-service')
  if (serviceRaw.value && !/^[A-Za-z0-9@._:-]+$/.test(serviceRaw.value))
    raw.fail(serviceRaw, `"${serviceRaw.value}" is not a systemd unit name`)
  const urlOf = (name: InputName): string | undefined => {
    const r = raw.get(name)
    if (!r.value) return undefined
    try {
      const u = new URL(r.value)
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error()
    } catch {
      // A password in it is a secret even when the URL is malformed: the error shows the URL without it.
      raw.fail(
        r,
        `"${withoutCredentials(r.value)}" is not an http(s) URL; expected e.g. http://127.0.0.1:8000/health/`
      )
    }
    return r.value
  }
  const releaseRaw = raw.get('release-name')
  if (releaseRaw.value && !isSafeReleaseName(releaseRaw.value)) {
    raw.fail(
      releaseRaw,
      `"${releaseRaw.value}" is not a safe release name; expected letters, digits, . _ + - (at most 100, no ..)`
    )
  }
  let releaseName = releaseRaw.value || undefined
  if (!releaseName && mode === 'deploy') {
    releaseName = defaultReleaseName(context, now)
    if (!isSafeReleaseName(releaseName)) {
      raw.fail(
        "input 'release-name'",
        `the tag "${releaseName}" is not a safe release name (letters, digits, . _ + -); set release-name explicitly`
      )
    }
  }
  const shellWords = (name: InputName): string[] => {
    const r = raw.get(name)
    try {
      return splitWords(r.value)
    } catch (e) {
      if (!(e instanceof WordsError)) throw e
      raw.fail(
        r,
        `${e.message}; expected words as a shell splits them, e.g. --no-binary "a,b" --find-links wheels`
      )
      return []
    }
  }
  const nginxTest = raw.get('nginx-test-command')
  const nginxReload = raw.get('nginx-reload-command')
  // Given as an input or in the config file (not the default). nginx commands turn nginx on wherever they are
  // given; an explicit `nginx` (input or file) decides, so `nginx: false` wins over both.
  const given = (name: InputName): boolean => sources.input(name).trim() !== '' || raw.get(name).fromFile
  const nginx = given('nginx') ? bool('nginx') : given('nginx-test-command') || given('nginx-reload-command')
  const commentKeyRaw = raw.get('comment-key')
  if (commentKeyRaw.value && !/^[A-Za-z0-9._-]{1,64}$/.test(commentKeyRaw.value)) {
    raw.fail(
      commentKeyRaw,
      `"${commentKeyRaw.value}" cannot be used; expected 1–64 letters, digits, . _ - (e.g. \${{ matrix.python }}-\${{ matrix.django }})`
    )
  }

  const settings: Settings = {
    mode,
    requestedMode,
    workingDirectory,
    python: raw.get('python').value,
    checks,
    testCommand: text('test-command'),
    checkTimeout: int('check-timeout', 1, 'seconds'),
    ssh: {
      hosts,
      user: userRaw.value,
      privateKey,
      passphrase,
      knownHosts,
      fingerprints,
      jumpHost,
      connectTimeout: 20,
      commandTimeout: int('command-timeout', 1, 'seconds')
    },
    deploy: {
      path,
      sharedPaths,
      remotePython: raw.get('remote-python').value,
      venvOptions: shellWords('venv-options'),
      pipArgs: shellWords('pip-args'),
      ...migrateMode(),
      maxParallel: int('max-parallel', 1, 'hosts'),
      rolling: rollingOf(),
      collectstatic: bool('collectstatic'),
      gunicornPidfile: text('gunicorn-pidfile'),
      gunicornService: text('gunicorn-service'),
      reloadCommand: text('reload-command'),
      roleReloadCommands,
      nginx,
      nginxTestCommand: nginxTest.value,
      nginxReloadCommand: nginxReload.value,
      healthCheckUrl: urlOf('health-check-url'),
      healthCheckTimeout: int('health-check-timeout', 1, 'seconds'),
      deployCheck: oneOf('deploy-check', DEPLOY_CHECK_MODES),
      keepReleases: int('keep-releases', 1, 'a count'),
      releaseName,
      lockTimeout: int('lock-timeout', 0, 'seconds'),
      dryRun: bool('dry-run')
    },
    github: {
      token: text('github-token'),
      environment: raw.get('environment').value,
      environmentUrl: urlOf('environment-url'),
      deployment: bool('github-deployment'),
      comment: oneOf('comment', COMMENT_MODES),
      commentKey: commentKeyRaw.value || undefined
    },
    context,
    configFile: raw.configFile
  }
  if (raw.problems.length) throw new SettingsError(raw.problems)
  return settings
}

/**
 * Two hosts entries that are one server and one deploy-path would run every step twice on the same directory at
 * once (two uploads, two switches racing): refused, naming both. "One server" is the same address and port after
 * normalising how the address is written (case, a trailing dot, IPv4 and IPv6 notation); names are never resolved
 * through DNS, so web1.example.com and its IP address count as two hosts. The SSH user does not tell hosts apart.
 */
function refuseSameServer(
  raw: RawValues,
  hosts: Host[],
  label: (h: Host) => string,
  path: string,
  where: Raw
): void {
  const seen = new Map<string, Host>()
  for (const h of hosts) {
    const key = `${normalAddress(h.host)} ${h.port} ${h.deployPath ?? path}`
    const first = seen.get(key)
    if (!first) {
      seen.set(key, h)
      continue
    }
    raw.fail(
      where,
      `${label(first)} and ${label(h)} are the same server (address ${normalAddress(h.host)}, port ${h.port}, deploy-path ${h.deployPath ?? path}); expected each server once, or a deploy-path of its own for each`
    )
  }
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

/**
 * Host key pins, bound to hosts: known-hosts is checked line by line as OpenSSH would read it, a bare
 * `host-fingerprint` binds to the only host (never to the jump host), pairs must name a host or the jump host,
 * and when deploying every host and the jump host must have a pin.
 */
function readPins(
  raw: RawValues,
  hosts: Host[],
  jump: Host | undefined,
  deploying: boolean
): FingerprintPin[] {
  const before = raw.problems.length
  const khRaw = raw.get('known-hosts')
  let knownHosts: ReturnType<typeof parseKnownHosts> = []
  try {
    knownHosts = parseKnownHosts(khRaw.value)
  } catch (e) {
    if (!(e instanceof KnownHostsError)) throw e
    raw.fail(khRaw, `${e.message}. Nothing was connected to`)
    return []
  }
  const fpRaw = raw.get('host-fingerprint')
  const pins: FingerprintPin[] = []
  const targets = jump ? [...hosts, jump] : hosts
  const label = (h: Host): string => knownHostsName(h.host, h.port).replace(/^\[(.*)\]:(\d+)$/, '$1:$2')
  for (const [where, text] of [[fpRaw, fpRaw.value] as const, ...raw.hostPins]) {
    const { bare, bound, problems } = parseFingerprintPins(text)
    problems.forEach(p => raw.fail(where, p))
    for (const pin of bound) {
      // A config file's hosts entry carries its own pin: when the hosts input replaces the file's hosts, the
      // pins of hosts no longer deployed to are simply unused; a host-fingerprint pair for no host is a typo.
      if (!targets.some(h => pinMatches(pin, h.host, h.port))) {
        if (where !== fpRaw) continue
        const name = pin.port === undefined ? pin.host : `${pin.host}:${pin.port}`
        raw.fail(
          where,
          `${name}=${pin.fingerprint} names a host that is neither in hosts nor the jump-host; expected one of ${targets.map(label).join(', ') || '(no hosts given)'}`
        )
      } else pins.push(pin)
    }
    if (bare.length && hosts.length > 1) {
      raw.fail(
        where,
        `${bare[0]} is not bound to a host, and there are ${hosts.length} hosts; a bare fingerprint is accepted only with one host. Expected host=SHA256:… pairs, e.g. ${label(hosts[0])}=${bare[0]}`
      )
    } else if (bare.length && hosts.length === 1) {
      pins.push(
        ...bare.map(fingerprint => ({ host: hosts[0].host.toLowerCase(), port: hosts[0].port, fingerprint }))
      )
    }
  }
  // With no valid host, the hosts error says what is wrong; pins cannot be checked against nothing.
  if (!deploying || raw.problems.length > before || hosts.length === 0) return pins
  if (!khRaw.value && !fpRaw.value && raw.hostPins.length === 0) {
    raw.fail(
      "input 'known-hosts'",
      "and host-fingerprint are both empty; the server's host key must be pinned (no trust on first use). Expected known_hosts lines (ssh-keyscan -p PORT HOST, checked by hand) or SHA256:… fingerprints"
    )
    return pins
  }
  for (const h of targets) {
    if (hasPin({ knownHosts, fingerprints: pins }, h.host, h.port)) continue
    raw.fail(
      fpRaw,
      `nothing pins the host key of ${h === jump ? 'the jump host ' : ''}${label(h)}: known-hosts has no entry for ${knownHostsName(h.host, h.port)} and host-fingerprint no ${label(h)}=SHA256:… pair; expected one of them (no trust on first use)`
    )
  }
  return pins
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
  const full = resolve(workspace, file)
  // The file's lines can appear in errors: only a file of the repository, never one elsewhere on the runner. A
  // symlink is judged by where it leads (deploy/inventory.ini -> /etc/shadow is outside).
  if (outside(relative(realOrSelf(workspace), realOrSelf(full)))) {
    raw.fail(
      invRaw,
      `"${file}" ${outside(relative(workspace, full)) ? 'is' : 'is a symlink that leads'} outside the repository; expected a path inside it, e.g. deploy/inventory.ini`
    )
    return []
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
    return []
  }
  let inv
  try {
    inv = parseInventory(text, file)
  } catch (e) {
    if (!(e instanceof InventoryError)) throw e
    raw.fail(invRaw, `"${file}" is not an inventory Ansible reads: ${e.message}`)
    return []
  }
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
  const hosts: Host[] = []
  for (const { name, vars } of found) {
    const bad = (message: string): void =>
      raw.fail(invRaw, `host ${name} of group ${group} in ${file}: ${message}`)
    const address = vars.ansible_host ?? name
    const port = vars.ansible_port ?? defaultPort
    const user = vars.ansible_user
    if (
      typeof address !== 'string' ||
      !(HOSTNAME.test(address) || (address.split(':').length > 2 && IPV6.test(address)))
    ) {
      bad(
        `ansible_host "${String(address)}" is not a host name or address; expected e.g. web1.example.com or 10.0.0.5`
      )
      continue
    }
    const p = parsePort(String(port))
    if (typeof p === 'string') {
      bad(`ansible_port: ${p}`)
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
      port: p,
      ...(user ? { user } : {}),
      ...(address !== name ? { name } : {}),
      ...(roles ? { roles } : {})
    })
  }
  return hosts
}
