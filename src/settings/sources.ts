/**
 * Sources and defaults: every input described once (kind, default, bounds, secret), the config file (deploy.yml)
 * read into raw values, and the readers of the simple kinds. Which value wins: the input if given, else the config
 * file, else the default.
 */
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { withoutCredentials } from '../github/redact.js'
import { splitWords, WordsError } from '../shellwords.js'
import { hostEntries, roleCommands, type HostEntry } from './hosts.js'

/** How setup gets the site's certificate (settings/setup.ts). */
export const TLS_MODES = ['acme', 'files', 'off'] as const
export const LETS_ENCRYPT = 'https://acme-v02.api.letsencrypt.org/directory'

export const DEPLOY_CHECK_MODES = ['warn', 'fail', 'off'] as const
/** When the PR comment is posted: on every run, only when the run failed (then kept up to date), or never. */
export const COMMENT_MODES = ['always', 'on-failure', 'never'] as const
/** What a contract migration (it breaks the release still serving) does to a deploy. */
export const MIGRATION_SAFETY_MODES = ['refuse', 'warn', 'off'] as const

/**
 * How an input is read. The simple kinds are read by `RawValues` from this description alone; `code` inputs are
 * read by their section's own code (their format or their rules are more than a kind).
 */
export type InputSpec =
  | { kind: 'text'; default: string; secret?: boolean }
  | { kind: 'bool'; default: string }
  | { kind: 'int'; default: string; min: number; unit: string }
  | { kind: 'choice'; default: string; choices: readonly string[] }
  /** Words as a shell splits them. */
  | { kind: 'words'; default: string }
  /** An http(s) URL. */
  | { kind: 'url'; default: string }
  | { kind: 'code'; default: string; secret?: boolean }

/**
 * Every input of the action with its default. action.yml declares no `default:` for the ones a config file may
 * set, because GitHub passes a declared default as if the user had typed it, and inputs override the file.
 * `secret` inputs are never accepted from the config file (it is committed) and never echoed in errors.
 */
export const INPUTS = {
  mode: { kind: 'code', default: 'auto' },
  'working-directory': { kind: 'code', default: '.' },
  python: { kind: 'text', default: 'python3' },
  checks: { kind: 'code', default: 'check, migrations, test' },
  'test-command': { kind: 'text', default: '' },
  'check-timeout': { kind: 'int', default: '1800', min: 1, unit: 'seconds' },
  hosts: { kind: 'code', default: '' },
  inventory: { kind: 'code', default: '' },
  'inventory-group': { kind: 'code', default: 'all' },
  user: { kind: 'code', default: '' },
  port: { kind: 'code', default: '22' },
  'ssh-key': { kind: 'code', default: '', secret: true },
  'ssh-key-passphrase': { kind: 'code', default: '', secret: true },
  'known-hosts': { kind: 'code', default: '' },
  'host-fingerprint': { kind: 'code', default: '' },
  'jump-host': { kind: 'code', default: '' },
  'deploy-path': { kind: 'code', default: '' },
  'shared-paths': { kind: 'code', default: '.env, media' },
  'remote-python': { kind: 'text', default: 'python3' },
  'venv-options': { kind: 'words', default: '' },
  'pip-args': { kind: 'words', default: '' },
  migrate: { kind: 'code', default: 'true' },
  'migrate-lock-timeout': { kind: 'int', default: '5', min: 0, unit: 'seconds' },
  'migrate-statement-timeout': { kind: 'code', default: '' },
  'after-deploy-migrations': { kind: 'code', default: '' },
  // The default depends on the hosts (settings/migrations.ts): refuse on a fleet or rolling, warn on one host.
  'migration-safety': { kind: 'choice', default: 'warn', choices: MIGRATION_SAFETY_MODES },
  'allow-contract-rollback': { kind: 'bool', default: 'false' },
  'max-parallel': { kind: 'int', default: '10', min: 1, unit: 'hosts' },
  rolling: { kind: 'code', default: '' },
  collectstatic: { kind: 'bool', default: 'true' },
  'gunicorn-pidfile': { kind: 'code', default: '' },
  'gunicorn-service': { kind: 'code', default: '' },
  'reload-command': { kind: 'code', default: '' },
  nginx: { kind: 'code', default: 'false' },
  'nginx-test-command': { kind: 'text', default: 'sudo -n nginx -t' },
  'nginx-reload-command': { kind: 'text', default: 'sudo -n nginx -s reload' },
  'health-check-url': { kind: 'url', default: '' },
  'health-check-timeout': { kind: 'int', default: '30', min: 1, unit: 'seconds' },
  'deploy-check': { kind: 'choice', default: 'warn', choices: DEPLOY_CHECK_MODES },
  'keep-releases': { kind: 'int', default: '5', min: 1, unit: 'a count' },
  'release-name': { kind: 'code', default: '' },
  'lock-timeout': { kind: 'int', default: '300', min: 0, unit: 'seconds' },
  'command-timeout': { kind: 'int', default: '900', min: 1, unit: 'seconds' },
  config: { kind: 'code', default: '' },
  'dry-run': { kind: 'bool', default: 'false' },
  'github-token': { kind: 'text', default: '', secret: true },
  environment: { kind: 'text', default: 'production' },
  'environment-url': { kind: 'url', default: '' },
  'github-deployment': { kind: 'bool', default: 'true' },
  comment: { kind: 'choice', default: 'always', choices: COMMENT_MODES },
  'comment-key': { kind: 'code', default: '' },
  // mode: setup (settings/setup.ts)
  'setup-user': { kind: 'code', default: 'root' },
  'setup-ssh-key': { kind: 'code', default: '', secret: true },
  app: { kind: 'code', default: '' },
  'env-file': { kind: 'code', default: '', secret: true },
  domains: { kind: 'code', default: '' },
  tls: { kind: 'choice', default: 'acme', choices: TLS_MODES },
  'acme-directory': { kind: 'url', default: LETS_ENCRYPT },
  'acme-email': { kind: 'code', default: '' },
  'acme-ca-certificate': { kind: 'code', default: '' },
  'tls-certificate': { kind: 'code', default: '', secret: true },
  'tls-key': { kind: 'code', default: '', secret: true },
  'trusted-proxies': { kind: 'code', default: '' },
  'setup-overwrite': { kind: 'bool', default: 'false' },
  'wsgi-module': { kind: 'code', default: '' },
  'max-body-size': { kind: 'code', default: '20m' }
} as const satisfies Record<string, InputSpec>

export type InputName = keyof typeof INPUTS
type Inputs = typeof INPUTS
/** The inputs of one kind, so a reader takes only names it can read. */
type NamesOf<K extends InputSpec['kind']> = {
  [N in InputName]: Inputs[N]['kind'] extends K ? N : never
}[InputName]
type ChoiceOf<N extends NamesOf<'choice'>> = Inputs[N] extends { choices: readonly (infer C)[] } ? C : never

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

export type Raw = { value: string; where: string; fromFile: boolean }

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

function lineOf(text: string, offset: number): number {
  return text.slice(0, offset).split('\n').length
}

const TRUE = ['true', 'yes', 'on', '1']
const FALSE = ['false', 'no', 'off', '0']

/** Collects the raw values (input if given, else config file, else default) and the problems found. */
export class RawValues {
  readonly problems: SettingsProblem[] = []
  private file = new Map<string, { value: string; line?: number }>()
  /** The config file's `hosts` entries, typed (each with its own port, user, deploy-path, roles, pins). */
  fileHosts?: { entries: HostEntry[]; where: string }
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
      this.fail("input 'config'", `cannot read "${given}"; expected a YAML file in the repository`)
      return
    }
    this.configFile = given || 'deploy.yml'
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
    if (doc.errors.length) {
      const e = doc.errors[0]
      const line = e.linePos?.[0]?.line
      this.fail(
        `${this.configFile}${line ? ` line ${line}` : ''}`,
        `invalid YAML: ${e.message.split('\n')[0]}`
      )
      return
    }
    const root = doc.contents
    if (root === null || root === undefined) return
    if (!('items' in root) || !Array.isArray(root.items) || root.constructor.name !== 'YAMLMap') {
      this.fail(this.configFile, 'expected a mapping of input names to values')
      return
    }
    for (const pair of root.items as { key: { value?: unknown; range?: number[] }; value: unknown }[]) {
      const key = String(pair.key?.value ?? pair.key)
      const line = pair.key?.range ? lineOf(text, pair.key.range[0]) : undefined
      const where = `${this.configFile}: key '${key}'${line ? ` (line ${line})` : ''}`
      const value = this.fileValue(key, where, (pair.value as { toJSON?: () => unknown })?.toJSON?.() ?? null)
      if (value !== undefined) this.file.set(key, { value, line })
    }
  }

  /** One key of the config file as its raw text, or undefined (a problem recorded) when it cannot be taken. */
  private fileValue(key: string, where: string, json: unknown): string | undefined {
    const names = Object.keys(INPUTS)
    if (!names.includes(key)) {
      this.fail(where, `unknown key${didYouMean(key, names)}; expected one of the action's inputs`)
      return undefined
    }
    const spec: InputSpec = INPUTS[key as InputName]
    if (key === 'config') return this.fail(where, 'the config file cannot name another config file')
    if ('secret' in spec && spec.secret)
      return this.fail(
        where,
        'secrets do not belong in a committed file; pass it as an input from `secrets.*`'
      )
    if (key === 'hosts' && Array.isArray(json)) {
      const entries = hostEntries(json)
      if (typeof entries === 'string') return this.fail(where, entries)
      this.fileHosts = { entries, where }
      // The hosts as written, for "given or not" and the messages that name the source; never parsed again.
      return entries.map(e => e.label).join('\n')
    }
    if (key === 'reload-command' && typeof json === 'object' && json !== null && !Array.isArray(json)) {
      const byRole = roleCommands(json as Record<string, unknown>)
      if (typeof byRole === 'string') return this.fail(where, byRole)
      const { web, ...others } = byRole
      this.roleReloads = { commands: others, where }
      return web ?? ''
    }
    if (Array.isArray(json)) return json.map(String).join('\n')
    if (json === null) return ''
    if (typeof json === 'object') return this.fail(where, 'expected a single value or a list, not a mapping')
    return String(json)
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

  /** Given as an input or in the config file (not the default). */
  given(name: InputName): boolean {
    return this.sources.input(name).trim() !== '' || this.get(name).fromFile
  }

  fail(raw: Raw | string, message: string): undefined {
    this.problems.push({ where: typeof raw === 'string' ? raw : raw.where, message })
    return undefined
  }

  /** The value, or undefined when empty. */
  text(name: NamesOf<'text' | 'code'>): string | undefined {
    return this.get(name).value || undefined
  }

  bool(name: NamesOf<'bool' | 'code'>): boolean {
    const r = this.get(name)
    const v = r.value.toLowerCase()
    if (TRUE.includes(v)) return true
    if (FALSE.includes(v)) return false
    this.fail(r, `"${r.value}" is not a boolean; expected true or false`)
    return false
  }

  /** A boolean word (true, yes, on, 1, false, …). */
  static isBool(value: string): boolean {
    return TRUE.includes(value) || FALSE.includes(value)
  }

  int(name: NamesOf<'int'>): number {
    const r = this.get(name)
    const { min, unit } = INPUTS[name]
    if (!/^-?\d+$/.test(r.value)) {
      this.fail(r, `"${r.value}" is not a whole number; expected ${unit} ≥ ${min}`)
      return Number(INPUTS[name].default)
    }
    const n = Number(r.value)
    if (n < min) this.fail(r, `${n} is ${n < 0 ? 'negative' : 'too small'}; expected ${unit} ≥ ${min}`)
    return n
  }

  choice<N extends NamesOf<'choice'>>(name: N): ChoiceOf<N> {
    const r = this.get(name)
    const choices: readonly string[] = INPUTS[name].choices
    const v = r.value.toLowerCase()
    if (choices.includes(v)) return v as ChoiceOf<N>
    this.fail(
      r,
      `"${r.value}" is not a valid value${didYouMean(v, choices)}; expected one of ${choices.join(', ')}`
    )
    return INPUTS[name].default as ChoiceOf<N>
  }

  words(name: NamesOf<'words'>): string[] {
    const r = this.get(name)
    try {
      return splitWords(r.value)
    } catch (e) {
      if (!(e instanceof WordsError)) throw e
      this.fail(
        r,
        `${e.message}; expected words as a shell splits them, e.g. --no-binary "a,b" --find-links wheels`
      )
      return []
    }
  }

  url(name: NamesOf<'url'>): string | undefined {
    const r = this.get(name)
    if (!r.value) return undefined
    try {
      const u = new URL(r.value)
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error()
    } catch {
      // A password in it is a secret even when the URL is malformed: the error shows the URL without it.
      this.fail(
        r,
        `"${withoutCredentials(r.value)}" is not an http(s) URL; expected e.g. http://127.0.0.1:8000/health/`
      )
    }
    return r.value
  }
}
