/**
 * The manifest agrees with what `git archive` writes (issue 15, item 5), checked against real git and GNU tar:
 * export-ignore leaves a file out, export-subst, eol conversion and a smudge filter (as LFS uses) give a file
 * the hash of its archived bytes, and an incremental archive holds exactly the bytes a whole one would.
 */
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { parseTree } from '../../src/release/incremental.js'
import { archive, archivedManifest, describeRelease } from '../../src/release/source.js'
import { tarEntries } from '../../src/release/tar.js'

const base = mkdtempSync(join(tmpdir(), 'dd-archive-'))
const repo = join(base, 'repo')
afterAll(() => rmSync(base, { recursive: true, force: true }))
const git = (...args: string[]): string =>
  execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]).toString()
const write = (path: string, text: string | Buffer): void => {
  mkdirSync(dirname(join(repo, path)), { recursive: true })
  writeFileSync(join(repo, path), text)
}
const blob = (data: Buffer): string =>
  createHash('sha1')
    .update(Buffer.concat([Buffer.from(`blob ${data.length}\0`), data]))
    .digest('hex')

/** Unpacks a tar(.gz) with GNU tar and returns each file's and link's git blob hash. */
function unpacked(archiveBytes: Buffer, name: string): Record<string, string> {
  const dir = join(base, name)
  mkdirSync(dir)
  const gz = archiveBytes[0] === 0x1f && archiveBytes[1] === 0x8b
  execFileSync('tar', [gz ? '-xzf' : '-xf', '-', '-C', dir], { input: archiveBytes })
  const out: Record<string, string> = {}
  const walk = (rel: string): void => {
    for (const entry of execFileSync('ls', ['-A', join(dir, rel)])
      .toString()
      .split('\n')
      .filter(Boolean)) {
      const p = rel ? `${rel}/${entry}` : entry
      const st = lstatSync(join(dir, p))
      if (st.isSymbolicLink()) out[p] = blob(Buffer.from(readlinkSync(join(dir, p))))
      else if (st.isDirectory()) walk(p)
      else out[p] = blob(readFileSync(join(dir, p)))
    }
  }
  walk('')
  return out
}

const long = `${'deep/'.repeat(25)}file with a long path.txt`
const veryLong = `dir/${'n'.repeat(150)}.txt`
beforeAll(() => {
  mkdirSync(repo)
  git('init', '-q', '-b', 'main')
  git('config', 'filter.upper.smudge', 'tr a-z A-Z')
  git('config', 'filter.upper.clean', 'cat')
  write(
    '.gitattributes',
    'secret.txt export-ignore\nversion.txt export-subst\ncrlf.txt eol=crlf\n*.up filter=upper\n'
  )
  write('secret.txt', 'not for servers\n')
  write('version.txt', 'commit $Format:%H$\n')
  write('crlf.txt', 'one\ntwo\n')
  write('big.up', 'lower case, made upper by the filter\n')
  write('plain.txt', 'as is\n')
  write(long, 'pax header path\n')
  symlinkSync('plain.txt', join(repo, 'link'))
  // a name too long for ustar's fields (git writes a pax header) and a link target too long for its field
  write(veryLong, 'pax path\n')
  symlinkSync(`${'../'.repeat(40)}target`, join(repo, 'long-link'))
  git('add', '-A')
  git('commit', '-q', '-m', 'v1')
})

const full = async (): Promise<Buffer> => {
  const listing = git('ls-tree', '-r', '-z', '--full-tree', 'HEAD')
  const a = await archive({
    name: 'r',
    revision: git('rev-parse', 'HEAD').trim(),
    treeish: 'HEAD',
    repoRoot: repo,
    venvKey: 'k',
    hasRequirements: false,
    tree: await archivedManifest(repo, 'HEAD', listing)
  })
  const [bytes] = await Promise.all([buffer(a.stream), a.done])
  return bytes
}

test('each manifest record carries the hash of the bytes git archive writes; export-ignore is left out', async () => {
  const listing = git('ls-tree', '-r', '-z', '--full-tree', 'HEAD')
  const manifest = parseTree(await archivedManifest(repo, 'HEAD', listing))
  const real = unpacked(execFileSync('git', ['-C', repo, 'archive', '--format=tar', 'HEAD']), 'oracle')
  expect(Object.fromEntries(manifest.map(e => [e.path, e.sha]))).toEqual(real)
  const gitSha = Object.fromEntries(parseTree(listing).map(e => [e.path, e.sha]))
  const converted = manifest.filter(e => e.sha !== gitSha[e.path]).map(e => e.path)
  expect(converted.sort()).toEqual(['big.up', 'crlf.txt', 'version.txt'])
  expect(manifest.map(e => e.path)).not.toContain('secret.txt')
  expect(manifest.map(e => e.path)).toEqual(
    expect.arrayContaining([long, veryLong, 'link', 'long-link', 'plain.txt'])
  )
  expect(manifest.find(e => e.path === 'link')!.mode).toBe('120000')
  // describeRelease makes the same manifest
  expect((await describeRelease(repo, 'r', { python: 'p', options: [], pipArgs: [] })).tree).toBe(
    await archivedManifest(repo, 'HEAD', listing)
  )
})

test('the whole archive holds the manifest it describes; an incremental one holds the same bytes for what it sends', async () => {
  const whole = unpacked(await full(), 'whole')
  const manifest = readFileSync(join(base, 'whole', '.deploy-manifest'), 'utf8')
  expect(Object.fromEntries(parseTree(manifest).map(e => [e.path, e.sha]))).toEqual(
    Object.fromEntries(Object.entries(whole).filter(([p]) => p !== '.deploy-manifest'))
  )
  const source = {
    name: 'r',
    revision: git('rev-parse', 'HEAD').trim(),
    treeish: 'HEAD',
    repoRoot: repo,
    venvKey: 'k',
    hasRequirements: false,
    tree: manifest
  }
  const reuse = ['plain.txt', long, 'link', veryLong]
  const a = await archive(source, reuse)
  const [bytes] = await Promise.all([buffer(a.stream), a.done])
  expect(a.bytes()).toBe(bytes.length)
  const part = unpacked(bytes, 'part')
  const expected = Object.fromEntries(
    Object.entries(whole).filter(([p]) => p !== '.deploy-manifest' && !reuse.includes(p))
  )
  expect(part).toEqual(expected)
  // export-subst is expanded in what is sent (it needs the commit, which a bare tree has not)
  expect(readFileSync(join(base, 'part', 'version.txt'), 'utf8')).toBe(`commit ${source.revision}\n`)
})

test("a failing filter (as a failing LFS fetch) rejects done with git's message", async () => {
  git('config', 'filter.upper.smudge', 'false')
  git('config', 'filter.upper.required', 'true')
  const listing = git('ls-tree', '-r', '-z', '--full-tree', 'HEAD')
  await expect(archivedManifest(repo, 'HEAD', listing)).rejects.toThrow(
    /git archive failed.*smudge filter upper failed/s
  )
  const a = await archive(
    {
      name: 'r',
      revision: 'x',
      treeish: 'HEAD',
      repoRoot: repo,
      venvKey: 'k',
      hasRequirements: false,
      tree: ''
    },
    ['plain.txt']
  )
  const [bytes] = await Promise.all([
    buffer(a.stream),
    expect(a.done).rejects.toThrow(/smudge filter upper failed/)
  ])
  // what reached the host fails to unpack there, though the entries before the failure make a valid tar
  mkdirSync(join(base, 'failed'))
  expect(() =>
    execFileSync('tar', ['-xzf', '-', '-C', join(base, 'failed')], { input: bytes, stdio: 'pipe' })
  ).toThrow(/trailing garbage/)
  git('config', 'filter.upper.smudge', 'tr a-z A-Z')
})

test('the tar reader passes git archive output through byte for byte, however it is cut into chunks', async () => {
  const tar = execFileSync('git', ['-C', repo, 'archive', '--format=tar', 'HEAD'])
  for (const max of [1, 7, 511, 513, 4096]) {
    const chunks: Buffer[] = []
    for (let at = 0; at < tar.length;) {
      const n = 1 + Math.floor(Math.random() * max)
      chunks.push(tar.subarray(at, at + n))
      at += n
    }
    const seen: string[] = []
    const all = await buffer(
      Readable.from(chunks).pipe(tarEntries({ onEntry: e => void seen.push(`${e.type} ${e.path}`) }))
    )
    expect(all.equals(tar)).toBe(true)
    expect(seen).toEqual(expect.arrayContaining(['0 plain.txt', `0 ${veryLong}`, '2 long-link', '5 deep/']))
    const dropped = await buffer(
      Readable.from(chunks).pipe(tarEntries({ keep: e => e.path !== veryLong && e.path !== 'long-link' }))
    )
    const listed = execFileSync('tar', ['-tf', '-'], { input: dropped }).toString().split('\n')
    expect(listed).toEqual(expect.arrayContaining(['plain.txt', long, 'link']))
    expect(listed).not.toContain(veryLong)
    expect(listed).not.toContain('long-link')
  }
})

test('an archive nobody reads (the host refused the release) settles once stopped', async () => {
  const source = {
    name: 'r',
    revision: git('rev-parse', 'HEAD').trim(),
    treeish: 'HEAD',
    repoRoot: repo,
    venvKey: 'k',
    hasRequirements: false,
    tree: ''
  }
  // more than the streams hold, less than they and the pipe hold together: git is done, the data is not
  write('random.bin', randomBytes(120 * 1024))
  git('add', '-A')
  git('commit', '-q', '-m', 'random')
  source.revision = git('rev-parse', 'HEAD').trim()
  for (const reuse of [undefined, ['plain.txt']]) {
    const a = await archive(source, reuse)
    await new Promise(r => setTimeout(r, 500)) // git has written all it had into the pipes by now
    a.stop()
    const settled = await Promise.race([
      a.done.then(
        () => 'settled',
        () => 'settled'
      ),
      new Promise(r => setTimeout(() => r('still pending after 3 s'), 3000))
    ])
    expect(settled).toBe('settled')
  }
})

test("git's children (filters, LFS) never see the action's inputs or the runner's tokens", async () => {
  const seen = join(base, 'filter-env.txt')
  git('config', 'filter.upper.smudge', `env > ${seen}; tr a-z A-Z`)
  git('config', 'filter.upper.required', 'true')
  const before = { ...process.env }
  process.env['INPUT_SSH-KEY'] = 'key-in-the-action-memory'
  process.env.ACTIONS_RUNTIME_TOKEN = 'runner-token'
  process.env.DJANGO_SECRET_KEY = 'job-env-is-fine'
  try {
    const listing = git('ls-tree', '-r', '-z', '--full-tree', 'HEAD')
    await archivedManifest(repo, 'HEAD', listing)
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in before)) delete process.env[k]
    git('config', 'filter.upper.smudge', 'tr a-z A-Z')
  }
  const env = readFileSync(seen, 'utf8')
  expect(env).toContain('DJANGO_SECRET_KEY=job-env-is-fine')
  expect(env).not.toContain('key-in-the-action-memory')
  expect(env).not.toContain('runner-token')
})
