/**
 * Deploy: where releases go on the server and what a deploy runs there (virtualenv, migrations, static files,
 * the reload, nginx, the health check), and the release's name.
 */
import { isAbsolute } from 'node:path'
import { defaultReleaseName, type Mode, type RunContext } from './context.js'
import { deployPathProblem } from './hosts.js'
import type { MigrationSettings } from './migrations.js'
import { RawValues, splitList, type DEPLOY_CHECK_MODES } from './sources.js'

export type DeployCheck = (typeof DEPLOY_CHECK_MODES)[number]

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
  /** How migrate runs, which migrations wait for the switch, what a contract migration does (migrations.ts). */
  migrations: MigrationSettings
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

const SAFE_RELEASE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$/

/** A release name the remote side can trust: refused, never rewritten, when it has anything else. */
export function isSafeReleaseName(name: string): boolean {
  return SAFE_RELEASE.test(name) && name !== '.' && name !== '..' && !name.includes('..')
}

/** The `deploy-path` input, checked when given; whether it must be given depends on the hosts (the composer). */
export function readDeployPath(raw: RawValues): string {
  const pathRaw = raw.get('deploy-path')
  if (pathRaw.value) {
    const bad = deployPathProblem(pathRaw.value)
    if (bad) raw.fail(pathRaw, bad)
  }
  return pathRaw.value.replace(/\/+$/, '')
}

/** Everything of the deploy section but the path, the roles' reload commands and the migrations (the composer's). */
export function readDeploy(
  raw: RawValues,
  mode: Mode,
  context: RunContext,
  now: Date
): Omit<DeploySettings, 'path' | 'roleReloadCommands' | 'migrations'> {
  const sharedPaths = readSharedPaths(raw)
  const reloaders = (['gunicorn-pidfile', 'gunicorn-service', 'reload-command'] as const).filter(
    n => raw.get(n).value
  )
  if (reloaders.length > 1) {
    raw.fail(
      `input '${reloaders[1]}'`,
      `is set together with ${reloaders[0]}; expected one way to reload Gunicorn`
    )
  }
  const pidRaw = raw.get('gunicorn-pidfile')
  if (pidRaw.value && !pidRaw.value.startsWith('/'))
    raw.fail(pidRaw, `"${pidRaw.value}" is relative; expected an absolute path on the server`)
  const serviceRaw = raw.get('gunicorn-service')
  if (serviceRaw.value && !/^[A-Za-z0-9@._:-]+$/.test(serviceRaw.value))
    raw.fail(serviceRaw, `"${serviceRaw.value}" is not a systemd unit name`)
  const healthCheckUrl = raw.url('health-check-url')
  const releaseName = readReleaseName(raw, mode, context, now)
  // nginx commands turn nginx on wherever they are given (input or config file, not the default); an explicit
  // `nginx` decides, so `nginx: false` wins over both.
  const nginx = raw.given('nginx')
    ? raw.bool('nginx')
    : raw.given('nginx-test-command') || raw.given('nginx-reload-command')
  return {
    sharedPaths,
    remotePython: raw.get('remote-python').value,
    venvOptions: raw.words('venv-options'),
    pipArgs: raw.words('pip-args'),
    ...migrateMode(raw),
    maxParallel: raw.int('max-parallel'),
    rolling: readRolling(raw),
    collectstatic: raw.bool('collectstatic'),
    gunicornPidfile: raw.text('gunicorn-pidfile'),
    gunicornService: raw.text('gunicorn-service'),
    reloadCommand: raw.text('reload-command'),
    nginx,
    nginxTestCommand: raw.get('nginx-test-command').value,
    nginxReloadCommand: raw.get('nginx-reload-command').value,
    healthCheckUrl,
    healthCheckTimeout: raw.int('health-check-timeout'),
    deployCheck: raw.choice('deploy-check'),
    keepReleases: raw.int('keep-releases'),
    releaseName,
    lockTimeout: raw.int('lock-timeout'),
    dryRun: raw.bool('dry-run')
  }
}

function readSharedPaths(raw: RawValues): string[] {
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
  return sharedPaths
}

function readReleaseName(raw: RawValues, mode: Mode, context: RunContext, now: Date): string | undefined {
  const releaseRaw = raw.get('release-name')
  if (releaseRaw.value && !isSafeReleaseName(releaseRaw.value)) {
    raw.fail(
      releaseRaw,
      `"${releaseRaw.value}" is not a safe release name; expected letters, digits, . _ + - (at most 100, no ..)`
    )
  }
  if (releaseRaw.value || mode !== 'deploy') return releaseRaw.value || undefined
  const releaseName = defaultReleaseName(context, now)
  if (!isSafeReleaseName(releaseName)) {
    raw.fail(
      "input 'release-name'",
      `the tag "${releaseName}" is not a safe release name (letters, digits, . _ + -); set release-name explicitly`
    )
  }
  return releaseName
}

function migrateMode(raw: RawValues): { migrate: boolean; migrateEveryHost: boolean } {
  const r = raw.get('migrate')
  const v = r.value.toLowerCase()
  if (v === 'every-host') return { migrate: true, migrateEveryHost: true }
  if (RawValues.isBool(v)) return { migrate: raw.bool('migrate'), migrateEveryHost: false }
  raw.fail(
    r,
    `"${r.value}" is not a migrate mode; expected true (once, on the primary host), every-host (each host has its own database) or false`
  )
  return { migrate: false, migrateEveryHost: false }
}

function readRolling(raw: RawValues): DeploySettings['rolling'] {
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
