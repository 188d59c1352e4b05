/**
 * Turns the output of Django's management commands into findings. Pure: no I/O, paths are only computed.
 * Formats were taken from real runs of Django 3.2, 4.2 and 5.2 (see __tests__/fixtures/django/).
 */
import path from 'node:path'
import type { Finding } from '../report.js'
import type { CheckName } from '../settings.js'

export interface PathContext {
  /** Absolute directory the command ran in (holds manage.py); relative paths in the output are relative to it. */
  projectDir: string
  /** Absolute repository root: finding paths are made relative to it. */
  repoRoot: string
}

// eslint-disable-next-line no-control-regex -- colour codes are what this strips
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g

function lines(output: string): string[] {
  return output.replace(ANSI, '').replace(/\r\n?/g, '\n').split('\n')
}

/** A path from the output, relative to the repository root, or undefined if it lies outside it. */
export function repoRelative(file: string, ctx: PathContext): string | undefined {
  const abs = path.resolve(ctx.projectDir, file)
  const rel = path.relative(ctx.repoRoot, abs)
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return undefined
  return rel.split(path.sep).join('/')
}

// `obj: (id) message`; obj is `?` when the check has no object. Ids are `<tag>.<level letter><digits>`,
// e.g. security.W018, fields.E120, 2_0.W001; third-party ids follow the same convention.
const CHECK_LINE = /^(.+?): \(([\w.-]*?[CEWID]\d+)\) (.*)$/
const CHECK_HEADING = /^(CRITICALS|ERRORS|WARNINGS|INFOS|DEBUGS):$/

function levelOf(id: string): Finding['level'] {
  const letter = /([CEWID])\d+$/.exec(id)?.[1]
  if (letter === 'E' || letter === 'C') return 'error'
  if (letter === 'W') return 'warning'
  return 'notice'
}

/**
 * Django system-check messages (`manage.py check`, also printed before other commands run). Continuation lines
 * are the indented ones (`\tHINT: …`): Django's own messages are one line, and other output (e.g.
 * `Migrations for 'app':`) can follow a message directly with no blank line.
 */
export function parseSystemChecks(output: string): Finding[] {
  const findings: Finding[] = []
  const seen = new Set<string>()
  let current: { obj: string; id: string; text: string[]; hint: string[] } | undefined

  const flush = () => {
    if (!current) return
    const { obj, id, text, hint } = current
    current = undefined
    let message = text.join('\n')
    if (obj !== '?') message = `${obj}: ${message}`
    if (hint.length > 0) message += `\nHINT: ${hint.join('\n')}`
    const key = `${id}\u0000${message}`
    if (seen.has(key)) return
    seen.add(key)
    findings.push({ level: levelOf(id), title: id, message })
  }

  for (const line of lines(output)) {
    const m = CHECK_LINE.exec(line)
    if (m) {
      flush()
      current = { obj: m[1], id: m[2], text: [m[3].trim()], hint: [] }
      continue
    }
    if (current && /^\s+\S/.test(line)) {
      const hint = /^\s+HINT: (.*)$/.exec(line)
      if (hint) current.hint.push(hint[1].trim())
      else if (current.hint.length > 0) current.hint.push(line.trim())
      else current.text.push(line.trim())
      continue
    }
    // Anything else (blank line, a heading, "System check identified …", other output) ends a message.
    flush()
    if (CHECK_HEADING.test(line)) continue
  }
  flush()
  return findings
}

const FRAME = /^\s*File "(.+)", line (\d+)(?:, in (.+))?$/
const SEPARATOR_EQ = /^={70}$/
const SEPARATOR_DASH = /^-{70}$/
const TEST_HEADING = /^(FAIL|ERROR|UNEXPECTED SUCCESS): (.+)$/

/** The innermost frame of a traceback that is project code (inside the repo, not an installed package). */
function projectFrame(
  body: string[],
  ctx: PathContext
): { file: string; line: number; index: number } | undefined {
  for (let i = body.length - 1; i >= 0; i--) {
    const m = FRAME.exec(body[i])
    if (!m || m[1].startsWith('<')) continue
    if (/[/\\](site|dist)-packages[/\\]/.test(m[1])) continue
    const file = repoRelative(m[1], ctx)
    if (file) return { file, line: Number(m[2]), index: i }
  }
  return undefined
}

/**
 * The exception that ended a traceback: the unindented text after its last frame, up to the end of the block
 * (assertion diffs span several lines).
 */
function exceptionText(body: string[], maxLines = 20): string | undefined {
  let last = -1
  body.forEach((l, i) => {
    if (FRAME.test(l)) last = i
  })
  let start = last + 1
  while (start < body.length && (/^\s/.test(body[start]) || body[start] === '')) start++
  const text = body.slice(start, start + maxLines)
  while (text.length > 0 && text[text.length - 1].trim() === '') text.pop()
  return text.length > 0 ? text.join('\n') : undefined
}

/**
 * Python 3.11+ names a test `test_x (app.tests.T.test_x)`, older ones `test_x (app.tests.T)`: titles use the
 * older form so they don't depend on the Python version. A subTest's parameters stay (`… (i=1)`).
 */
export function testTitle(heading: string): string {
  const m = /^(\S+) \(([^()]+)\)(.*)$/.exec(heading)
  if (!m) return heading
  const [, name, where, rest] = m
  const qualified = where.endsWith(`.${name}`) ? where.slice(0, -name.length - 1) : where
  return `${name} (${qualified})${rest}`
}

/** Failed and erroring tests from unittest's report (Django's runner, also pytest-free `test-command`s). */
export function parseTestFailures(output: string, ctx: PathContext): Finding[] {
  const all = lines(output)
  const findings: Finding[] = []
  for (let i = 0; i < all.length; i++) {
    if (!SEPARATOR_EQ.test(all[i])) continue
    const heading = TEST_HEADING.exec(all[i + 1] ?? '')
    if (!heading) continue
    let j = i + 2
    if (SEPARATOR_DASH.test(all[j] ?? '')) j++
    const body: string[] = []
    while (j < all.length && !SEPARATOR_EQ.test(all[j]) && !SEPARATOR_DASH.test(all[j])) body.push(all[j++])
    i = j - 1
    const [, kind, name] = heading
    const frame = projectFrame(body, ctx)
    const finding: Finding = {
      level: 'error',
      title: testTitle(name.trim()),
      message: exceptionText(body) ?? (kind === 'UNEXPECTED SUCCESS' ? 'Unexpected success' : kind)
    }
    if (frame) {
      finding.file = frame.file
      finding.line = frame.line
    }
    findings.push(finding)
  }
  return findings
}

/** `makemigrations --check --dry-run`: one finding per app that has model changes without a migration. */
export function parseMigrations(output: string, ctx: PathContext): Finding[] {
  const all = lines(output)
  const findings: Finding[] = []
  for (let i = 0; i < all.length; i++) {
    const m = /^Migrations for '([^']+)':$/.exec(all[i])
    if (!m) continue
    const app = m[1]
    let file: string | undefined
    const changes: string[] = []
    let j = i + 1
    // Two-space indent: the migration file it would write; four: the operations (`- ` before 5.x, `+ ~ -` since).
    while (j < all.length && /^ {2}\S/.test(all[j])) {
      const migration = all[j].trim()
      file ??= repoRelative(migration, ctx)
      j++
      while (j < all.length && /^ {4}/.test(all[j])) {
        const change = all[j].trim().replace(/^[-+~*x] /, '')
        if (change) changes.push(change)
        j++
      }
    }
    i = j - 1
    const finding: Finding = {
      level: 'error',
      title: `missing migration: ${app}`,
      message:
        `app '${app}' has model changes without a migration: ` +
        (changes.length > 0 ? changes.join('; ') : 'see the output') +
        `. Run \`python manage.py makemigrations ${app}\` and commit the result.`
    }
    if (file) finding.file = file
    findings.push(finding)
  }
  return findings
}

/**
 * What to say when a command failed and nothing else explained it: the exception of a trailing traceback
 * (pointing at project code when it can) or else the last lines of output.
 */
export function fallbackFinding(
  name: CheckName,
  output: string,
  exitCode: number,
  ctx: PathContext
): Finding {
  const all = lines(output)
  const title = `${name} failed (exit code ${exitCode})`
  const tb = all.lastIndexOf('Traceback (most recent call last):')
  if (tb >= 0) {
    const body = all.slice(tb + 1)
    const text = exceptionText(body)
    if (text) {
      const frame = projectFrame(body, ctx)
      const finding: Finding = { level: 'error', title, message: text }
      if (frame) {
        finding.file = frame.file
        finding.line = frame.line
      }
      return finding
    }
  }
  const tail = all.filter(l => l.trim() !== '').slice(-10)
  return {
    level: 'error',
    title,
    message: tail.length > 0 ? tail.join('\n') : 'The command failed without printing anything.'
  }
}

/**
 * All findings for one check. `check`/`deploy` report every system-check message. `migrations` and `test`
 * print the same messages before they start: only errors are kept there (they stop the command), warnings are
 * `check`'s to report. A failure nothing explains still yields a finding, so it is never silent.
 */
export function parseCheckOutput(
  name: CheckName,
  output: string,
  exitCode: number,
  ctx: PathContext
): Finding[] {
  const system = parseSystemChecks(output)
  let findings: Finding[]
  switch (name) {
    case 'check':
    case 'deploy':
      findings = system
      break
    case 'migrations':
      findings = [...system.filter(f => f.level === 'error'), ...parseMigrations(output, ctx)]
      break
    case 'test':
      findings = [...system.filter(f => f.level === 'error'), ...parseTestFailures(output, ctx)]
      break
  }
  if (exitCode !== 0) {
    // `--fail-level WARNING` makes warnings the reason `deploy` fails; elsewhere only errors are.
    const explained = findings.some(f => f.level === 'error' || (name === 'deploy' && f.level === 'warning'))
    if (!explained) findings.push(fallbackFinding(name, output, exitCode, ctx))
  }
  return findings
}
