/**
 * Findings as workflow annotations, so they show inline on the PR's "Files changed" tab.
 */
import * as core from '@actions/core'
import type { AnnotationProperties } from '@actions/core'
import type { CheckResult } from '../report.js'

// GitHub shows at most 10 annotations of each level per step and 50 per job; more are dropped silently, so
// stop early and say so in the log instead.
const MAX_PER_LEVEL = 50

export function annotate(checks: CheckResult[]): void {
  const counts = { error: 0, warning: 0, notice: 0 }
  let dropped = 0
  for (const check of checks) {
    for (const f of check.findings) {
      if (counts[f.level] >= MAX_PER_LEVEL) {
        dropped++
        continue
      }
      counts[f.level]++
      const props: AnnotationProperties = {
        title: f.title ? `${check.name}: ${f.title}` : `django ${check.name}`
      }
      if (f.file) {
        props.file = f.file
        // A line without a file cannot be placed; GitHub would attach it to nothing.
        if (f.line !== undefined && f.line > 0) props.startLine = f.line
      }
      core[f.level](f.message, props)
    }
  }
  if (dropped > 0) core.info(`${dropped} more findings were not annotated (see the job summary).`)
}
