/**
 * Runs the built action the way GitHub does: `node dist/index.js` with inputs as INPUT_* variables and the
 * GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files, in a git repository the test made.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
export const DIST = join(ROOT, 'dist/index.js')

export interface ActionRun {
  code: number
  /** Everything the action printed (workflow commands included). */
  log: string
  outputs: Record<string, string>
  summary: string
  /** The action's peak resident memory (VmHWM) in KiB, when `measureMemory` asked for it. */
  peakRssKb?: number
}

export interface ActionOptions {
  workspace: string
  env?: Record<string, string>
  /** Called with the log as it grows; return true to kill the action (SIGKILL) right there. */
  killWhen?: (log: string) => boolean
  /** Called with the log as it grows and the action's process (to stop, continue or signal it by PID). */
  watch?: (log: string, child: ChildProcess) => void
  timeoutMs?: number
  /** The node binary to run the action with (default: the one running the tests). */
  node?: string
  /** The bundle to run (default: dist/index.js; the benchmark runs an older one beside it). */
  dist?: string
  /** Keep only the last this many characters of the log (for actions that print gigabytes). */
  maxLog?: number
  /** Sample the action's peak resident memory while it runs (`peakRssKb`). */
  measureMemory?: boolean
  /** Read the action's stdout slower than it can print (1 ms pause per chunk), as a busy runner might. */
  readSlowly?: boolean
}

/** The peak resident set (VmHWM, KiB) of a running process, or undefined once it is gone. */
function peakRss(pid: number | undefined): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

let node24Path: string | undefined
/** Node 24, the runtime GitHub uses for `runs.using: node24`, from the npm registry (cached by npx). */
export function node24(): string {
  node24Path ??= execFileSync(
    'npx',
    ['-y', '-p', 'node@24', 'node', '-e', 'process.stdout.write(process.execPath)'],
    {
      stdio: ['ignore', 'pipe', 'ignore']
    }
  ).toString()
  return node24Path
}

function parseOutputs(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  const re = /^([^<\n]+)<<(\S+)\n([\s\S]*?)\n\2$/gm
  for (const m of text.matchAll(re)) out[m[1]] = m[3]
  return out
}

export function inputEnv(inputs: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(inputs).map(([k, v]) => [`INPUT_${k.replace(/ /g, '_').toUpperCase()}`, v])
  )
}

export async function runAction(inputs: Record<string, string>, o: ActionOptions): Promise<ActionRun> {
  const files = mkdtempSync(join(tmpdir(), 'dd-run-'))
  const outputFile = join(files, 'output')
  const summaryFile = join(files, 'summary')
  writeFileSync(outputFile, '')
  writeFileSync(summaryFile, '')
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKSPACE: o.workspace,
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    GITHUB_REPOSITORY: 'acme/shop',
    GITHUB_EVENT_NAME: 'push',
    GITHUB_REF: 'refs/heads/main',
    GITHUB_SHA: execFileSync('git', ['-C', o.workspace, 'rev-parse', 'HEAD']).toString().trim(),
    GITHUB_RUN_ID: '4242',
    ...o.env,
    ...inputEnv(inputs)
  }
  const child: ChildProcess = spawn(o.node ?? process.execPath, [o.dist ?? DIST], {
    cwd: o.workspace,
    env,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let log = ''
  let killed = false
  let peakRssKb: number | undefined
  const sampler = o.measureMemory
    ? setInterval(() => (peakRssKb = Math.max(peakRssKb ?? 0, peakRss(child.pid) ?? 0)), 50)
    : undefined
  const grow = (c: Buffer): void => {
    log += c.toString()
    if (o.maxLog !== undefined && log.length > 2 * o.maxLog) log = log.slice(-o.maxLog)
    if (!killed && o.killWhen?.(log)) {
      killed = true
      child.kill('SIGKILL')
    }
    o.watch?.(log, child)
  }
  child.stdout!.on('data', grow)
  if (o.readSlowly) {
    child.stdout!.on('data', () => {
      child.stdout!.pause()
      setTimeout(() => child.stdout!.resume(), 1)
    })
  }
  child.stderr!.on('data', grow)
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 180_000)
  const code = await new Promise<number>(r => child.on('close', (c, sig) => r(c ?? (sig ? 137 : 1))))
  clearTimeout(timer)
  clearInterval(sampler)
  const result = {
    peakRssKb,
    code,
    log,
    outputs: parseOutputs(readFileSync(outputFile, 'utf8')),
    summary: readFileSync(summaryFile, 'utf8')
  }
  rmSync(files, { recursive: true, force: true })
  return result
}

/** A git repository holding a copy of the example project, for the action to release. */
export class Repo {
  readonly dir: string
  constructor(source = join(ROOT, 'example')) {
    this.dir = mkdtempSync(join(tmpdir(), 'dd-repo-'))
    cpSync(source, this.dir, { recursive: true, filter: s => !/db\.sqlite3$|__pycache__|\/\.env$/.test(s) })
    this.git('init', '-q', '-b', 'main')
    this.commit('v1')
  }
  git(...args: string[]): string {
    return execFileSync('git', [
      '-C',
      this.dir,
      '-c',
      'user.name=t',
      '-c',
      'user.email=t@t',
      ...args
    ]).toString()
  }
  write(path: string, content: string): this {
    writeFileSync(join(this.dir, path), content)
    return this
  }
  read(path: string): string {
    return readFileSync(join(this.dir, path), 'utf8')
  }
  commit(message: string): this {
    this.git('add', '-A')
    this.git('commit', '-q', '--allow-empty', '-m', message)
    return this
  }
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Fails with the end of the action's log, so a failed deploy says why. */
export function expectOk(r: ActionRun): void {
  if (r.code !== 0)
    throw new Error(
      `the action exited ${r.code}; last lines of its log:\n${r.log.split('\n').slice(-40).join('\n')}`
    )
}
