/**
 * The release as it leaves the runner: the files git tracks in working-directory at HEAD, streamed as a
 * tar.gz, and a key for its virtualenv (equal keys mean the dependencies did not change).
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { PassThrough, type Readable } from 'node:stream'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface ReleaseSource {
  /** Release name on the server. */
  name: string
  /** Full commit SHA the files come from. */
  revision: string
  /** `HEAD` or `HEAD:sub/dir` when the project is below the repository root. */
  treeish: string
  /** Absolute path of the repository root. */
  repoRoot: string
  /** Content hash of what the virtualenv is built from. */
  venvKey: string
  hasRequirements: boolean
}

async function git(cwd: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('git', ['-C', cwd, ...args], { maxBuffer: 64 * 1024 * 1024 })
    return stdout
  } catch (e) {
    const err = e as { stderr?: string; message: string }
    throw new Error(`git ${args[0]} failed in ${cwd}: ${(err.stderr || err.message).trim()}`)
  }
}

/** Describes the release; fails clearly when working-directory is not a git checkout. */
export async function describeRelease(
  workingDirectory: string,
  name: string,
  venv: { python: string; options: string[]; pipArgs: string[] }
): Promise<ReleaseSource> {
  let repoRoot: string
  try {
    repoRoot = (await git(workingDirectory, 'rev-parse', '--show-toplevel')).trim()
  } catch {
    throw new Error(
      `working-directory ${workingDirectory} is not inside a git checkout; the release is made of the files git tracks (run actions/checkout first)`
    )
  }
  const prefix = (await git(workingDirectory, 'rev-parse', '--show-prefix')).trim().replace(/\/$/, '')
  const revision = (await git(workingDirectory, 'rev-parse', 'HEAD')).trim()
  const treeish = prefix ? `HEAD:${prefix}` : 'HEAD'
  const tree = async (...paths: string[]): Promise<string> =>
    paths.length ? git(workingDirectory, 'ls-tree', '-r', '--full-tree', treeish, '--', ...paths) : ''

  const hasRequirements = (await tree('requirements.txt')).trim() !== ''
  const requirements = hasRequirements
    ? await git(workingDirectory, 'show', `HEAD:${prefix ? `${prefix}/` : ''}requirements.txt`)
    : ''
  // Local paths named by the requirements or pip-args (./vendor/pkg, wheels/, -r base.txt) are part of
  // the dependencies: their tracked contents go into the key too.
  const tokens = [...requirements.split(/\s+/), ...venv.pipArgs.flatMap(a => a.split('='))]
    .map(t =>
      t
        .replace(/^file:(\/\/)?/, '')
        .replace(/^\.\//, '')
        .replace(/\/$/, '')
    )
    .filter(t => t && !t.startsWith('-') && !t.startsWith('/') && !t.includes('..') && /^[\w.@/+-]+$/.test(t))
  const local = tokens.length ? await tree(...new Set(tokens.slice(0, 200))) : ''
  const venvKey = createHash('sha256')
    .update(JSON.stringify([venv.python, venv.options, venv.pipArgs, requirements, local]))
    .digest('hex')
    .slice(0, 16)
  return { name, revision, treeish, repoRoot, venvKey, hasRequirements }
}

/**
 * Streams the release as tar.gz from `git archive`; `done` rejects if git fails. `stop()` ends it early: the
 * remote command ended without reading it all (a refused release name), and git must not stay blocked on a
 * full pipe for ever.
 */
export function archive(source: ReleaseSource): { stream: Readable; done: Promise<void>; stop(): void } {
  const child = spawn('git', ['-C', source.repoRoot, 'archive', '--format=tar.gz', source.treeish], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  let stopped = false
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', code =>
      code === 0 || stopped
        ? resolve()
        : reject(new Error(`git archive failed (exit ${code}): ${stderr.trim()}`))
    )
  })
  // A child's stdout stops counting as readable once git exits, before anyone read it; a PassThrough holds
  // the data (with back-pressure) until the SSH channel consumes it.
  const stream = child.stdout.pipe(new PassThrough())
  return {
    stream,
    done,
    stop: () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      stopped = true
      stream.destroy()
      child.stdout.destroy()
      child.kill('SIGKILL')
    }
  }
}
