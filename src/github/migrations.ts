/**
 * The "Migrations" section of the summary and the PR comment: each operation of the migrations the PR adds or
 * changes with its class and hint, and `sqlmigrate`'s SQL collapsed, within a budget of the comment's size; and,
 * in a deploy's section, the migrations the server's migrate planned (or a rollback's target lacks).
 */
import type { MigrationClass, MigrationRun, MigrationsReport } from '../report.js'
import { clip, code, codeBlock, details, fitting, html, multiline, text } from './markdown.js'

const ROWS_CHARS = 8_000
const SQL_CHARS = 12_000
const SQL_PER_MIGRATION = 3_000
const MAX_CELL = 300
/** The deploy's migrate plan: its own budget beside the deploy's steps and warnings. */
const DEPLOY_ROWS_CHARS = 4_000

const CLASS_ICON: Record<MigrationClass, string> = { expand: '🟢', contract: '🔴', review: '🟡' }

/** The section, or nothing for a report that has no migrations and no note. */
export function renderMigrations(report: MigrationsReport | undefined): string[] {
  if (!report) return []
  const out: string[] = []
  const heading = '### Migrations'
  if (report.migrations.length === 0) {
    return report.note ? [`${heading}\n\n_${text(clip(report.note, 500))}._`] : []
  }
  const ops = report.migrations.flatMap(m => m.operations.map(o => ({ m, o })))
  const count = (c: MigrationClass): number => ops.filter(x => x.o.class === c).length
  const tally = (['contract', 'review', 'expand'] as const)
    .filter(c => count(c) > 0)
    .map(c => `${CLASS_ICON[c]} ${count(c)} ${c}`)
    .join(', ')
  const n = report.migrations.length
  const intro =
    `${n} ${n === 1 ? 'migration' : 'migrations'} added or changed against ${code(report.base.slice(0, 12), false)}: ` +
    `${tally || 'no operations'}. _Contract_ operations break the release that keeps serving while the new one ` +
    `deploys; _review_ ones cannot be judged statically.`
  const rows = ops.map(({ m, o }) => {
    const name = code(clip(`${m.app}.${m.name}`, 200)) + (m.afterDeploy ? ' (after deploy)' : '')
    const what = `${multiline(clip(o.describe, MAX_CELL))} (${code(clip(o.op, 100))})`
    return `| ${name} | ${what} | ${CLASS_ICON[o.class]} ${o.class} | ${o.hint ? multiline(clip(o.hint, MAX_CELL)) : ''} |`
  })
  const shown = fitting(rows, ROWS_CHARS)
  out.push(
    [heading, '', intro, '', '| Migration | Operation | Class | Hint |', '|---|---|---|---|', ...shown].join(
      '\n'
    )
  )
  if (shown.length < rows.length) out.push(`_… and ${rows.length - shown.length} more operations not shown._`)
  out.push(...renderSql(report))
  return out
}

function renderSql(report: MigrationsReport): string[] {
  const out: string[] = []
  let budget = SQL_CHARS
  let left = 0
  for (const m of report.migrations) {
    if (m.sql === undefined) continue
    const sql = clip(m.sql.trim(), SQL_PER_MIGRATION)
    if (sql.length > budget) {
      left++
      continue
    }
    budget -= sql.length
    out.push(details(`SQL of <code>${html(clip(`${m.app}.${m.name}`, 200))}</code>`, codeBlock(sql, 'sql')))
  }
  if (left > 0) out.push(`_SQL of ${left} more ${left === 1 ? 'migration' : 'migrations'} not shown._`)
  const errors = [...new Set(report.migrations.flatMap(m => (m.sqlError ? [m.sqlError] : [])))]
  if (errors.length > 0) {
    const without = report.migrations.filter(m => m.sqlError).length
    out.push(
      `_SQL not shown for ${without} ${without === 1 ? 'migration' : 'migrations'}: \`sqlmigrate\` could not run ` +
        `(${text(clip(errors[0], 300))}); it needs the project's database driver and a database it can reach._`
    )
  }
  return out
}

/** The server's migrate plan, as each host announced it before applying it (in the order it applies them). */
export function renderDeployMigrations(migrations: MigrationRun[]): string[] {
  if (migrations.length === 0) return []
  const when = {
    'before-switch': 'before the switch',
    'after-deploy': 'after every host switched',
    'not-in-target': 'applied, not in the target release'
  }
  const rows = fitting(
    migrations.map(
      m =>
        `| ${code(clip(`${m.app}.${m.name}`, MAX_CELL))} | ${when[m.when] ?? '?'} | ${code(clip(m.host, MAX_CELL))} | ${multiline(clip(m.operations.join('; '), MAX_CELL))} |`
    ),
    DEPLOY_ROWS_CHARS
  )
  const out = [
    [
      `#### Migrations (${migrations.length})`,
      '',
      '| Migration | When | Host | Operations |',
      '|---|---|---|---|',
      ...rows
    ].join('\n')
  ]
  if (migrations.length > rows.length)
    out.push(`_… and ${migrations.length - rows.length} more migrations not shown._`)
  return out
}
