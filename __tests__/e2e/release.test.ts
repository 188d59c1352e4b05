/**
 * scripts/release.sh in a temporary clone of this repository (node_modules linked in, so the real bundle runs):
 * the dry run prints the tags it would create and move and changes nothing; a real run tags vX.Y.Z and moves vX
 * in a bare "origin"; a stale dist/, a version that is not newer, a missing CHANGELOG section and a dirty tree are
 * refused before anything is tagged.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import {
  copyFileSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  appendFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO_ROOT } from '../helpers/django.js'

const base = mkdtempSync(join(tmpdir(), 'dd-release-'))
const clone = join(base, 'clone')
const origin = join(base, 'origin.git')
const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Release Test',
  GIT_AUTHOR_EMAIL: 'release@test.invalid',
  GIT_COMMITTER_NAME: 'Release Test',
  GIT_COMMITTER_EMAIL: 'release@test.invalid',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_CONFIG_NOSYSTEM: '1'
}
const git = (...args: string[]): string =>
  execFileSync('git', ['-c', 'safe.directory=*', ...args], {
    cwd: clone,
    env: gitEnv,
    encoding: 'utf8'
  }).trim()
const release = (...args: string[]) => {
  const r = spawnSync('bash', ['scripts/release.sh', ...args], { cwd: clone, env: gitEnv, encoding: 'utf8' })
  return { status: r.status, out: r.stdout + r.stderr }
}
const tags = (repo: string) =>
  execFileSync(
    'git',
    ['-c', 'safe.directory=*', 'for-each-ref', '--format=%(refname:short) %(*objectname)', 'refs/tags'],
    {
      cwd: repo,
      env: gitEnv,
      encoding: 'utf8'
    }
  ).trim()

let first: string
let head: string

beforeAll(() => {
  execFileSync('git', ['-c', 'safe.directory=*', 'clone', '-q', '--no-local', REPO_ROOT, clone], {
    env: gitEnv
  })
  execFileSync('git', ['init', '-q', '--bare', origin], { env: gitEnv })
  git('remote', 'set-url', 'origin', origin)
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(clone, 'node_modules'))
  // The scripts as they are in this checkout (committed or not): they are what is under test.
  for (const f of ['scripts/release.sh', 'scripts/bundle.sh'])
    copyFileSync(join(REPO_ROOT, f), join(clone, f))
  // node_modules is a link in the clone: git must not see it as an untracked file.
  appendFileSync(join(clone, '.git/info/exclude'), '/node_modules\n')
  first = git('rev-parse', 'HEAD~1')
  git('tag', '-a', 'v0.1.0', '-m', 'v0.1.0', first)
  git('tag', '-a', 'v0', '-m', 'v0', first)
  // The release commit: version, changelog section, a dist/ built from this src/ (whatever HEAD carried).
  const pkg = JSON.parse(readFileSync(join(clone, 'package.json'), 'utf8'))
  pkg.version = '0.2.0'
  writeFileSync(join(clone, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
  const changelog = readFileSync(join(clone, 'CHANGELOG.md'), 'utf8')
  writeFileSync(
    join(clone, 'CHANGELOG.md'),
    changelog.replace('## [Unreleased]', '## [Unreleased]\n\n## [0.2.0] - 2026-12-02')
  )
  execFileSync('bash', ['scripts/bundle.sh'], { cwd: clone, env: gitEnv })
  git('add', '-A')
  git('commit', '-q', '-m', 'Release 0.2.0')
  head = git('rev-parse', 'HEAD')
})

afterAll(() => rmSync(base, { recursive: true, force: true }))

test('the dry run prints the tag it creates and the major tag it moves, and changes nothing', () => {
  const before = tags(clone)
  const r = release('0.2.0', '--dry-run')
  expect(r.out).toContain(`tag v0.2.0: create at ${head}`)
  expect(r.out).toContain(`tag v0: move from ${first} to ${head}`)
  expect(r.out).toContain('dry run: nothing was tagged or pushed')
  expect(r.status).toBe(0)
  expect(tags(clone)).toBe(before)
  expect(tags(origin)).toBe('')
})

test('refused before tagging: not newer, bad version, no changelog section, package.json mismatch', () => {
  expect(release('0.1.0', '--dry-run')).toMatchObject({
    status: 1,
    out: expect.stringContaining('v0.1.0 is not newer than the latest release tag v0.1.0')
  })
  expect(release('0.0.9', '--dry-run').out).toContain(
    'v0.0.9 is not newer than the latest release tag v0.1.0'
  )
  expect(release('1.2', '--dry-run').out).toContain("version '1.2' is not X.Y.Z")
  expect(release('01.2.0', '--dry-run').out).toContain("version '01.2.0' is not X.Y.Z")
  expect(release('0.3.0', '--dry-run').out).toContain('package.json says version 0.2.0, not 0.3.0')
  expect(release('0.2.0', '--dry-run', '--force').out).toContain('unknown option --force')
})

test('a dirty tree and a stale dist/ are refused', () => {
  writeFileSync(
    join(clone, 'dist/index.js'),
    readFileSync(join(clone, 'dist/index.js'), 'utf8') + '\n// stale\n'
  )
  expect(release('0.2.0', '--dry-run')).toMatchObject({
    status: 1,
    out: expect.stringContaining('uncommitted changes')
  })
  git('commit', '-q', '-am', 'stale dist')
  const r = release('0.2.0', '--dry-run')
  expect(r.out).toContain("dist/ as committed is not what src/ builds: run 'npm run bundle'")
  expect(r.status).toBe(1)
  git('reset', '-q', '--hard', head)
  const changelog = readFileSync(join(clone, 'CHANGELOG.md'), 'utf8')
  writeFileSync(join(clone, 'CHANGELOG.md'), changelog.replace('## [0.2.0] - 2026-12-02', ''))
  git('commit', '-q', '-am', 'no changelog section')
  expect(release('0.2.0', '--dry-run').out).toContain("CHANGELOG.md has no '## [0.2.0]' section")
  git('reset', '-q', '--hard', head)
  expect(tags(origin)).toBe('')
})

test('a real run tags v0.2.0 and moves v0 in the remote', () => {
  const r = release('0.2.0')
  expect(r.out).toContain('released v0.2.0; v0 now points at it')
  expect(r.status).toBe(0)
  expect(tags(origin).split('\n').sort()).toEqual([`v0 ${head}`, `v0.2.0 ${head}`])
  expect(release('0.2.0', '--dry-run').out).toContain(
    'v0.2.0 is not newer than the latest release tag v0.2.0'
  )
})
