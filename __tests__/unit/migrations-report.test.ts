// The PR side of the migration analysis, without Django: which files are the PR's migrations (real git in a temp
// repository), the PR's base from the event payload, migrations.py's lines as the report holds them, the
// annotations, and the "Migrations" section (escaping, budgets, the one line when SQL or the base is missing).
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import {
  changedMigrationFiles,
  isMigrationPath,
  migrationFindings,
  parseClassified
} from '../../src/django/migrations.js'
import { renderMigrations } from '../../src/github/migrations.js'
import { renderSummary } from '../../src/github/summary.js'
import type { ClassifiedMigration, MigrationsReport } from '../../src/report.js'
import { readRunContext } from '../../src/settings/context.js'

let dir: string
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'dd-migrations-report-'))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const git = (repo: string, ...args: string[]): string =>
  execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args])
    .toString()
    .trim()

function write(repo: string, file: string, text = 'x = 1\n'): void {
  mkdirSync(path.dirname(path.join(repo, file)), { recursive: true })
  writeFileSync(path.join(repo, file), text)
}

test('isMigrationPath: a .py file in a migrations folder, not its __init__', () => {
  expect(isMigrationPath('shop/migrations/0002_x.py')).toBe(true)
  expect(isMigrationPath('migrations/0001_initial.py')).toBe(true)
  expect(isMigrationPath('shop/migrations/__init__.py')).toBe(false)
  expect(isMigrationPath('shop/migrations/README.md')).toBe(false)
  expect(isMigrationPath('shop/migrations/sub/0001.py')).toBe(false)
  expect(isMigrationPath('shop/mymigrations/0001.py')).toBe(false)
})

test('changedMigrationFiles: added, changed and renamed since the fork point; not deleted, not the base branch’s', async () => {
  const repo = path.join(dir, 'repo')
  mkdirSync(repo)
  git(repo, 'init', '-q', '-b', 'main')
  write(repo, 'shop/migrations/0001_initial.py')
  write(repo, 'shop/migrations/0002_old.py')
  write(repo, 'shop/migrations/0003_gone.py')
  write(repo, 'shop/migrations/0000_main_edits.py')
  git(repo, 'add', '-A')
  git(repo, 'commit', '-qm', 'base')
  git(repo, 'checkout', '-qb', 'pr')
  write(repo, 'shop/migrations/0001_initial.py', 'x = 2\n')
  write(repo, 'shop/migrations/0004 new $(id).py')
  write(repo, 'shop/views.py')
  git(repo, 'mv', 'shop/migrations/0002_old.py', 'shop/migrations/0002_renamed.py')
  git(repo, 'rm', '-q', 'shop/migrations/0003_gone.py')
  git(repo, 'add', '-A')
  git(repo, 'commit', '-qm', 'pr')
  // The base branch moves on after the PR forked: its new migration is not the PR's.
  git(repo, 'checkout', '-q', 'main')
  write(repo, 'shop/migrations/0005_main.py')
  write(repo, 'shop/migrations/0000_main_edits.py', 'x = 3\n')
  git(repo, 'add', '-A')
  git(repo, 'commit', '-qm', 'main moves')
  const base = git(repo, 'rev-parse', 'HEAD')
  git(repo, 'checkout', '-q', 'pr')
  const r = await changedMigrationFiles(repo, base)
  expect(r).toEqual({
    files: [
      'shop/migrations/0001_initial.py',
      'shop/migrations/0002_renamed.py',
      'shop/migrations/0004 new $(id).py'
    ]
  })
  expect(await changedMigrationFiles(repo, 'e'.repeat(40))).toEqual({
    note: "the pull request's base commit eeeeeeeeeeee is not in the checkout, so its migrations are not known: give actions/checkout fetch-depth: 2 (the merge commit and its base) or 0"
  })
})

test('readRunContext: the base commit from a pull request payload, only when it is a commit id', () => {
  const ctx = (sha: unknown, event = 'pull_request') =>
    readRunContext(
      { GITHUB_EVENT_NAME: event, GITHUB_EVENT_PATH: 'e.json' },
      () => JSON.stringify({ pull_request: { number: 5, base: { sha } } }),
      dir
    ).baseSha
  expect(ctx('a'.repeat(40))).toBe('a'.repeat(40))
  expect(ctx('--output=/tmp/x')).toBeUndefined()
  expect(ctx(`${'a'.repeat(40)}\n`)).toBeUndefined()
  expect(ctx(42)).toBeUndefined()
  expect(ctx('a'.repeat(40), 'push')).toBeUndefined()
})

const line = (over: Record<string, unknown>): string =>
  JSON.stringify({
    app: 'shop',
    name: '0002_x',
    file: path.join(dir, 'repo/shop/migrations/0002_x.py'),
    after_deploy: false,
    class: 'contract',
    operations: [
      {
        op: 'RemoveField',
        describe: 'Remove field a from item',
        class: 'contract',
        hint: 'drop later',
        line: 9
      },
      { op: 'AddField', describe: 'Add field b to item', class: 'expand' },
      { op: 'RunSQL', describe: 'Raw SQL operation', class: 'review', hint: 'look', line: 11 }
    ],
    sql: 'BEGIN;\nALTER TABLE x;\nCOMMIT;\n',
    ...over
  })

test('parseClassified: the lines of classified migrations, files relative to the repository', () => {
  const out = [
    'Some Django warning',
    line({}),
    JSON.stringify({ app: 'shop', name: 'nope', error: 'no migration' }),
    '{not json',
    line({ name: '0003_y', after_deploy: true, sql: undefined, sql_error: 'OperationalError: no db' })
  ].join('\n')
  const m = parseClassified(out, path.join(dir, 'repo'))
  expect(m.map(x => [x.name, x.file, x.afterDeploy, x.sql !== undefined, x.sqlError])).toEqual([
    ['0002_x', 'shop/migrations/0002_x.py', false, true, undefined],
    ['0003_y', 'shop/migrations/0002_x.py', true, false, 'OperationalError: no db']
  ])
})

function report(migrations: ClassifiedMigration[], note?: string): MigrationsReport {
  return { base: 'b'.repeat(40), migrations, note }
}
const parsed = (over: Record<string, unknown> = {}): ClassifiedMigration =>
  parseClassified(line(over), path.join(dir, 'repo'))[0]

test('migrationFindings: contract as warnings, review as notices, on the file and line; expand is not annotated', () => {
  expect(migrationFindings(report([parsed({ after_deploy: true })]))).toEqual([
    {
      level: 'warning',
      title: 'contract: RemoveField',
      message: 'shop.0002_x (runs after deploy): Remove field a from item — drop later',
      file: 'shop/migrations/0002_x.py',
      line: 9
    },
    {
      level: 'notice',
      title: 'review: RunSQL',
      message: 'shop.0002_x (runs after deploy): Raw SQL operation — look',
      file: 'shop/migrations/0002_x.py',
      line: 11
    }
  ])
  expect(migrationFindings(undefined)).toEqual([])
})

describe('renderMigrations', () => {
  test('nothing without a report; one line for a note', () => {
    expect(renderMigrations(undefined)).toEqual([])
    expect(renderMigrations(report([], 'the base *is* missing'))).toEqual([
      '### Migrations\n\n_the base \\*is\\* missing._'
    ])
  })

  test('a row per operation, the tally, the SQL collapsed', () => {
    const text = renderMigrations(report([parsed()])).join('\n\n')
    expect(text).toContain(
      '1 migration added or changed against `bbbbbbbbbbbb`: 🔴 1 contract, 🟡 1 review, 🟢 1 expand.'
    )
    expect(text).toContain(
      '| `shop.0002_x` | Remove field a from item (`RemoveField`) | 🔴 contract | drop later |'
    )
    expect(text).toContain(
      '<details><summary>SQL of <code>shop.0002_x</code></summary>\n\n```sql\nBEGIN;\nALTER TABLE x;\nCOMMIT;\n```\n\n</details>'
    )
  })

  test('hostile text from a migration cannot break the table, the summary or the code block', () => {
    const evil = parsed({
      name: '0002_</summary><img src=x>',
      operations: [{ op: 'X|Y', describe: 'a | b\n<script>', class: 'contract', hint: '**bold** | `x`' }],
      sql: 'SELECT 1;\n```\n# heading'
    })
    const text = renderMigrations(report([evil])).join('\n\n')
    expect(text).toContain(
      '| `shop.0002_</summary><img src=x>` | a \\| b<br>&lt;script&gt; (`X\\|Y`) | 🔴 contract | \\*\\*bold\\*\\* \\| \\`x\\` |'
    )
    expect(text).toContain(
      '<summary>SQL of <code>shop.0002_&lt;/summary&gt;&lt;img src=x&gt;</code></summary>'
    )
    expect(text).toContain('````sql\nSELECT 1;\n```\n# heading\n````')
  })

  test('without SQL: one line with the reason, the classification stays', () => {
    const noSql = (name: string) =>
      parsed({ name, sql: undefined, sql_error: 'ImproperlyConfigured: no psycopg' })
    const text = renderMigrations(report([noSql('0002_a'), noSql('0003_b')])).join('\n\n')
    expect(text).toContain('🔴 contract')
    expect(text).not.toContain('<details>')
    expect(text).toContain(
      "_SQL not shown for 2 migrations: `sqlmigrate` could not run (ImproperlyConfigured: no psycopg); it needs the project's database driver and a database it can reach._"
    )
  })

  test('a large PR stays within the budgets: rows and SQL are cut with a count', () => {
    const many = Array.from({ length: 200 }, (_, i) =>
      parsed({ name: `${1000 + i}_m`, sql: 'X'.repeat(5000) })
    )
    const text = renderMigrations(report(many)).join('\n\n')
    expect(text.length).toBeLessThan(22_000)
    expect(text).toMatch(/_… and \d+ more operations not shown\._/)
    expect(text).toMatch(/_SQL of \d+ more migrations not shown\._/)
  })
})

test('the summary: the section after the checks, and "No checks were selected" only when none were', () => {
  const checks = [
    {
      name: 'check' as const,
      command: 'python manage.py check',
      outcome: 'passed' as const,
      durationMs: 1,
      findings: [],
      tail: ''
    }
  ]
  const body = renderSummary({ mode: 'check', checks, migrations: report([parsed()]) })
  expect(body.indexOf('### Checks')).toBeLessThan(body.indexOf('### Migrations'))
  expect(body).not.toContain('No checks were selected.')
  expect(renderSummary({ mode: 'check', checks: [] })).toContain('No checks were selected.')
})
