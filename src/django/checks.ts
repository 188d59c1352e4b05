/**
 * Runs the selected Django checks on the runner and turns each into a CheckResult. Reporting to GitHub
 * (annotations, summary) happens elsewhere: this module only logs the commands' output in groups.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { constants, tmpdir } from 'node:os'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { actionsLog, type ActionsLog } from '../github/log.js'
import { q } from '../remote/quote.js'
import type { CheckResult, Finding } from '../report.js'
import { INPUTS, type CheckName } from '../settings.js'
import { checkEnvironment } from './env.js'
import { parseCheckOutput } from './parse.js'
import { manifestTestCommand, probeProject, removeMadeFiles, type ProjectFacts } from './project.js'

const osSignals = constants.signals as Record<string, number>
/** The `check-timeout` input's default, for callers that give none. */
const DEFAULT_TIMEOUT_SECONDS = Number(INPUTS['check-timeout'].default)

/** What the checks write to the job log (the action's log edge, or a test's). */
export type ChecksLog = Pick<ActionsLog, 'startGroup' | 'endGroup' | 'info' | 'data' | 'quiet'>

export interface RunChecksOptions {
  /** Directory holding manage.py; the commands run there. */
  workingDirectory: string
  python: string
  checks: CheckName[]
  /** Replaces `python manage.py test`; run with `bash -c`. */
  testCommand?: string
  /** Repository root: finding paths are relative to it. */
  repoRoot: string
  /** The job's environment; all of it but the step's own variables (see env.ts) reaches the commands. */
  runnerEnv: Record<string, string | undefined>
  /** Extra environment for the commands, on top of the job's. */
  env?: Record<string, string>
  /** Seconds one check may run before its process group is killed (default: the check-timeout input's). */
  timeoutSeconds?: number
  /** The job log (default: the action's). */
  log?: ChecksLog
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
/** Output kept from a check: its start (where Django reports system-check errors) and its end. */
const HEAD_CHARS = 64 * 1024
const TAIL_CHARS = 1024 * 1024

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
    display: [python, ...args[name]].map(q).join(' '),
    usesManagePy: true
  }
}

export function lastLines(text: string, n = TAIL_LINES): string {
  const all = text.replace(/\r\n?/g, '\n').replace(/\n+$/, '').split('\n')
  return all.slice(-n).join('\n')
}

/**
 * A check's output as kept in memory: the first HEAD_CHARS characters and a tail of TAIL_CHARS to 2 × TAIL_CHARS,
 * so a command printing gigabytes is parsed and reported from its start and its end in bounded memory.
 */
export class KeptOutput {
  private head = ''
  private tail = ''
  private dropped = 0

  add(text: string): void {
    let rest = text
    if (this.head.length < HEAD_CHARS) {
      const take = rest.slice(0, HEAD_CHARS - this.head.length)
      this.head += take
      rest = rest.slice(take.length)
    }
    if (rest === '') return
    this.tail += rest
    if (this.tail.length > 2 * TAIL_CHARS) {
      const cut = this.tail.length - TAIL_CHARS
      this.dropped += cut
      this.tail = this.tail.slice(cut)
    }
  }

  /** All of it, or its start and end (each cut at a line break) around a line saying how much was left out. */
  text(): string {
    if (this.dropped === 0) return this.head + this.tail
    const headEnd = this.head.lastIndexOf('\n') + 1
    const tailStart = this.tail.indexOf('\n') + 1
    const head = headEnd > 0 ? this.head.slice(0, headEnd) : `${this.head}\n`
    const tail = tailStart > 0 && tailStart < this.tail.length ? this.tail.slice(tailStart) : this.tail
    const left = this.dropped + (this.head.length - head.length) + (this.tail.length - tail.length)
    return `${head}[… ${left} characters of output left out …]\n${tail}`
  }
}

function failed(
  log: ChecksLog,
  name: CheckName,
  command: string,
  durationMs: number,
  message: string
): CheckResult {
  // python, working-directory and test-command may come from a pull request's deploy.yml: data, not commands.
  log.data(message)
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

/** What one process did: its exit code (or why it never started) and its output, both streams in order. */
interface Ran {
  exitCode: number
  combined: string
  timedOut: boolean
  startError?: Error
}

/**
 * Reads a check's two streams, chunk by chunk as they arrive, into a KeptOutput and echoes them to the log.
 * Backpressure: writes to a pipe the runner reads slower than the check prints would queue in memory without
 * bound, so reading stops until the log has drained (the check then blocks on its own writes).
 */
class Echo {
  readonly kept = new KeptOutput()
  endsWithNewLine = true
  private readonly decoders = [new StringDecoder('utf8'), new StringDecoder('utf8')]
  private waiting = false

  constructor(private readonly streams: Readable[]) {
    streams.forEach((s, i) => s.on('data', (c: Buffer) => this.take(this.decoders[i].write(c))))
  }

  private take(text: string): void {
    if (!text) return
    this.kept.add(text)
    this.endsWithNewLine = text.endsWith('\n')
    if (process.stdout.write(text) || this.waiting) return
    this.waiting = true
    for (const s of this.streams) s.pause()
    process.stdout.once('drain', () => {
      this.waiting = false
      for (const s of this.streams) s.resume()
    })
  }

  /** Takes what the decoders still hold (a cut multi-byte character); returns all that was kept. */
  finish(): string {
    this.take(this.decoders.map(d => d.end()).join(''))
    return this.kept.text()
  }
}

/**
 * Runs one command in its own process group, echoing its output to the log as data: between
 * `::stop-commands::<token>` and `::<token>::`, so a line the project prints (`::add-mask::`, `::error::`,
 * `::set-output …`) is never taken as a workflow command. The token is random per check, so the project cannot
 * print it to end the quiet part early. stdin is /dev/null: a command that prompts gets EOF at once (and there
 * is no pipe to write to, so an early exit cannot cause EPIPE). On timeout the whole group is killed, so a test
 * runner's children or a background server do not outlive the check either.
 */
async function spawnQuiet(
  log: ChecksLog,
  tool: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
  timeoutMs: number
): Promise<Ran> {
  let echo: Echo | undefined
  const endQuiet = log.quiet()
  try {
    return await new Promise<Ran>(resolve => {
      let child: ChildProcess | undefined
      const group = (signal: NodeJS.Signals): void => {
        try {
          if (child?.pid !== undefined) process.kill(-child.pid, signal)
        } catch {
          // The group is already gone.
        }
      }
      // The check has its own process group, so the runner's SIGINT/SIGTERM on cancel would not reach it:
      // pass the cancel on to the whole group, then let the signal end this process as it would have.
      // Listening before the spawn: a signal that lands while the child is being started waits for the handler
      // instead of ending this process at once and leaving the new group behind.
      const cancel = (signal: NodeJS.Signals): void => {
        group('SIGKILL')
        stopForwarding()
        process.kill(process.pid, signal)
      }
      const stopForwarding = (): void => {
        process.removeListener('SIGINT', cancel)
        process.removeListener('SIGTERM', cancel)
      }
      process.once('SIGINT', cancel)
      process.once('SIGTERM', cancel)
      try {
        child = spawn(tool, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
      } catch (e) {
        stopForwarding()
        resolve({ exitCode: -1, combined: '', timedOut: false, startError: e as Error })
        return
      }
      let timedOut = false
      let killer: NodeJS.Timeout | undefined
      const timer = setTimeout(() => {
        timedOut = true
        group('SIGTERM')
        killer = setTimeout(() => group('SIGKILL'), 5_000)
      }, timeoutMs)
      const output = (echo = new Echo([child.stdout!, child.stderr!]))
      // A process left behind holding the pipes would keep 'close' from ever firing: once the check's own
      // process has exited, what is left of its group goes too.
      child.on('exit', () => group('SIGKILL'))
      child.on('error', e => {
        stopForwarding()
        clearTimeout(timer)
        clearTimeout(killer)
        resolve({ exitCode: -1, combined: output.kept.text(), timedOut: false, startError: e })
      })
      child.on('close', (code, signal) => {
        stopForwarding()
        clearTimeout(timer)
        clearTimeout(killer)
        const exitCode = code ?? (signal ? 128 + (osSignals[signal] ?? 0) : 1)
        resolve({ exitCode, combined: output.finish(), timedOut })
      })
    })
  } finally {
    if (echo && !echo.endsWithNewLine) process.stdout.write('\n')
    endQuiet()
  }
}

/** The environment the project's commands run with: the job's (less the step's own variables) and `env`. */
export function commandEnv(opts: Pick<RunChecksOptions, 'runnerEnv' | 'env'>): Record<string, string> {
  return {
    ...checkEnvironment(opts.runnerEnv),
    // Unbuffered, so the two streams interleave as they would in a terminal.
    PYTHONUNBUFFERED: '1',
    // No __pycache__ of the checks' making in the checkout.
    PYTHONDONTWRITEBYTECODE: '1',
    ...opts.env
  }
}

/**
 * Runs the check's command; `manage.py test` with a manifest storage after `collectstatic` into a temporary
 * STATIC_ROOT (removed afterwards), as the storage has no manifest before that.
 */
async function runCommand(
  name: CheckName,
  cmd: CheckCommand,
  opts: RunChecksOptions,
  log: ChecksLog,
  facts?: ProjectFacts
): Promise<Ran> {
  const env = commandEnv(opts)
  const timeoutMs = (opts.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000
  if (name !== 'test' || !cmd.usesManagePy || !facts?.manifestStorage) {
    return spawnQuiet(log, cmd.tool, cmd.args, opts.workingDirectory, env, timeoutMs)
  }
  const root = mkdtempSync(path.join(tmpdir(), 'django-deploy-static-'))
  log.info(
    `${facts.manifestStorage} keeps a manifest that only collectstatic makes: collectstatic into a ` +
      `temporary STATIC_ROOT (${root}) first, and the tests use it.`
  )
  try {
    const run = manifestTestCommand(opts.python, root, cmd.display)
    return await spawnQuiet(log, run.tool, run.args, opts.workingDirectory, env, timeoutMs)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

async function runOne(
  name: CheckName,
  opts: RunChecksOptions,
  log: ChecksLog,
  facts?: ProjectFacts
): Promise<CheckResult> {
  const cmd = checkCommand(name, opts.python, opts.testCommand)
  const started = Date.now()
  const problem = precondition(cmd, opts.workingDirectory)
  if (problem) return failed(log, name, cmd.display, 0, problem)

  const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS
  const ran = await runCommand(name, cmd, opts, log, facts)
  if (ran.startError) {
    const reason = ran.startError.message.replace(/\.+$/, '')
    const hint = cmd.usesManagePy ? ` Is the python input (${opts.python}) right?` : ''
    return failed(
      log,
      name,
      cmd.display,
      Date.now() - started,
      `Could not start ${cmd.display}: ${reason}.${hint}`
    )
  }
  const durationMs = Date.now() - started
  if (ran.timedOut) {
    const message = `${cmd.display} was still running after ${timeoutSeconds} s (check-timeout) and was killed with every process it started.`
    log.data(message)
    return {
      name,
      command: cmd.display,
      outcome: 'failed',
      durationMs,
      findings: [{ level: 'error', title: `${name} timed out`, message }],
      tail: lastLines(`${ran.combined}\n${message}`)
    }
  }
  const findings = parseCheckOutput(name, ran.combined, ran.exitCode, {
    projectDir: path.resolve(opts.workingDirectory),
    repoRoot: path.resolve(opts.repoRoot)
  })
  return {
    name,
    command: cmd.display,
    outcome: ran.exitCode === 0 ? 'passed' : 'failed',
    durationMs,
    findings,
    tail: lastLines(ran.combined)
  }
}

/** Runs the selected checks one after another, in the order given (duplicates once). */
export async function runChecks(opts: RunChecksOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  const log = opts.log ?? actionsLog()
  const facts = await readProject(opts)
  const before = new Set(facts?.sqliteFiles.filter(f => existsSync(f)))
  for (const name of [...new Set(opts.checks)]) {
    const display = checkCommand(name, opts.python, opts.testCommand).display
    log.startGroup(`${name}: ${display}`)
    try {
      const r = await runOne(name, opts, log, facts)
      const seconds = (r.durationMs / 1000).toFixed(1)
      log.info(`${name} ${r.outcome} in ${seconds}s with ${r.findings.length} finding(s)`)
      results.push(r)
    } finally {
      log.endGroup()
    }
  }
  // A check that connects (makemigrations --check) creates the settings' SQLite file: not the checks' to leave.
  for (const f of removeMadeFiles(facts?.sqliteFiles ?? [], before))
    log.info(`Removed ${path.relative(opts.workingDirectory, f) || f}, which the checks created.`)
  return results
}

/** The project's facts, when a check runs manage.py and the settings load (else the checks say what is wrong). */
async function readProject(opts: RunChecksOptions): Promise<ProjectFacts | undefined> {
  const managePy = opts.checks.some(n => checkCommand(n, opts.python, opts.testCommand).usesManagePy)
  if (!managePy || !existsSync(path.join(opts.workingDirectory, 'manage.py'))) return undefined
  return probeProject(opts.python, opts.workingDirectory, commandEnv(opts))
}
