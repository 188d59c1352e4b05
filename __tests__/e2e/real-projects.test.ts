/**
 * Issue 16 ("Real projects"), items 2 and 5, against the real sandbox (OpenSSH, Gunicorn, nginx, Django):
 * DEBUG on never goes live under the default deploy-check, a settings import error leads with its cause, and
 * a rollback's GitHub deployment records the commit of the release it puts back.
 */
import { jest } from '@jest/globals'
import { readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { versionMarker } from '../../sandbox/load.js'
import { liveInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'
import { startFakeGitHub } from '../helpers/fake-github.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
/** The commit release v1 was built from. */
let v1 = ''
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
const served = async (): Promise<string | undefined> => versionMarker((await httpGet(`${t.url}/`)).body)
// The runner's checks are off: only the server-side preflight stands between these releases and production.
const full = (extra: Record<string, string> = {}): Record<string, string> =>
  liveInputs(t, { checks: 'none', 'health-check-timeout': '10', ...extra })
/** The release's commit, then the repository back as it was before it. */
function refused(name: string, change: () => void): Promise<ActionRun> {
  change()
  repo.commit(name)
  return runAction(full(), { workspace: repo.dir, env: TAG(name) }).finally(() =>
    repo.git('revert', '--no-edit', 'HEAD')
  )
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddi15' })
  repo = new Repo()
  await writeServerEnv(t)
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('the first release goes live (its settings read DEBUG from the environment: off)', async () => {
  repo.write('VERSION', 'v1\n').commit('v1')
  v1 = repo.git('rev-parse', 'HEAD').trim()
  // Nothing serves yet: no health check on the first deploy.
  expectOk(await runAction(full({ 'health-check-url': '' }), { workspace: repo.dir, env: TAG('v1') }))
  await t.startGunicorn()
  expect(await served()).toBe('v1')
})

test('a release with DEBUG = True hard-coded in its settings is refused under the default deploy-check; the old one keeps serving', async () => {
  const r = await refused('v2-debug', () =>
    repo.write('mysite/settings.py', `${repo.read('mysite/settings.py')}\nDEBUG = True\n`)
  )
  expect(r.code).not.toBe(0)
  expect(r.outputs.deployed).toBe('false')
  expect(r.log).toMatch(/step deploy-check failed/)
  expect(r.log).toMatch(
    /security\.W018 refuses the release under deploy-check warn and fail \(only off skips it\)/
  )
  expect(r.log).not.toMatch(/step switch/)
  expect(live()).toBe('releases/v1')
  expect(await served()).toBe('v1')
  // deploy-check: off is the explicit opt-out (checked without letting it go live: dry run).
  repo.write('mysite/settings.py', `${repo.read('mysite/settings.py')}\nDEBUG = True\n`).commit('debug again')
  try {
    const off = await runAction(full({ 'deploy-check': 'off', 'dry-run': 'true' }), {
      workspace: repo.dir,
      env: TAG('v2-debug-off')
    })
    expectOk(off)
    expect(off.log).not.toMatch(/step deploy-check/)
  } finally {
    repo.git('revert', '--no-edit', 'HEAD')
  }
})

test("a release whose settings raise at import fails with the cause first: type, message, the project's file:line", async () => {
  const r = await refused('v3-broken', () =>
    repo
      .write('mysite/broken.py', 'raise RuntimeError("settings cannot import")\n')
      .write('mysite/settings.py', `${repo.read('mysite/settings.py')}\nimport mysite.broken  # noqa\n`)
  )
  expect(r.code).not.toBe(0)
  const error = r.log.split('\n').find(l => l.startsWith('::error::'))!
  // The annotation's text (new lines are %0A in a workflow command): the cause is the line after the step.
  const lines = decodeURIComponent(error.slice('::error::'.length)).split('\n')
  expect(lines[0]).toMatch(/^host 127\.0\.0\.1:\d+: step preflight failed \(exit 1\):$/)
  expect(lines[1]).toBe('RuntimeError: settings cannot import (at mysite/broken.py:1)')
  expect(error).not.toContain('<frozen importlib')
  expect(live()).toBe('releases/v1')
  expect(await served()).toBe('v1')
})

test("mode rollback's GitHub deployment records the commit of the release it puts back", async () => {
  repo.write('VERSION', 'v4\n').commit('v4')
  expectOk(await runAction(full(), { workspace: repo.dir, env: TAG('v4') }))
  expect(await served()).toBe('v4')
  const workflowCommit = repo.git('rev-parse', 'HEAD').trim()
  expect(workflowCommit).not.toBe(v1)
  const gh = await startFakeGitHub()
  const r = await runAction(full({ mode: 'rollback', 'github-token': 'ghs_rollback_token' }), {
    workspace: repo.dir,
    env: { GITHUB_API_URL: gh.url }
  }).finally(() => gh.close())
  expectOk(r)
  expect(r.outputs).toMatchObject({ release: 'v1', 'rolled-back': 'true' })
  expect(await served()).toBe('v1')
  expect(gh.deployments).toHaveLength(1)
  expect(gh.deployments[0]).toMatchObject({ ref: v1, environment: 'production' })
  expect(gh.deployments[0].body).toMatchObject({ description: 'rollback v1' })
  expect(gh.deployments[0].statuses.map(s => s.state)).toEqual(['in_progress', 'success'])
})
