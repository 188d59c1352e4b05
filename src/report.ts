/**
 * The one report value: everything that happened in a run. The GitHub edge (summary, outputs, PR comment,
 * deployment statuses) renders it; nothing else decides what users see.
 */
import type { CheckName, Mode } from './settings.js'

export interface Finding {
  level: 'error' | 'warning' | 'notice'
  message: string
  /** Short heading, e.g. `security.W018` or `test_home (app.tests.HomeTests)`. */
  title?: string
  /** Path relative to the repository root, when known. */
  file?: string
  line?: number
}

export interface CheckResult {
  name: CheckName
  /** The command line that ran, for the summary. */
  command: string
  outcome: 'passed' | 'failed'
  durationMs: number
  findings: Finding[]
  /** Last lines of output, for the summary when the check failed. */
  tail: string
}

export interface StepResult {
  host: string
  step: string
  outcome: 'ok' | 'failed'
  durationMs: number
  /** Exit code and last lines of output for a failed step. */
  detail?: string
}

export interface DeployResult {
  release: string
  /** The release every host served before (unset when the hosts served different ones: see `hosts`). */
  previousRelease?: string
  /** The new release is live and healthy on every host. */
  deployed: boolean
  /** A failure after the switch put the previous release back. */
  rolledBack: boolean
  dryRun: boolean
  steps: StepResult[]
  /** What the servers warned about (`host: message`), e.g. Django's `check --deploy` with their settings. */
  warnings?: string[]
  /** The migrations the deploy's migrate planned, announced on the server before it applied them. */
  migrations?: MigrationRun[]
  /** Each host: the release it served before, the one it serves after (when known), bytes of release sent. */
  hosts?: Array<{ host: string; previous?: string; live?: string; bytesSent?: number }>
  /** The phases the deploy would run (dry run): per batch, per host, each step and its command. */
  plan?: PlannedPhase[]
  /** One-line reason the deploy failed: step, host, exit code, hint. */
  error?: string
}

/**
 * A migration as a host's migrate announced it, before applying it (remote/python/migrate.py), or, before a
 * rollback, one applied to the database that the target release does not have (rollback_schema.py).
 */
export interface MigrationRun {
  host: string
  app: string
  name: string
  /** Before the switch, or in the after-deploy phase. */
  when: 'before-switch' | 'after-deploy' | 'not-in-target'
  /** The classifier's verdict on the migration (expand, contract, review), when it ran. */
  class?: MigrationClass
  /** Each operation as Django describes it (with its class when not expand). */
  operations: string[]
}

/** A phase of the flow as the dry run shows it (deploy/flow.ts). */
export interface PlannedPhase {
  phase: string
  /** What a failure in the phase does: stop the deploy, revert what it switched, or warn and go on. */
  onFailure: 'stop' | 'revert' | 'warn'
  batches: Array<Array<{ host: string; steps: string[] }>>
}

/** Each host's steps in the order the flow runs them (the plan per host, for the summary). */
export function planByHost(plan: PlannedPhase[]): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const p of plan) for (const b of p.batches) for (const h of b) (out[h.host] ??= []).push(...h.steps)
  return out
}

/**
 * What the hosts served before, as users see it (the `previous-release` output, the summary): the one release,
 * or one `host=release` line per host when the hosts served different ones.
 */
export function previousReleases(d: DeployResult): string | undefined {
  const hosts = d.hosts ?? []
  if (new Set(hosts.map(h => h.previous ?? '')).size > 1)
    return hosts.map(h => `${h.host}=${h.previous ?? ''}`).join('\n')
  return d.previousRelease
}

/** How a migration operation meets the release that keeps serving while it runs (src/remote/python/migrations.py). */
export type MigrationClass = 'expand' | 'contract' | 'review'

export interface MigrationOperation {
  /** The operation's class name, e.g. `RemoveField`. */
  op: string
  /** Django's description, e.g. `Remove field legacy from item`. */
  describe: string
  class: MigrationClass
  /** One line: why, and the expand/contract way to do it. */
  hint?: string
  /** Its line in the migration file, when the file lists the operations literally. */
  line?: number
}

export interface ClassifiedMigration {
  app: string
  name: string
  /** The migration file, relative to the repository root. */
  file?: string
  /** Marked to run after the release switch (django-safemigrate's `Safe.after_deploy()`). */
  afterDeploy: boolean
  /** The worst class of its operations. */
  class: MigrationClass
  operations: MigrationOperation[]
  /** `sqlmigrate`'s SQL for the project's database backend, or why there is none. */
  sql?: string
  sqlError?: string
}

/** The migrations a pull request adds or changes, classified (check mode). */
export interface MigrationsReport {
  /** The commit they are new against. */
  base: string
  migrations: ClassifiedMigration[]
  /** One line when the analysis could not run (or not fully): what is missing. */
  note?: string
}

/** One item of a host's setup (setup/plan.ts): a package set, the user, a managed file, the certificate. */
export interface SetupItemResult {
  item: string
  status: 'created' | 'changed' | 'unchanged' | 'refused'
  why?: string
  /** The unified diff of a file that differs (none for a secret). */
  diff?: string
}

export interface SetupHostResult {
  host: string
  /** `debian 12`, as /etc/os-release says. */
  os?: string
  items: SetupItemResult[]
  /** Why setup stopped on this host (refused before any change, or the step that failed). */
  error?: string
  /** Whether anything was changed on the host (false: refused, dry run, or nothing differed). */
  changed: boolean
}

/** What `mode: setup` did (or, in a dry run, would do) on each host. */
export interface SetupResult {
  app: string
  dryRun: boolean
  hosts: SetupHostResult[]
  steps: StepResult[]
  siteUrl?: string
  /** The steps each host would run (dry run). */
  plan?: PlannedPhase[]
  error?: string
}

export interface Report {
  mode: Mode
  /** Empty when no checks were selected. */
  checks: CheckResult[]
  /** Pull requests: the migrations they add or change (unset on a push, or without a base commit). */
  migrations?: MigrationsReport
  deploy?: DeployResult
  setup?: SetupResult
  /** Set when the run failed before or outside checks and deploy steps (bad input, connection…). */
  error?: string
  /** Findings not annotated because of GitHub's annotation limits (the summary still lists them). */
  annotationsOmitted?: number
}

export function checksOutcome(report: Report): 'passed' | 'failed' | 'skipped' {
  if (report.checks.length === 0) return 'skipped'
  return report.checks.every(c => c.outcome === 'passed') ? 'passed' : 'failed'
}
