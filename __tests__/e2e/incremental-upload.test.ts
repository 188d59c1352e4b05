/**
 * Incremental upload, through the built action on real OpenSSH: only files whose content changed since the
 * live release cross the network; the rest are linked from it on the server, verified first, and the live
 * (previous) release stays byte for byte what it was.
 */
import { jest } from '@jest/globals'
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { lstatSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { deployInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })
const release = (name: string): string => join(t.deployPath, 'releases', name)
const live = (): string => readlinkSync(join(t.deployPath, 'current'))

/** Every file and link under dir (not .venv, .env or what Python and Django write), with its mode and content hash. */
function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name)
      const rel = relative(dir, p)
      if (/^(\.venv|\.env|media)$|__pycache__/.test(rel)) continue
      const st = lstatSync(p)
      if (st.isSymbolicLink()) out[rel] = `link ${readlinkSync(p)}`
      else if (st.isDirectory()) walk(p)
      else
        out[rel] =
          `${(st.mode & 0o7777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`
    }
  }
  walk(dir)
  return out
}

/** The release holds exactly what git has for the commit: every tracked file, as git hashes it. */
function expectSameAsGit(name: string): void {
  const tree = repo.git('ls-tree', '-r', '-z', 'HEAD').split('\0').filter(Boolean)
  expect(tree.length).toBeGreaterThan(10)
  for (const record of tree) {
    const [head, path] = record.split('\t')
    const [mode, , sha] = head.split(' ')
    const p = join(release(name), path)
    const data = mode === '120000' ? Buffer.from(readlinkSync(p)) : readFileSync(p)
    const blob = createHash('sha1')
      .update(Buffer.concat([Buffer.from(`blob ${data.length}\0`), data]))
      .digest('hex')
    expect(`${path} ${blob}`).toBe(`${path} ${sha}`)
    if (mode === '100755') expect(lstatSync(p).mode & 0o100).toBe(0o100)
  }
}

/** The action's own line: `<host>: N KiB sent for K of M files; R unchanged, taken from X`. */
function sent(r: ActionRun): { kib: number; files: number; of: number; reused: number } {
  const m = /: ([\d.]+) KiB sent for (\d+) of (\d+) files(?:; (\d+) unchanged)?/.exec(r.log)
  if (!m) throw new Error(`no upload line in the log:\n${r.log}`)
  return { kib: Number(m[1]), files: Number(m[2]), of: Number(m[3]), reused: Number(m[4] ?? 0) }
}

const deploy = (name: string, dir = repo.dir): Promise<ActionRun> =>
  runAction(deployInputs(t, { mode: 'deploy', checks: 'none', 'release-name': name }), {
    workspace: dir,
    env: TAG(name)
  })

beforeAll(async () => {
  t = await startTarget({ name: 'ddinc' })
  repo = new Repo()
  // 4 MB that does not compress: the upload's size shows whether it was sent.
  writeFileSync(join(repo.dir, 'static-blob.bin'), randomBytes(4 * 1024 * 1024))
  repo.write('run-me.sh', '#!/bin/sh\necho ok\n')
  execFileSync('chmod', ['+x', join(repo.dir, 'run-me.sh')])
  repo.write(`it's $(id) a "name".txt`, 'hostile name\n')
  execFileSync('ln', ['-s', 'static-blob.bin', join(repo.dir, 'blob-link')])
  repo.commit('v1 with a large file, an executable, a symlink and a hostile name')
  await writeServerEnv(t)
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a one-file change sends that file; the rest is taken from the live release, which stays unchanged', async () => {
  const first = await deploy('v1')
  expectOk(first)
  const full = sent(first)
  expect(full.reused).toBe(0)
  expect(full.kib).toBeGreaterThan(4000)
  const before = fingerprint(release('v1'))

  repo.write(
    'pages/templates/pages/index.html',
    `${repo.read('pages/templates/pages/index.html')}\n<!-- v2 -->\n`
  )
  repo.commit('v2: one template changed')
  const second = await deploy('v2')
  expectOk(second)
  const inc = sent(second)
  expect(inc.files).toBe(1)
  expect(inc.reused).toBe(inc.of - 1)
  expect(inc.kib).toBeLessThan(full.kib / 50)
  expect(live()).toBe('releases/v2')
  expectSameAsGit('v2')
  // The previous release, the one a rollback goes back to, is exactly what it was.
  expect(fingerprint(release('v1'))).toEqual(before)
})

test('a file changed on the server in the live release is sent again, with a warning, never reused', async () => {
  const edited = join(release('v2'), 'static-blob.bin')
  const hotfix = Buffer.concat([readFileSync(edited).subarray(0, 1024), Buffer.from('edited on the server')])
  writeFileSync(edited, hotfix)
  repo.write('README.md', 'v3\n')
  repo.commit('v3')
  const r = await deploy('v3')
  expectOk(r)
  expect(r.log).toMatch(/1 file\(s\) of the live release differ from what was deployed.*static-blob\.bin/)
  expect(sent(r).files).toBe(2)
  expect(sent(r).kib).toBeGreaterThan(4000)
  expectSameAsGit('v3')
  // The live release was left as the person made it: the deploy reads it, never writes it.
  expect(readFileSync(edited).equals(hotfix)).toBe(true)
})

test('a project unrelated to the live release deploys in full and correctly', async () => {
  const other = new Repo()
  try {
    other.write('static-blob.bin', 'not the same content at all\n')
    other.commit('unrelated history, same names, other content')
    const r = await runAction(deployInputs(t, { mode: 'deploy', checks: 'none', 'release-name': 'v4' }), {
      workspace: other.dir,
      env: TAG('v4')
    })
    expectOk(r)
    const s = sent(r)
    // Only files with the very same content were reused (the example's unchanged files), nothing else.
    expect(readFileSync(join(release('v4'), 'static-blob.bin'), 'utf8')).toBe('not the same content at all\n')
    expect(s.files + s.reused).toBe(s.of)
    const mine = repo
    repo = other
    try {
      expectSameAsGit('v4')
    } finally {
      repo = mine
    }
  } finally {
    other.remove()
  }
})
