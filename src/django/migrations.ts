/**
 * The migrations a pull request adds or changes, classified on the runner: `git diff` between the PR's base and
 * the checkout names the files, migrations.py (the classifier the deploy runs on the servers too) classifies them
 * in the project's own Django and adds `sqlmigrate`'s SQL for its database backend. Never fails the run: what it
 * cannot do is one line in the report.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { MANAGE_MANY_PY, MIGRATIONS_PY } from '../remote/python/programs.js'
import type {
  CheckResult,
  ClassifiedMigration,
  Finding,
  MigrationClass,
  MigrationsReport
} from '../report.js'
import { git } from '../release/source.js'
import { commandEnv } from './checks.js'
import { probeProject, removeMadeFiles } from './project.js'

export interface AnalyzeOptions {
  /** The PR's base commit. */
  base: string
  /** Repository root (the git checkout): file paths in the report are relative to it. */
  repoRoot: string
  /** Directory holding manage.py. */
  workingDirectory: string
  python: string
  runnerEnv: Record<string, string | undefined>
  timeoutSeconds: number
  /** Told what was removed (SQLite files sqlmigrate created). */
  info?: (line: string) => void
}

interface Ran {
  code: number
  stdout: string
  stderr: string
  /** Killed on timeout. */
  killed?: boolean
  error?: Error
}

function run(
  tool: string,
  args: string[],
  cwd: string,
  env?: Record<string, string>,
  timeoutMs = 60_000
): Promise<Ran> {
  return new Promise(resolve => {
    execFile(tool, args, { cwd, env, timeout: timeoutMs, maxBuffer: 32 << 20 }, (e, stdout, stderr) => {
      const code = e ? (typeof e.code === 'number' ? e.code : -1) : 0
      resolve({
        code,
        stdout: String(stdout ?? ''),
        stderr: String(stderr ?? ''),
        killed: e?.killed,
        error: e ?? undefined
      })
    })
  })
}

/** Whether a path (relative to the repository) can be a migration file: `…/migrations/<name>.py`. */
export function isMigrationPath(file: string): boolean {
  return /(^|\/)migrations\/(?!__init__\.py$)[^/]+\.py$/.test(file)
}

/**
 * The migration files the PR adds or changes (added, modified or renamed since the merge base of `base` and
 * HEAD), relative to the repository root; or why they cannot be known.
 */
export async function changedMigrationFiles(
  repoRoot: string,
  base: string
): Promise<{ files: string[] } | { note: string }> {
  const ok = (p: Promise<string>): Promise<string | undefined> => p.catch(() => undefined)
  if ((await ok(git(repoRoot, 'cat-file', '-e', `${base}^{commit}`))) === undefined)
    return {
      note:
        `the pull request's base commit ${base.slice(0, 12)} is not in the checkout, so its migrations are not ` +
        `known: give actions/checkout fetch-depth: 2 (the merge commit and its base) or 0`
    }
  // A checkout of the PR's head (not its merge commit) has the base's later commits beside it: diff from the fork
  // point. A shallow checkout may not have it: then from the base itself.
  const from = (await ok(git(repoRoot, 'merge-base', base, 'HEAD')))?.trim() || base
  try {
    const out = await git(repoRoot, 'diff', '--name-only', '-z', '--diff-filter=AMR', from, 'HEAD', '--')
    return { files: out.split('\0').filter(f => f && isMigrationPath(f)) }
  } catch (e) {
    return {
      note: `the diff against the base ${base.slice(0, 12)} failed: ${firstLine((e as Error).message)}`
    }
  }
}

const MARK = 'django-deploy-migrations:'

interface RawLine {
  app: string
  name: string
  file?: string | null
  after_deploy?: boolean
  class?: MigrationClass
  operations?: ClassifiedMigration['operations']
  sql?: string
  sql_error?: string
  error?: string
}

/** migrations.py's JSON lines as the report holds them (files relative to the repository). */
export function parseClassified(stdout: string, repoRoot: string): ClassifiedMigration[] {
  const out: ClassifiedMigration[] = []
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue
    let raw: RawLine
    try {
      raw = JSON.parse(line) as RawLine
    } catch {
      continue
    }
    if (raw.error || !raw.class) continue
    out.push({
      app: raw.app,
      name: raw.name,
      file: raw.file ? path.relative(repoRoot, raw.file) : undefined,
      afterDeploy: raw.after_deploy ?? false,
      class: raw.class,
      operations: raw.operations ?? [],
      sql: raw.sql,
      sqlError: raw.sql_error
    })
  }
  return out
}

/** Classifies the migrations the PR adds or changes; undefined when it adds or changes none. */
export async function analyzeMigrations(o: AnalyzeOptions): Promise<MigrationsReport | undefined> {
  const changed = await changedMigrationFiles(o.repoRoot, o.base)
  if ('note' in changed) return { base: o.base, migrations: [], note: changed.note }
  if (changed.files.length === 0) return undefined
  if (!existsSync(path.join(o.workingDirectory, 'manage.py')))
    return {
      base: o.base,
      migrations: [],
      note: `no manage.py in ${o.workingDirectory}: migrations not classified`
    }
  const env = { ...commandEnv({ runnerEnv: o.runnerEnv }), PYTHONDONTWRITEBYTECODE: '1' }
  const facts = await probeProject(o.python, o.workingDirectory, env)
  const before = new Set(facts?.sqliteFiles.filter(f => existsSync(f)))
  const files = changed.files.map(f => path.resolve(o.repoRoot, f))
  const args = ['classify', '--sql', '--files', ...files]
  const ran = await run(
    o.python,
    ['-c', MANAGE_MANY_PY, MARK, '', JSON.stringify([['migrations', args, MIGRATIONS_PY]])],
    o.workingDirectory,
    env,
    o.timeoutSeconds * 1000
  )
  // sqlmigrate connects: with SQLite that makes the database file, not the analysis's to leave.
  for (const f of removeMadeFiles(facts?.sqliteFiles ?? [], before))
    o.info?.(`Removed ${path.relative(o.workingDirectory, f) || f}, which the migration analysis created.`)
  const migrations = parseClassified(ran.stdout, o.repoRoot)
  const status = new RegExp(`^${MARK} migrations (\\d+)$`, 'm').exec(ran.stdout)
  if (!status || (status[1] !== '0' && migrations.length === 0)) {
    const why = ran.killed
      ? `still running after ${o.timeoutSeconds} s (check-timeout)`
      : lastLine(ran.stderr || ran.error?.message || '')
    return { base: o.base, migrations, note: `the migrations could not be classified: ${why}` }
  }
  // Files under a migrations/ folder that is no installed app's: nothing to say.
  return migrations.length ? { base: o.base, migrations } : undefined
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? ''
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() || 'no output'
}

const LEVEL: Record<MigrationClass, Finding['level'] | undefined> = {
  expand: undefined,
  contract: 'warning',
  review: 'notice'
}

/** Contract operations as warnings and review ones as notices, on their migration file (annotations). */
export function migrationFindings(report: MigrationsReport | undefined): Finding[] {
  const out: Finding[] = []
  for (const m of report?.migrations ?? []) {
    for (const op of m.operations) {
      const level = LEVEL[op.class]
      if (!level) continue
      const when = m.afterDeploy ? ' (runs after deploy)' : ''
      out.push({
        level,
        title: `${op.class}: ${op.op}`,
        message: `${m.app}.${m.name}${when}: ${op.describe}${op.hint ? ` — ${op.hint}` : ''}`,
        file: m.file,
        line: op.line
      })
    }
  }
  return out
}

/** The findings as the annotations see a check's (titled `migrations: contract: RemoveField`). */
export function migrationsAsCheck(findings: Finding[]): CheckResult {
  return {
    name: 'migrations',
    command: 'migration analysis',
    outcome: 'passed',
    durationMs: 0,
    findings,
    tail: ''
  }
}
