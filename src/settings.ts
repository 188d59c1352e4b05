/**
 * Settings: every input and the optional config file, validated once into one typed value.
 * Nothing below this module reads `core.getInput` or `process.env`.
 */

export type Mode = 'check' | 'deploy' | 'rollback'
export type RequestedMode = 'auto' | Mode
export const CHECK_NAMES = ['check', 'deploy', 'migrations', 'test'] as const
export type CheckName = (typeof CHECK_NAMES)[number]

export interface Host {
  /** Host name or address as given. */
  host: string
  /** SSH port (the `port` input unless the host entry has its own `:port`). */
  port: number
}

export interface SshSettings {
  hosts: Host[]
  user: string
  /** PEM/OpenSSH private key text; kept in memory only. */
  privateKey: string
  passphrase?: string
  /** known_hosts lines (OpenSSH format) that pin host keys. */
  knownHosts?: string
  /** `SHA256:…` fingerprint(s) that pin host keys. */
  fingerprints: string[]
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
  collectstatic: boolean
  gunicornPidfile?: string
  gunicornService?: string
  reloadCommand?: string
  nginx: boolean
  nginxTestCommand: string
  nginxReloadCommand: string
  healthCheckUrl?: string
  /** Seconds. */
  healthCheckTimeout: number
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
  /** Pull request number for pull_request(_target) events. */
  prNumber?: number
  /** Link to this workflow run, for reports. */
  runUrl?: string
}

export interface GithubSettings {
  token?: string
  environment: string
  environmentUrl?: string
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
  ssh: SshSettings
  deploy: DeploySettings
  github: GithubSettings
  context: RunContext
  /** Where the config file was read from, if any. */
  configFile?: string
}
