/**
 * Issue 15 (trust, second pass), the release as it leaves the runner, end to end with the built action against
 * the sandbox target (real OpenSSH, pip, Gunicorn, nginx, Django):
 * - a pin bumped two includes down (requirements.txt → requirements/production.txt → base.txt) is installed
 *   and served, not hidden behind "requirements unchanged";
 * - files git archive converts (eol=crlf, export-subst, a smudge filter) and leaves out (export-ignore) are
 *   on the server as git archive writes them, and an incremental redeploy reuses what is unchanged and sends
 *   what is not;
 * - a failing `git archive` (a failing filter, as a failing LFS fetch) is a failed upload step with git's
 *   message: outputs and summary are written, the old release keeps serving, the lock is freed.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { deployInputs, liveInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'
import { buildWheel } from '../helpers/wheel.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })
const release = (name: string): string => join(t.deployPath, 'releases', name)
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await httpGet(`${t.url}${path}`)
  return { status: r.status, body: r.body }
}
/** Deploys HEAD as release `name` (the first deploy, before Gunicorn runs, without reload and health check). */
const deploy = (name: string, first = false): Promise<ActionRun> =>
  runAction(
    (first ? deployInputs : liveInputs)(t, { mode: 'deploy', checks: 'none', 'release-name': name }),
    {
      workspace: repo.dir,
      env: TAG(name)
    }
  )
/** The action's own line: `<host>: N KiB sent for K of M files; R unchanged, taken from X`. */
function sent(r: ActionRun): { files: number; of: number; reused: number } {
  const m = /: [\d.]+ KiB sent for (\d+) of (\d+) files(?:; (\d+) unchanged)?/.exec(r.log)
  if (!m) throw new Error(`no upload line in the log:\n${r.log}`)
  return { files: Number(m[1]), of: Number(m[2]), reused: Number(m[3] ?? 0) }
}
/** What `git archive` of the repository's HEAD writes for `path`. */
function archived(path: string): Buffer {
  return execFileSync('sh', [
    '-c',
    'git -C "$1" archive --format=tar HEAD -- "$2" | tar -xOf -',
    'sh',
    repo.dir,
    path
  ])
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

beforeAll(async () => {
  t = await startTarget({ name: 'ddi15rel' })
  repo = new Repo()
  await writeServerEnv(t)
  // cookiecutter-django's layout: requirements.txt → requirements/production.txt → requirements/base.txt,
  // the pin two levels down; both versions of the wheel are in vendor/ from the start.
  for (const v of ['1.0', '2.0']) buildWheel(join(repo.dir, 'vendor'), 'nestpin', v, `VERSION = '${v}'\n`)
  buildWheel(join(repo.dir, 'vendor'), 'nestadd', '1.0', '')
  mkdirSync(join(repo.dir, 'requirements'))
  repo.write('requirements.txt', '-r requirements/production.txt\n')
  repo.write('requirements/production.txt', '# production\n-rbase.txt\n')
  repo.write(
    'requirements/base.txt',
    '--no-index\n--find-links=../vendor\nsitebanner==1.0.0\ngunicorn-script==1.0.0\nnestpin==1.0\n'
  )
  repo.write(
    'pages/views.py',
    repo
      .read('pages/views.py')
      .replace(
        "return HttpResponse(settings.APP_VERSION, content_type='text/plain')",
        "import nestpin\n    return HttpResponse(f'{settings.APP_VERSION.strip()} nestpin {nestpin.VERSION}', content_type='text/plain')"
      )
  )
  repo.write('VERSION', 'v1\n').commit('nested requirements')
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a pin bumped two includes down is installed and served; one only added there grows a copy', async () => {
  expectOk(await deploy('v1', true))
  await t.startGunicorn()
  expect(await get('/version/')).toEqual({ status: 200, body: 'v1 nestpin 1.0' })
  repo.write(
    'requirements/base.txt',
    repo.read('requirements/base.txt').replace('nestpin==1.0', 'nestpin==2.0')
  )
  repo.commit('bump nestpin in requirements/base.txt only')
  const r = await deploy('v2')
  expectOk(r)
  expect(r.log).not.toMatch(/requirements unchanged/)
  expect(r.log).toMatch(/Successfully installed .*nestpin-2\.0/)
  expect(readlinkSync(join(release('v2'), '.venv'))).not.toBe(readlinkSync(join(release('v1'), '.venv')))
  expect(await get('/version/')).toEqual({ status: 200, body: 'v1 nestpin 2.0' })
  // A pin only added, two levels down: the live virtualenv's copy grows by it, as for requirements.txt.
  const before = readlinkSync(join(release('v2'), '.venv'))
  repo
    .write('requirements/base.txt', `${repo.read('requirements/base.txt')}nestadd==1.0\n`)
    .commit('add a pin')
  const grown = await deploy('v2b')
  expectOk(grown)
  expect(grown.log).toContain(`virtualenv copied from the live one (${before})`)
  expect(grown.log).toMatch(/^Successfully installed nestadd-1\.0$/m)
  const pip = await t.run(`${t.deployPath}/current/.venv/bin/pip list`)
  expect(pip.stdout).toMatch(/^nestadd\s+1\.0$/m)
  expect(pip.stdout).toMatch(/^nestpin\s+2\.0$/m)
  expect(await get('/version/')).toEqual({ status: 200, body: 'v1 nestpin 2.0' })
})

test('files git archive converts or leaves out are on the server as it writes them, and reused only when unchanged', async () => {
  repo.git('config', 'filter.upper.smudge', 'tr a-z A-Z')
  repo.git('config', 'filter.upper.clean', 'cat')
  repo.write(
    '.gitattributes',
    'crlf.txt eol=crlf\nstamp.txt export-subst\nsecret.txt export-ignore\n*.up filter=upper\n'
  )
  repo.write('crlf.txt', 'one\ntwo\n')
  repo.write('stamp.txt', 'commit $Format:%H$\n')
  repo.write('secret.txt', 'not for servers\n')
  repo.write('shout.up', 'made upper case by a smudge filter\n')
  repo.write('VERSION', 'v3\n').commit('attributes')
  const r3 = await deploy('v3')
  expectOk(r3)
  repo.write('VERSION', 'v4\n').commit('code only')
  const r4 = await deploy('v4')
  expectOk(r4)
  expect(await get('/version/')).toEqual({ status: 200, body: 'v4 nestpin 2.0' })
  const head = repo.git('rev-parse', 'HEAD').trim()
  for (const name of ['v3', 'v4']) {
    expect(existsSync(join(release(name), 'secret.txt'))).toBe(false)
    expect(readFileSync(join(release(name), '.deploy-manifest'), 'utf8')).not.toContain('secret.txt')
  }
  expect(readFileSync(join(release('v4'), 'crlf.txt'), 'utf8')).toBe('one\r\ntwo\r\n')
  expect(readFileSync(join(release('v4'), 'shout.up'), 'utf8')).toBe('MADE UPPER CASE BY A SMUDGE FILTER\n')
  expect(readFileSync(join(release('v4'), 'stamp.txt'), 'utf8')).toBe(`commit ${head}\n`)
  for (const path of ['crlf.txt', 'shout.up', 'stamp.txt', 'VERSION', 'manage.py'])
    expect([path, sha(readFileSync(join(release('v4'), path)))]).toEqual([path, sha(archived(path))])
  // Only what changed crossed the network (VERSION, and stamp.txt: its expansion names the new commit); the
  // converted files were taken from the live release (hard links to its files).
  expect(sent(r4).files).toBe(2)
  for (const path of ['crlf.txt', 'shout.up'])
    expect(statSync(join(release('v4'), path)).ino).toBe(statSync(join(release('v3'), path)).ino)
  expect(statSync(join(release('v4'), 'stamp.txt')).ino).not.toBe(
    statSync(join(release('v3'), 'stamp.txt')).ino
  )
})

test('a failing git archive is a failed upload step: report written, old release serving, lock freed', async () => {
  // A filter that works once (while the release is described) and then fails, as an LFS fetch can.
  const count = join(repo.dir, '..', `${repo.dir.split('/').pop()}-smudges`)
  repo.write('.gitattributes', `${repo.read('.gitattributes')}*.flaky filter=flaky\n`)
  repo.write('data.flaky', 'large file\n')
  repo.write('VERSION', 'v5\n').commit('a file behind a flaky filter')
  repo.git('config', 'filter.flaky.clean', 'cat')
  repo.git(
    'config',
    'filter.flaky.smudge',
    `sh -c 'n=$(cat ${count} 2>/dev/null || echo 0); echo $((n + 1)) > ${count}; [ "$n" -lt 1 ] && cat'`
  )
  repo.git('config', 'filter.flaky.required', 'true')
  try {
    const r = await deploy('v5')
    expect(r.code).not.toBe(0)
    expect(r.log).toMatch(/✗ upload failed after [\d.]+ s \(exit \d+\) the release archive could not be made/)
    expect(r.log).toMatch(/git archive failed \(exit 128\):[\s\S]*smudge filter flaky failed/)
    expect(r.outputs.deployed).toBe('false')
    expect(r.outputs.release).toBe('v5')
    expect(r.summary).toMatch(/\| upload \| ❌ failed \|/)
    expect(r.summary).toContain('Failed step upload on')
    expect(r.summary).toMatch(/smudge filter flaky failed/)
    expect(live()).toBe('releases/v4')
    expect(await get('/version/')).toEqual({ status: 200, body: 'v4 nestpin 2.0' })
  } finally {
    rmSync(count, { force: true })
    repo.git('config', '--unset', 'filter.flaky.required')
    repo.git('config', 'filter.flaky.smudge', 'cat')
  }
  // The lock was freed: the next deploy takes it at once and goes live.
  const next = await deploy('v6')
  expectOk(next)
  expect(next.log).toMatch(/lock taken/)
  expect(live()).toBe('releases/v6')
  expect(readFileSync(join(release('v6'), 'data.flaky'), 'utf8')).toBe('large file\n')
})
