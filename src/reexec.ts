/**
 * Start-up, before the rest of the action runs: the action re-executes itself (same PID, `process.execve`) with
 * an environment that holds none of the step's secrets. The project's code runs as the same user, so it can read
 * `/proc/<pid>/environ` of every ancestor, and that file shows the environment a process was *started* with:
 * the runner starts the action with its inputs (`INPUT_SSH-KEY`, …) and tokens (`ACTIONS_*`, `GITHUB_TOKEN`)
 * there. The inputs cross the exec in a 0600 file in a fresh 0700 directory (in memory, /dev/shm, when there is
 * one) that the new image reads and deletes before anything else runs; the runner's tokens are dropped (the action
 * reads its token from the `github-token` input). Then the inputs go back into `process.env`, in memory only,
 * so `core.getInput` works as before.
 */
import { lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

/** Names the file that carries the inputs across the exec; set only in the re-executed image. */
export const HANDOFF_VARIABLE = 'DJANGO_DEPLOY_INPUTS_FILE'

/** The environment to exec with, and the inputs that go through the file. */
export function splitEnvironment(env: NodeJS.ProcessEnv): {
  clean: Record<string, string>
  inputs: Record<string, string>
} {
  const clean: Record<string, string> = {}
  const inputs: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue
    if (/^INPUT_/i.test(name)) inputs[name] = value
    else if (!/^ACTIONS_/i.test(name) && !/^GITHUB_TOKEN$/i.test(name)) clean[name] = value
  }
  return { clean, inputs }
}

/** Whether the environment holds anything the re-exec would take out. */
export function holdsSecrets(env: NodeJS.ProcessEnv): boolean {
  return Object.keys(env).some(n => /^(INPUT_|ACTIONS_)/i.test(n) || /^GITHUB_TOKEN$/i.test(n))
}

/** Writes the inputs to a 0600 file in a new 0700 directory (in memory when /dev/shm is there); returns its path. */
export function writeHandoff(inputs: Record<string, string>, bases = ['/dev/shm', tmpdir()]): string {
  for (const [i, base] of bases.entries()) {
    let dir: string
    try {
      dir = mkdtempSync(path.join(base, 'django-deploy-'))
    } catch (e) {
      if (i < bases.length - 1) continue
      throw e
    }
    const file = path.join(dir, 'inputs.json')
    writeFileSync(file, JSON.stringify(inputs), { mode: 0o600, flag: 'wx' })
    return file
  }
  throw new Error('no directory for the inputs')
}

/**
 * Reads the inputs back and deletes the file and its directory. Only a file `writeHandoff` could have made is
 * taken: `inputs.json`, 0600, in a `django-deploy-XXXXXX` directory, 0700, both this user's; anything else (a
 * variable an earlier step set through GITHUB_ENV) is refused, and nothing of it is read or deleted.
 */
export function takeHandoff(file: string): Record<string, string> {
  const dir = path.dirname(file)
  const [f, d] = [lstatSync(file, { throwIfNoEntry: false }), lstatSync(dir, { throwIfNoEntry: false })]
  const uid = process.getuid?.()
  const ours =
    path.isAbsolute(file) &&
    path.basename(file) === 'inputs.json' &&
    /^django-deploy-[A-Za-z0-9]{6}$/.test(path.basename(dir)) &&
    d?.isDirectory() &&
    (d.mode & 0o777) === 0o700 &&
    (f === undefined || (f.isFile() && (f.mode & 0o777) === 0o600)) &&
    [f?.uid, d.uid].every(u => u === undefined || uid === undefined || u === uid)
  if (!ours) throw new Error(`${HANDOFF_VARIABLE} names no file this action made: ${file}`)
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>
  } finally {
    rmSync(path.dirname(file), { recursive: true, force: true })
  }
}

type Execve = (file: string, args: string[], env: Record<string, string>) => never

/**
 * Runs at start-up: in the first image, re-executes without the secrets (never returns when it can); in the
 * re-executed one, takes the inputs back into `process.env`. Returns what it logs, if anything.
 */
export function reexecWithoutSecrets(): string | undefined {
  const handoff = process.env[HANDOFF_VARIABLE]
  if (handoff !== undefined) {
    delete process.env[HANDOFF_VARIABLE]
    // Only the re-executed image has it, and never beside an input: in the first image it was set by someone
    // else (an earlier step's GITHUB_ENV) and is ignored.
    if (!holdsSecrets(process.env)) {
      Object.assign(process.env, takeHandoff(handoff))
      return undefined
    }
  }
  if (!holdsSecrets(process.env)) return undefined
  const execve = (process as unknown as { execve?: Execve }).execve
  if (typeof execve !== 'function') {
    return (
      `Node ${process.version} has no process.execve: the action's inputs stay in its start-up environment, ` +
      `which the checks' code can read in /proc/${process.pid}/environ (GitHub runs this action on Node 24, ` +
      `which re-executes it without them).`
    )
  }
  const { clean, inputs } = splitEnvironment(process.env)
  const file = writeHandoff(inputs)
  try {
    execve.call(
      process,
      process.execPath,
      [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
      {
        ...clean,
        [HANDOFF_VARIABLE]: file
      }
    )
  } catch (e) {
    rmSync(path.dirname(file), { recursive: true, force: true })
    return `could not re-execute the action without its secrets (${(e as Error).message}); its inputs stay in /proc/${process.pid}/environ`
  }
  return undefined
}
