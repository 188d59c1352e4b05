/**
 * Findings as workflow annotations, so they show inline on the PR's "Files changed" tab.
 */
import * as core from '@actions/core'
import type { AnnotationProperties } from '@actions/core'
import type { CheckResult, Finding } from '../report.js'

/**
 * GitHub's limits: a step shows at most 10 error, 10 warning and 10 notice annotations, a job at most 50; the
 * rest are dropped without a word. The action is one step, so it stops at the step's limits (30 at most, under
 * the job's 50) and counts the rest. Two uses of the action in one job share the 50; each keeps its own 10s.
 */
export const ANNOTATION_LIMITS = { perLevelPerStep: 10 } as const

/** The limit as the summary states it. */
export const ANNOTATION_LIMITS_TEXT = `GitHub shows at most ${ANNOTATION_LIMITS.perLevelPerStep} errors, ${ANNOTATION_LIMITS.perLevelPerStep} warnings and ${ANNOTATION_LIMITS.perLevelPerStep} notices per step`

export interface AnnotationPlan {
  /** The findings to annotate, with the check each belongs to, in order. */
  annotate: { check: CheckResult['name']; finding: Finding }[]
  /** Findings left out, per level. */
  omitted: Record<Finding['level'], number>
}

/**
 * Which findings fit. `reserve` keeps annotations free for what the action itself reports later in the same
 * step (the failure message is an error annotation).
 */
export function planAnnotations(
  checks: CheckResult[],
  reserve: Partial<Record<Finding['level'], number>> = {}
): AnnotationPlan {
  const left = {
    error: ANNOTATION_LIMITS.perLevelPerStep - (reserve.error ?? 0),
    warning: ANNOTATION_LIMITS.perLevelPerStep - (reserve.warning ?? 0),
    notice: ANNOTATION_LIMITS.perLevelPerStep - (reserve.notice ?? 0)
  }
  const plan: AnnotationPlan = { annotate: [], omitted: { error: 0, warning: 0, notice: 0 } }
  for (const check of checks) {
    for (const finding of check.findings) {
      if (left[finding.level] <= 0) {
        plan.omitted[finding.level]++
        continue
      }
      left[finding.level]--
      plan.annotate.push({ check: check.name, finding })
    }
  }
  return plan
}

/** Annotates what fits GitHub's limits; returns how many findings were left out (listed in the summary). */
export function annotate(checks: CheckResult[]): number {
  // A failed check fails the run, and setFailed's message is one more error annotation in this step.
  const failing = checks.some(c => c.outcome === 'failed')
  const plan = planAnnotations(checks, { error: failing ? 1 : 0 })
  for (const { check, finding: f } of plan.annotate) {
    const props: AnnotationProperties = {
      title: f.title ? `${check}: ${f.title}` : `django ${check}`
    }
    if (f.file) {
      props.file = f.file
      // A line without a file cannot be placed; GitHub would attach it to nothing.
      if (f.line !== undefined && f.line > 0) props.startLine = f.line
    }
    core[f.level](f.message, props)
  }
  const o = plan.omitted
  const total = o.error + o.warning + o.notice
  if (total > 0) {
    const parts = (['error', 'warning', 'notice'] as const)
      .filter(l => o[l] > 0)
      .map(l => `${o[l]} ${l}${o[l] === 1 ? '' : 's'}`)
    core.info(
      `${total} more ${total === 1 ? 'finding was' : 'findings were'} not annotated (${parts.join(', ')}): GitHub shows at most ` +
        `${ANNOTATION_LIMITS.perLevelPerStep} annotations of each level per step; the job summary lists the findings.`
    )
  }
  return total
}
