/**
 * The release as it leaves the runner: the files git tracks in working-directory at HEAD, streamed as a
 * tar.gz, and a key for its virtualenv (equal keys mean the dependencies did not change).
 */
import { execFile, spawn } from 'node:child_process'
import { createHash, randomBytes, type Hash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { Transform, Writable, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { promisify } from 'node:util'
import { MANIFEST, parseTree, treeRecords } from './incremental.js'
import { tarEntries, type TarEntry } from './tar.js'
import { logicalLines, pathWords, requirementClosure, type RequirementClosure } from './requirements.js'
import { checkEnvironment } from '../django/env.js'

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
  /**
   * The release's manifest (what it is made of, kept on the server): `git ls-tree -r -z` records of its tree,
   * each file's hash taken over the bytes git archive writes for it; files git archive leaves out are left out.
   */
  tree: string
  /** What the virtualenv is made of, line by line, for growing a copy of the live one: see depsOf(). */
  deps?: Deps
  /** What the user should know about the release (shown as warnings). */
  warnings?: string[]
}

/**
 * What a virtualenv was made from, so a later one can start as a copy of it and let pip add what is new:
 * `basis` hashes what must be equal (Python, venv-options, pip-args, the option lines of every requirements
 * file: `--index-url`, `--find-links`, `-r`, …, and every constraints file); `lines` are what may only grow:
 * `r <requirement>` for each requirement line of every requirements file the closure holds (nested ones too)
 * and `l <git ls-tree line>` for each tracked file the requirements name (a wheel added to vendor/ is a new
 * line; a changed one changes its line). None unless every requirement is an exact pin (`name==1.2`: a looser
 * line, a local path or an editable install would not come out of pip over a copy as out of a clean build),
 * and none when an include is out of the runner's sight (a URL, an absolute path).
 */
export interface Deps {
  basis: string
  lines: string[]
}

/** `name[extras]==version` (or `===`), with environment markers. */
const EXACT_PIN = /^[A-Za-z0-9][\w.-]*(\[[^\]]*\])?\s*===?\s*[\w.!+-]+\s*(;.*)?$/

export function depsOf(
  venv: { python: string; options: string[]; pipArgs: string[] },
  requirements: string | RequirementClosure,
  local: string
): Deps | undefined {
  const closure =
    typeof requirements === 'string'
      ? { files: [{ path: 'requirements.txt', text: requirements, constraint: false }], external: [] }
      : requirements
  if (closure.external.length) return undefined
  const all = closure.files.filter(f => !f.constraint).flatMap(f => logicalLines(f.text))
  const constraints = closure.files.filter(f => f.constraint).map(f => [f.path, logicalLines(f.text)])
  const options = all.filter(line => line.startsWith('-'))
  const reqs = all.filter(line => !line.startsWith('-'))
  if (options.some(o => /^(-e|--editable)\b/.test(o))) return undefined
  // Exact pins only: pip leaves an installed version that still satisfies a looser line, where a clean
  // virtualenv would take the newest.
  if (!reqs.every(r => EXACT_PIN.test(r.replace(/\s+--hash[= ]\S+/g, '')))) return undefined
  // A constraint that changes (even one that only narrows) changes what pip picks for an unpinned
  // dependency of a pin: part of the basis, so a change builds the virtualenv anew.
  const basis = createHash('sha256')
    .update(
      JSON.stringify([
        venv.python,
        venv.options,
        venv.pipArgs,
        options,
        ...(constraints.length ? [constraints] : [])
      ])
    )
    .digest('hex')
    .slice(0, 16)
  const files = local.split('\n').filter(Boolean)
  return { basis, lines: [...new Set([...reqs.map(r => `r ${r}`), ...files.map(f => `l ${f}`)])] }
}

/**
 * Reads a file of the release from git (blob by blob, as tracked at HEAD); a symlink is followed inside the
 * release, as pip on the server would. Undefined when the release has no such file.
 */
function reader(cwd: string, listing: string): (path: string) => Promise<string | undefined> {
  const entries = new Map(parseTree(listing).map(e => [e.path, e]))
  return async path => {
    for (let hops = 0; hops < 10; hops++) {
      const e = entries.get(path)
      if (!e) return undefined
      const text = await git(cwd, 'cat-file', 'blob', e.sha)
      if (e.mode !== '120000') return text
      path = posix.normalize(posix.join(posix.dirname(path), text))
    }
    return undefined
  }
}

/**
 * Git runs filters the runner's git config names (LFS, smudge): it gets the environment the checks get, never the
 * action's inputs (which the action keeps in its own memory after its start-up re-exec).
 */
function gitEnvironment(): Record<string, string> {
  return checkEnvironment(process.env)
}

/** Runs git in `cwd` (with the job's environment, less the step's own); its stdout, or an error naming the command. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  return gitWith(cwd, {}, ...args)
}

async function gitWith(cwd: string, env: Record<string, string>, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('git', ['-C', cwd, ...args], {
      maxBuffer: 256 * 1024 * 1024,
      env: { ...gitEnvironment(), ...env }
    })
    return stdout
  } catch (e) {
    const err = e as { stderr?: string; message: string }
    throw new Error(`git ${args[0]} failed in ${cwd}: ${(err.stderr || err.message).trim()}`)
  }
}

/**
 * The virtualenv key and what the virtualenv is made of: requirements.txt and every file it includes, the
 * tracked files they name, Python, venv-options and pip-args.
 */
async function dependencies(
  cwd: string,
  treeish: string,
  files: string,
  venv: { python: string; options: string[]; pipArgs: string[] }
): Promise<Pick<ReleaseSource, 'venvKey' | 'hasRequirements' | 'deps'> & { warnings: string[] }> {
  const tree = async (...paths: string[]): Promise<string> =>
    paths.length ? git(cwd, 'ls-tree', '-r', '--full-tree', treeish, '--', ...paths) : ''
  const hasRequirements = parseTree(files).some(e => e.path === 'requirements.txt')
  const closure = hasRequirements
    ? await requirementClosure(reader(cwd, files), 'requirements.txt', venv.pipArgs)
    : { files: [], external: [] }
  const requirements = closure.files[0]?.text ?? ''
  // Local paths named by the requirements or pip-args (./vendor/pkg, wheels/, -r base.txt) are part of
  // the dependencies: their tracked contents go into the key too. A nested file's paths are looked for
  // beside it (pip's rule for --find-links) and in the release (where pip runs).
  const candidates = [
    ...pathWords(requirements),
    ...pathWords(venv.pipArgs.join(' ')),
    ...closure.files
      .slice(1)
      .flatMap(f => pathWords(f.text).flatMap(t => [t, posix.join(posix.dirname(f.path), t)]))
  ]
  const tokens = candidates
    .map(t =>
      t
        .replace(/^file:(\/\/)?/, '')
        .replace(/^\.\//, '')
        .replace(/\/$/, '')
    )
    .filter(t => t && !t.startsWith('-') && !t.startsWith('/') && !t.includes('..') && /^[\w.@/+-]+$/.test(t))
  const local = tokens.length ? await tree(...new Set(tokens.slice(0, 400))) : ''
  const warnings: string[] = []
  // Included files beyond requirements.txt go into the key (alone, it keeps the key it always had). What
  // pip fetches from a URL or reads from an absolute path on the server cannot be known here: such a
  // virtualenv is built anew at every deploy, never reused stale.
  const nested = closure.files.slice(1).map(f => [f.path, f.constraint, f.text])
  if (closure.external.length)
    warnings.push(
      `requirements include ${closure.external.join(', ')}: their content is not in the release, so the virtualenv is built anew at each deploy`
    )
  const venvKey = createHash('sha256')
    .update(
      JSON.stringify([
        venv.python,
        venv.options,
        venv.pipArgs,
        requirements,
        local,
        ...(nested.length ? [nested] : []),
        ...(closure.external.length ? [randomBytes(16).toString('hex')] : [])
      ])
    )
    .digest('hex')
    .slice(0, 16)
  // The requirement files themselves are in the key; for growing a copy, their lines speak for them (a pin added
  // to requirements/base.txt may grow a copy as one added to requirements.txt does).
  const own = new Set(closure.files.map(f => f.path))
  const named = local
    .split('\n')
    .filter(line => !own.has(line.slice(line.indexOf('\t') + 1)))
    .join('\n')
  const deps = hasRequirements ? depsOf(venv, closure, named) : undefined
  return { venvKey, hasRequirements, deps, warnings }
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
  const files = await git(workingDirectory, 'ls-tree', '-r', '-z', '--full-tree', treeish)
  const { venvKey, hasRequirements, deps, warnings } = await dependencies(
    workingDirectory,
    treeish,
    files,
    venv
  )
  const tree = await archivedManifest(repoRoot, treeish, files)
  return { name, revision, treeish, repoRoot, venvKey, hasRequirements, tree, deps, warnings }
}

/** Runs `git archive --format=tar` of the release; `done` rejects with git's message if git fails. */
function gitArchive(source: { repoRoot: string; treeish: string }, extra: string[] = [], format = 'tar') {
  const child = spawn(
    'git',
    ['-C', source.repoRoot, 'archive', `--format=${format}`, ...extra, source.treeish],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: gitEnvironment()
    }
  )
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
  const stop = (): void => {
    if (child.exitCode !== null || child.signalCode !== null) return
    stopped = true
    child.stdout.destroy()
    child.kill('SIGKILL')
  }
  return { child, done, stop }
}

/**
 * The manifest of the release as git archive writes it: each file of `listing` (`git ls-tree -r -z`) with the
 * hash, as git hashes a blob, of the bytes the archive holds for it (export-subst expanded, eol converted,
 * filters such as LFS applied), and without the files the archive leaves out (export-ignore). So the host
 * reuses a file only when its live copy is what the archive would bring.
 */
export async function archivedManifest(repoRoot: string, treeish: string, listing: string): Promise<string> {
  const algorithm = /^\S+ \S+ [0-9a-f]{64}\t/.test(listing) ? 'sha256' : 'sha1'
  const hashes = new Map<string, string>()
  const open = new Map<TarEntry, Hash>()
  const blob = (e: TarEntry): Hash => {
    let h = open.get(e)
    if (!h) {
      const size = e.type === '2' ? Buffer.byteLength(e.linkname) : e.size
      h = createHash(algorithm).update(`blob ${size}\0`)
      open.set(e, h)
    }
    return h
  }
  const entries = tarEntries({
    keep: () => false,
    onData: (e, chunk) => void blob(e).update(chunk),
    onEntry: e => {
      if (e.type !== '0' && e.type !== '2' && e.type !== '7') return
      const h = blob(e)
      if (e.type === '2') h.update(e.linkname)
      hashes.set(e.path, h.digest('hex'))
      open.delete(e)
    }
  })
  const git = gitArchive({ repoRoot, treeish })
  await Promise.all([
    pipeline(git.child.stdout, entries, new Writable({ write: (_c, _e, cb) => cb() })),
    git.done
  ])
  return treeRecords(listing)
    .flatMap(record => {
      const m = /^(\d+) blob [0-9a-f]+\t(.*)$/s.exec(record)
      if (!m) return [record]
      const hash = hashes.get(m[2])
      return hash ? [`${m[1]} blob ${hash}\t${m[2]}`] : []
    })
    .map(r => `${r}\0`)
    .join('')
}

/**
 * Streams the release as tar.gz from `git archive`; `done` rejects if git fails. Without `reuse` the archive
 * holds every file and the release's manifest. With `reuse` (paths the host takes, unchanged, from its live
 * release; it already has the manifest) it holds every other file: git's own archive of the release with the
 * reused entries left out, so every other file is the bytes a whole archive would hold (export-subst, eol,
 * filters and export-ignore as in the manifest). `stop()` ends it early: the remote command ended without
 * reading it all (a refused release name), and git must not stay blocked on a full pipe.
 */
export async function archive(
  source: ReleaseSource,
  reuse?: string[]
): Promise<{ stream: Readable; done: Promise<void>; bytes(): number; stop(): void }> {
  let work: string | undefined
  let filtered: Promise<void> = Promise.resolve()
  let stopping = false
  let git: ReturnType<typeof gitArchive>
  let out: Readable
  if (!reuse) {
    work = await mkdtemp(join(tmpdir(), 'django-deploy-archive-'))
    await writeFile(join(work, MANIFEST), source.tree)
    git = gitArchive(source, [`--add-file=${join(work, MANIFEST)}`], 'tar.gz')
    out = git.child.stdout
  } else {
    const skip = new Set(reuse)
    git = gitArchive(source)
    const gzip = createGzip()
    out = gzip
    // Output that is not a tar git would write fails the upload as git failing would (the host sees its end).
    filtered = pipeline(git.child.stdout, tarEntries({ keep: e => !skip.has(e.path) }), gzip).catch(
      (e: Error) => {
        if (stopping) return
        refuse()
        throw new Error(`git archive output could not be read: ${e.message}`)
      }
    )
  }
  const done = Promise.all([git.done, filtered])
    .then(() => undefined)
    .finally(() => work && rm(work, { recursive: true, force: true }))
  // A child's stdout stops counting as readable once git exits, before anyone read it; a pass-through holds
  // the data (with back-pressure) until the SSH channel consumes it, counting what went by.
  let bytes = 0
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length
      callback(null, chunk)
    }
  })
  // An archive cut short by a failing git (a missing object, a failing filter) can end on a tar entry boundary
  // and still be a valid gzip stream, which tar on the host unpacks without complaint: bytes after the gzip
  // stream make gunzip, and so the upload step, fail there and then.
  const refuse = (): void => {
    if (!counter.writableEnded && !counter.destroyed) counter.end(Buffer.from('\ngit archive failed\n'))
  }
  const stream = out.pipe(counter, { end: false })
  out.on('end', () =>
    done.then(
      () => void (counter.writableEnded || counter.destroyed || counter.end()),
      () => refuse()
    )
  )
  return {
    stream,
    done,
    bytes: () => bytes,
    // Also when git is done: what it wrote may still sit in the streams, waiting for a reader that is gone.
    stop: () => {
      stopping = true
      stream.destroy()
      out.destroy()
      git.stop()
    }
  }
}
