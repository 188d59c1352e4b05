/**
 * Runs the selected Django checks on the runner and turns each into a CheckResult. Reporting to GitHub
 * (annotations, summary) happens elsewhere: this module only logs the commands' output in groups.
 */
import { existsSync, statSync } from 'node:fs'
import path from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import * as core from '@actions/core'
import { getExecOutput } from '@actions/exec'
import type { CheckResult, Finding } from '../report.js'
import type { CheckName } from '../settings.js'
import { parseCheckOutput } from './parse.js'

export interface RunChecksOptions {
  /** Directory holding manage.py; the commands run there. */
  workingDirectory: string
  python: string
  checks: CheckName[]
  /** Replaces `python manage.py test`; run with `bash -c`. */
  testCommand?: string
  /** Repository root: finding paths are relative to it. */
  repoRoot: string
  /** Extra environment for the commands, on top of the runner's. */
  env?: Record<string, string>
}

export interface CheckCommand {
  /** Executable to run. */
  tool: string
  args: string[]
  /** The command line as shown to users. */
  display: string
  /** Whether the command is `python manage.py …` (so manage.py must exist). */
  usesManagePy: boolean
}

const TAIL_LINES = 30

function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

/** The command line for one check. */
export function checkCommand(name: CheckName, python: string, testCommand?: string): CheckCommand {
  if (name === 'test' && testCommand !== undefined && testCommand.trim() !== '') {
    return { tool: 'bash', args: ['-c', testCommand], display: testCommand, usesManagePy: false }
  }
  const args: Record<CheckName, string[]> = {
    check: ['manage.py', 'check'],
    deploy: ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'],
    // No --noinput: since Django 4.0 a non-interactive makemigrations exits 3 on a non-nullable field without a
    // default instead of listing the changes; with --dry-run it never prompts anyway.
    migrations: ['manage.py', 'makemigrations', '--check', '--dry-run'],
    // --noinput: a leftover test database must not make the run wait for a "yes" that never comes.
    test: ['manage.py', 'test', '--noinput']
  }
  return {
    tool: python,
    args: args[name],
    display: [python, ...args[name]].map(shellQuote).join(' '),
    usesManagePy: true
  }
}

export function lastLines(text: string, n = TAIL_LINES): string {
  const all = text.replace(/\r\n?/g, '\n').replace(/\n+$/, '').split('\n')
  return all.slice(-n).join('\n')
}

function failed(name: CheckName, command: string, durationMs: number, message: string): CheckResult {
  core.info(message)
  const finding: Finding = { level: 'error', title: `${name} could not run`, message }
  return { name, command, outcome: 'failed', durationMs, findings: [finding], tail: message }
}

/** Why the check cannot start, if it cannot. */
function precondition(cmd: CheckCommand, workingDirectory: string): string | undefined {
  if (!existsSync(workingDirectory) || !statSync(workingDirectory).isDirectory()) {
    return `working-directory ${workingDirectory} does not exist.`
  }
  if (cmd.usesManagePy && !existsSync(path.join(workingDirectory, 'manage.py'))) {
    return (
      `No manage.py in ${workingDirectory}. Set working-directory to the folder of your Django project ` +
      `that holds manage.py.`
    )
  }
  return undefined
}

async function runOne(name: CheckName, opts: RunChecksOptions): Promise<CheckResult> {
  const cmd = checkCommand(name, opts.python, opts.testCommand)
  const started = Date.now()
  const problem = precondition(cmd, opts.workingDirectory)
  if (problem) return failed(name, cmd.display, 0, problem)

  // stdout and stderr in the order they arrive: Django prints system checks on stderr, results on stdout.
  let combined = ''
  const out = new StringDecoder('utf8')
  const err = new StringDecoder('utf8')
  let exitCode: number
  try {
    const result = await getExecOutput(cmd.tool, cmd.args, {
      cwd: opts.workingDirectory,
      env: {
        ...(process.env as Record<string, string>),
        // Unbuffered, so the two streams interleave as they would in a terminal.
        PYTHONUNBUFFERED: '1',
        ...opts.env
      },
      ignoreReturnCode: true,
      // An empty stdin: a command that prompts gets EOF instead of hanging the job.
      input: Buffer.alloc(0),
      listeners: {
        stdout: data => {
          combined += out.write(data)
        },
        stderr: data => {
          combined += err.write(data)
        }
      }
    })
    exitCode = result.exitCode
    combined += out.end() + err.end()
  } catch (error) {
    const reason = (error instanceof Error ? error.message : String(error)).replace(/\.+$/, '')
    const hint = cmd.usesManagePy ? ` Is the python input (${opts.python}) right?` : ''
    return failed(
      name,
      cmd.display,
      Date.now() - started,
      `Could not start ${cmd.display}: ${reason}.${hint}`
    )
  }

  const durationMs = Date.now() - started
  const findings = parseCheckOutput(name, combined, exitCode, {
    projectDir: path.resolve(opts.workingDirectory),
    repoRoot: path.resolve(opts.repoRoot)
  })
  return {
    name,
    command: cmd.display,
    outcome: exitCode === 0 ? 'passed' : 'failed',
    durationMs,
    findings,
    tail: lastLines(combined)
  }
}

/** Runs the selected checks one after another, in the order given (duplicates once). */
export async function runChecks(opts: RunChecksOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  for (const name of [...new Set(opts.checks)]) {
    const display = checkCommand(name, opts.python, opts.testCommand).display
    const result = await core.group(`${name}: ${display}`, async () => {
      const r = await runOne(name, opts)
      const seconds = (r.durationMs / 1000).toFixed(1)
      core.info(`${name} ${r.outcome} in ${seconds}s with ${r.findings.length} finding(s)`)
      return r
    })
    results.push(result)
  }
  return results
}
