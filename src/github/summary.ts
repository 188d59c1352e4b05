/**
 * The job summary / PR comment body, rendered from the one `Report` value. `renderSummary` is pure so the
 * same text can go to the job summary and to the PR comment, and be tested without a runner.
 */
import * as core from '@actions/core'
import { appendFileSync, statSync, truncateSync } from 'node:fs'
import { EOL } from 'node:os'
import {
  checksOutcome,
  planByHost,
  previousReleases,
  type CheckResult,
  type DeployResult,
  type Finding,
  type Report
} from '../report.js'
import { ANNOTATION_LIMITS_TEXT } from './annotate.js'
import { clip, code, codeBlock, details, fitting, html, multiline, tailOf } from './markdown.js'
import { renderDeployMigrations, renderMigrations } from './migrations.js'
import { renderSetup } from './setup-summary.js'

export interface SummaryContext {
  /** Link to the workflow run, shown at the end (useful in the PR comment, which lives outside the run). */
  runUrl?: string
  /** How many findings to list before saying how many more there are. Default 50. */
  maxFindings?: number
}

export type OverallResult =
  'passed' | 'failed' | 'skipped' | 'deployed' | 'dry run' | 'rolled back' | 'not run' | 'set up'

// Budgets in rendered characters (escaping can grow text several times) keep the whole body under GitHub's
// 65,536-character limit for a comment, whatever the tools printed: about 56,000 at worst.
const DEFAULT_MAX_FINDINGS = 50
const FINDINGS_CHARS = 20_000
const STEPS_CHARS = 8_000
const PLAN_CHARS = 10_000
const MAX_ERROR = 500
const MAX_MESSAGE = 300
const MAX_TITLE = 100
const MAX_NAME = 200
const MAX_LINE = 300
const TAIL_LINES = 30
const TAIL_CHARS = 1_500
const MAX_STEP_DETAILS = 3
const PLAN_LINES_PER_HOST = 150

const LEVEL_ORDER: Record<Finding['level'], number> = { error: 0, warning: 1, notice: 2 }
const LEVEL_ICON: Record<Finding['level'], string> = { error: '❌', warning: '⚠️', notice: 'ℹ️' }
const STEP_ICON = { ok: '✅', failed: '❌' } as const

/** One word for the whole run, as the heading shows it. */
export function overallResult(report: Report): OverallResult {
  const checks = checksOutcome(report)
  if (report.mode === 'check') return report.error ? 'failed' : checks
  if (report.mode === 'setup') {
    if (report.error || report.setup?.error) return 'failed'
    return !report.setup ? 'not run' : report.setup.dryRun ? 'dry run' : 'set up'
  }
  const deploy = report.deploy
  if (report.error || checks === 'failed' || deploy?.error) return 'failed'
  if (!deploy) return 'not run'
  if (deploy.dryRun) return 'dry run'
  if (!deploy.deployed) return 'failed'
  return report.mode === 'rollback' ? 'rolled back' : 'deployed'
}

const RESULT_ICON: Record<OverallResult, string> = {
  passed: '✅',
  deployed: '✅',
  'rolled back': '✅',
  'set up': '✅',
  'dry run': '📝',
  failed: '❌',
  skipped: '⚪',
  'not run': '⚪'
}

export function renderSummary(report: Report, ctx: SummaryContext = {}): string {
  const result = overallResult(report)
  const suffix = result === 'failed' && report.deploy?.rolledBack ? ' (rolled back)' : ''
  const parts: string[] = [`## ${RESULT_ICON[result]} Django ${report.mode}: ${result}${suffix}`]

  if (report.error) parts.push(`**Error:** ${multiline(clip(report.error, MAX_ERROR))}`)

  if (report.checks.length > 0)
    parts.push(...renderChecks(report.checks, ctx.maxFindings ?? DEFAULT_MAX_FINDINGS))
  else if (report.mode === 'check') parts.push('No checks were selected.')
  if (report.annotationsOmitted) {
    const n = report.annotationsOmitted
    parts.push(
      `_${n} ${n === 1 ? 'finding was' : 'findings were'} not annotated on the code: ${ANNOTATION_LIMITS_TEXT}. The findings above list them._`
    )
  }

  parts.push(...renderMigrations(report.migrations))
  if (report.deploy) parts.push(...renderDeploy(report.deploy, report.mode))
  if (report.setup) parts.push(...renderSetup(report.setup))

  const runLink = safeUrl(ctx.runUrl)
  if (runLink) parts.push(`[View the workflow run](${runLink})`)

  return `${parts.join('\n\n')}\n`
}

/** Size of the summary file before this run first wrote to it (what a later write of the report keeps). */
let summaryStart: { file: string; size: number } | undefined

/**
 * Appends the summary to the job's summary page. Written again (a report written early on a cancel or an
 * internal error, then the final one), it replaces what this run wrote before. A missing summary file (local
 * runs) only warns.
 */
export async function writeSummary(report: Report, ctx: SummaryContext = {}): Promise<void> {
  try {
    const file = process.env.GITHUB_STEP_SUMMARY
    if (!file) throw new Error('GITHUB_STEP_SUMMARY is not set: this runner has no job summary')
    if (summaryStart?.file !== file) summaryStart = { file, size: statSync(file).size }
    else truncateSync(file, summaryStart.size)
    appendFileSync(file, `${renderSummary(report, ctx)}${EOL}`)
  } catch (err) {
    core.warning(`Could not write the job summary: ${err instanceof Error ? err.message : String(err)}`)
  }
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–'
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const totalSeconds = Math.round(ms / 1000)
  return `${Math.floor(totalSeconds / 60)} min ${totalSeconds % 60} s`
}

function renderChecks(checks: CheckResult[], maxFindings: number): string[] {
  const out: string[] = []
  const rows = checks.map(c => {
    const outcome = c.outcome === 'passed' ? '✅ passed' : '❌ failed'
    return `| ${code(c.name)} | ${outcome} | ${formatDuration(c.durationMs)} | ${c.findings.length} |`
  })
  out.push(
    ['### Checks', '', '| Check | Result | Duration | Findings |', '|---|---|--:|--:|', ...rows].join('\n')
  )

  for (const c of checks) {
    if (c.outcome !== 'failed' || c.tail.trim() === '') continue
    out.push(
      details(
        `Output of <code>${html(clip(c.command, MAX_NAME))}</code>`,
        codeBlock(tailOf(c.tail, TAIL_LINES, TAIL_CHARS))
      )
    )
  }

  const all = checks.flatMap(c => c.findings.map(f => ({ check: c.name, f })))
  if (all.length > 0) {
    // Errors first, so a cap never hides an error behind a wall of notices.
    const sorted = all
      .map((x, i) => ({ ...x, i }))
      .sort((a, b) => LEVEL_ORDER[a.f.level] - LEVEL_ORDER[b.f.level] || a.i - b.i)
    const rows = sorted.slice(0, Math.max(0, maxFindings)).map(({ check, f }) => {
      const title = f.title ? multiline(clip(f.title, MAX_TITLE)) : ''
      const file = f.file ? clip(f.file, MAX_NAME) : ''
      const where = file ? code(f.line !== undefined ? `${file}:${f.line}` : file) : ''
      const message = multiline(clip(f.message, MAX_MESSAGE))
      return `| ${LEVEL_ICON[f.level]} ${f.level} | ${code(check)} | ${title} | ${where} | ${message} |`
    })
    const shown = fitting(rows, FINDINGS_CHARS)
    out.push(
      [
        `#### Findings (${all.length})`,
        '',
        '| Level | Check | Title | Location | Message |',
        '|---|---|---|---|---|',
        ...shown
      ].join('\n')
    )
    const hidden = all.length - shown.length
    if (hidden > 0) out.push(`_… and ${hidden} more ${hidden === 1 ? 'finding' : 'findings'} not shown._`)
  }
  return out
}

function renderDeploy(d: DeployResult, mode: Report['mode']): string[] {
  const out: string[] = []
  const heading = d.dryRun ? 'Dry run' : mode === 'rollback' ? 'Rollback' : 'Deploy'
  const previous = previousReleases(d) ? code(clip(previousReleases(d)!, MAX_NAME), false) : ''
  out.push(
    `### ${heading}\n\n**Release:** ${code(clip(d.release, MAX_NAME), false) || '–'}  \n` +
      `**Previous release:** ${previous || 'none'}`
  )
  if (d.error) out.push(`**Error:** ${multiline(clip(d.error, MAX_ERROR))}`)
  if (d.rolledBack) out.push(`↩️ **rolled back**${previous ? `; ${previous} is live again` : ''}.`)
  const fleet = d.hosts && d.hosts.length > 1 ? d.hosts : undefined
  if (fleet) out.push(...renderFleet(d, fleet))
  if (d.steps.length > 0) out.push(...renderSteps(d, fleet))
  out.push(...renderDeployMigrations(d.migrations ?? []))
  out.push(...renderWarnings(d.warnings ?? []))
  if (d.dryRun && d.plan) out.push(...renderPlan(d.plan))
  return out
}

/** A fleet: which host serves what, what its upload cost, how its steps went and the time they took there. */
function renderFleet(d: DeployResult, fleet: NonNullable<DeployResult['hosts']>): string[] {
  const name = (r?: string): string => (r ? code(clip(r, MAX_NAME)) : '–')
  const rows = fitting(
    fleet.map(h => {
      const own = d.steps.filter(s => s.host === h.host)
      const failed = own.find(s => s.outcome === 'failed')
      const steps = failed
        ? `${STEP_ICON.failed} ${multiline(clip(failed.step, MAX_NAME))}`
        : `${own.length} ${STEP_ICON.ok}`
      const time = formatDuration(own.reduce((sum, s) => sum + s.durationMs, 0))
      return `| ${code(clip(h.host, MAX_NAME))} | ${name(h.previous)} | ${h.live === undefined ? 'unknown' : name(h.live)} | ${h.bytesSent === undefined ? '–' : `${(h.bytesSent / 1024).toFixed(1)} KiB`} | ${steps} | ${time} |`
    }),
    STEPS_CHARS
  )
  const out = [
    [
      '| Host | Before | Now live | Release sent | Steps | Time in steps |',
      '|---|---|---|--:|---|--:|',
      ...rows
    ].join('\n')
  ]
  if (fleet.length > rows.length) out.push(`_… and ${fleet.length - rows.length} more hosts not shown._`)
  return out
}

/** Every step, a fleet's host by host (in the fleet's order, each in its order), and the failed steps' tails. */
function renderSteps(d: DeployResult, fleet?: NonNullable<DeployResult['hosts']>): string[] {
  const order = new Map((fleet ?? []).map((h, i) => [h.host, i]))
  const steps = fleet
    ? [...d.steps].sort((a, b) => (order.get(a.host) ?? order.size) - (order.get(b.host) ?? order.size))
    : d.steps
  const rows = fitting(
    steps.map(s => {
      const step = multiline(clip(s.step, MAX_LINE))
      return `| ${code(clip(s.host, MAX_NAME))} | ${step} | ${STEP_ICON[s.outcome]} ${s.outcome} | ${formatDuration(s.durationMs)} |`
    }),
    STEPS_CHARS
  )
  const out = [['| Host | Step | Result | Time |', '|---|---|---|--:|', ...rows].join('\n')]
  if (d.steps.length > rows.length) out.push(`_… and ${d.steps.length - rows.length} more steps not shown._`)
  const failed = d.steps.filter(s => s.outcome === 'failed' && s.detail)
  for (const s of failed.slice(0, MAX_STEP_DETAILS)) {
    const summary = `Failed step ${html(clip(s.step, MAX_NAME))} on <code>${html(clip(s.host, MAX_NAME))}</code>`
    out.push(details(summary, codeBlock(tailOf(s.detail ?? '', TAIL_LINES, TAIL_CHARS))))
  }
  return out
}

function renderWarnings(warnings: string[]): string[] {
  if (warnings.length === 0) return []
  const rows = fitting(
    warnings.map(w => `- ⚠️ ${multiline(clip(w, MAX_MESSAGE))}`),
    FINDINGS_CHARS
  )
  const out = [[`#### Server warnings (${warnings.length})`, '', ...rows].join('\n')]
  if (warnings.length > rows.length)
    out.push(`_… and ${warnings.length - rows.length} more warnings not shown._`)
  return out
}

/** The dry run's commands, host by host, within the summary's budget. */
function renderPlan(plan: NonNullable<DeployResult['plan']>): string[] {
  const out: string[] = []
  let budget = PLAN_CHARS
  const hosts = Object.entries(planByHost(plan))
  let shownHosts = 0
  for (const [host, lines] of hosts) {
    const n = lines.length
    const summary = `Plan for <code>${html(clip(host, MAX_NAME))}</code> (${n} ${n === 1 ? 'command' : 'commands'})`
    budget -= summary.length + 40
    if (budget <= 0) break
    const kept: string[] = []
    for (const line of lines.slice(0, PLAN_LINES_PER_HOST)) {
      const l = clip(line, MAX_LINE)
      if (l.length + 1 > budget) break
      kept.push(l)
      budget -= l.length + 1
    }
    const note = kept.length < n ? `${kept.length ? '\n' : ''}# … ${n - kept.length} more not shown` : ''
    out.push(details(summary, codeBlock(`${kept.join('\n')}${note}`, 'sh')))
    shownHosts++
  }
  if (shownHosts < hosts.length) out.push(`_… plans for ${hosts.length - shownHosts} more hosts not shown._`)
  return out
}

/** Only http(s) URLs, with characters that would end a Markdown link target encoded. */
function safeUrl(url: string | undefined): string | undefined {
  if (!url || url.length > 2000 || !/^https?:\/\//i.test(url)) return undefined
  return url.replace(/[\s()<>]/g, ch => encodeURIComponent(ch))
}
