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
  outcome: 'ok' | 'failed' | 'skipped'
  durationMs: number
  /** Exit code and last lines of output for a failed step. */
  detail?: string
}

export interface DeployResult {
  release: string
  previousRelease?: string
  /** The new release is live and healthy on every host. */
  deployed: boolean
  /** A failure after the switch put the previous release back. */
  rolledBack: boolean
  dryRun: boolean
  steps: StepResult[]
  /** What the servers warned about (`host: message`), e.g. Django's `check --deploy` with their settings. */
  warnings?: string[]
  /** Each host: the release it served before, the one it serves after (when known), bytes of release sent. */
  hosts?: Array<{ host: string; previous?: string; live?: string; bytesSent?: number }>
  /** The commands each host would run (dry run), host → lines. */
  plan?: Record<string, string[]>
  /** One-line reason the deploy failed: step, host, exit code, hint. */
  error?: string
}

export interface Report {
  mode: Mode
  /** Empty when no checks were selected. */
  checks: CheckResult[]
  deploy?: DeployResult
  /** Set when the run failed before or outside checks and deploy steps (bad input, connection…). */
  error?: string
  /** Findings not annotated because of GitHub's annotation limits (the summary still lists them). */
  annotationsOmitted?: number
}

export function checksOutcome(report: Report): 'passed' | 'failed' | 'skipped' {
  if (report.checks.length === 0) return 'skipped'
  return report.checks.every(c => c.outcome === 'passed') ? 'passed' : 'failed'
}
