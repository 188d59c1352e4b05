/**
 * The built action (dist/index.js) on the stand-in GitHub API: `comment: always | on-failure | never`,
 * `comment-key` (one comment per matrix job), annotations capped at GitHub's per-step limits with the count of
 * those left out in the log and the summary, and `github-deployment: false` creating no GitHub deployment.
 * The checks are real Django checks on the example project (Debian's /usr/bin/python3).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startFakeGitHub, type FakeGitHub } from '../helpers/fake-github.js'
import { Repo, runAction } from '../helpers/action.js'

let gh: FakeGitHub
let repo: Repo
let keyDir: string
let passingTests: string

const BROKEN_TESTS = (n: number) =>
  '\n\nclass Broken(TestCase):\n' +
  Array.from(
    { length: n },
    (_, i) => `    def test_broken_${i}(self):\n        self.assertEqual(${i}, -1)\n`
  ).join('')

function prEnv(pr: number): Record<string, string> {
  const event = join(keyDir, `event-${pr}.json`)
  writeFileSync(event, JSON.stringify({ pull_request: { number: pr } }))
  return {
    GITHUB_EVENT_NAME: 'pull_request',
    GITHUB_REF: `refs/pull/${pr}/merge`,
    GITHUB_EVENT_PATH: event,
    GITHUB_API_URL: gh.url
  }
}
const inputs = (over: Record<string, string> = {}) => ({
  python: '/usr/bin/python3',
  checks: 'check, test',
  'github-token': 'ghs_comment_modes_token',
  ...over
})
function setFailing(n: number): void {
  repo.write('pages/tests.py', passingTests + (n ? BROKEN_TESTS(n) : ''))
  repo.commit(n ? `${n} failing tests` : 'tests pass')
}

beforeAll(async () => {
  gh = await startFakeGitHub()
  repo = new Repo()
  passingTests = repo.read('pages/tests.py')
  keyDir = mkdtempSync(join(tmpdir(), 'dd-comment-'))
})

afterAll(async () => {
  await gh?.close()
  repo?.remove()
  rmSync(keyDir, { recursive: true, force: true })
})

test('comment: never posts nothing, even for a failed run', async () => {
  setFailing(1)
  const r = await runAction(inputs({ comment: 'never' }), { workspace: repo.dir, env: prEnv(21) })
  expect(r.code).toBe(1)
  expect(r.summary).toContain('Django check: failed')
  expect(gh.comments.get('acme/shop#21') ?? []).toHaveLength(0)
  expect(gh.requests.filter(q => q.path.includes('/issues/21/'))).toEqual([])
})

test('comment: on-failure posts for a failure, and a later passing run updates that comment instead of leaving it', async () => {
  const env = prEnv(22)
  setFailing(0)
  const passing = await runAction(inputs({ comment: 'on-failure' }), { workspace: repo.dir, env })
  expect(passing.code).toBe(0)
  expect(gh.comments.get('acme/shop#22') ?? []).toHaveLength(0)

  setFailing(1)
  const failing = await runAction(inputs({ comment: 'on-failure' }), { workspace: repo.dir, env })
  expect(failing.code).toBe(1)
  expect(gh.comments.get('acme/shop#22')).toHaveLength(1)
  const id = gh.comments.get('acme/shop#22')![0].id
  expect(gh.comments.get('acme/shop#22')![0].body).toContain('Django check: failed')

  setFailing(0)
  const fixed = await runAction(inputs({ comment: 'on-failure' }), { workspace: repo.dir, env })
  expect(fixed.code).toBe(0)
  expect(gh.comments.get('acme/shop#22')).toHaveLength(1)
  expect(gh.comments.get('acme/shop#22')![0]).toMatchObject({
    id,
    body: expect.stringContaining('Django check: passed')
  })
})

test('comment-key keeps one comment per matrix job, each updated in place', async () => {
  const env = prEnv(23)
  setFailing(0)
  for (const key of ['py3.11', 'py3.12']) {
    expect((await runAction(inputs({ 'comment-key': key }), { workspace: repo.dir, env })).code).toBe(0)
  }
  const comments = () => gh.comments.get('acme/shop#23') ?? []
  expect(comments()).toHaveLength(2)
  expect(comments().map(c => c.body.split('\n')[0])).toEqual([
    '<!-- django-deploy:checks:py3.11 -->',
    '<!-- django-deploy:checks:py3.12 -->'
  ])
  expect(comments()[0].body).toContain('comment-key: py3.11')
  setFailing(1)
  expect((await runAction(inputs({ 'comment-key': 'py3.11' }), { workspace: repo.dir, env })).code).toBe(1)
  expect(comments()).toHaveLength(2)
  expect(comments()[0].body).toContain('Django check: failed')
  expect(comments()[1].body).toContain('Django check: passed')
  // a job without a key has its own comment too, not one of the keyed ones
  setFailing(0)
  expect((await runAction(inputs(), { workspace: repo.dir, env })).code).toBe(0)
  expect(comments()).toHaveLength(3)
  expect(comments()[0].body).toContain('Django check: failed')
})

test("annotations stop at GitHub's 10 errors per step (one kept for the failure), and the rest are counted", async () => {
  setFailing(14)
  const r = await runAction(inputs({ comment: 'never' }), { workspace: repo.dir, env: prEnv(24) })
  expect(r.code).toBe(1)
  const errors = r.log.split('\n').filter(l => l.startsWith('::error'))
  expect(errors).toHaveLength(10)
  expect(errors[9]).toMatch(/^::error::Django checks failed: test/)
  expect(r.log).toContain(
    '5 more findings were not annotated (5 errors): GitHub shows at most 10 annotations'
  )
  expect(r.summary).toContain('_5 findings were not annotated on the code')
  expect(r.summary).toContain('#### Findings (14)')
})

test('github-deployment: false creates no GitHub deployment; the default does', async () => {
  const key = join(keyDir, 'id')
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key])
  const deployInputs = {
    mode: 'deploy',
    python: '/usr/bin/python3',
    checks: 'none',
    'github-token': 'ghs_comment_modes_token',
    // nothing listens there: the deploy fails at connect, after the GitHub deployment would have been created
    hosts: '127.0.0.1:9',
    user: 'deploy',
    'ssh-key': readFileSync(key, 'utf8'),
    'host-fingerprint': 'SHA256:' + 'A'.repeat(43),
    'deploy-path': '/srv/app'
  }
  const env = { GITHUB_REF: 'refs/tags/v9.9.9', GITHUB_EVENT_NAME: 'push', GITHUB_API_URL: gh.url }
  gh.deployments.length = 0
  const off = await runAction({ ...deployInputs, 'github-deployment': 'false' }, { workspace: repo.dir, env })
  expect(off.code).toBe(1)
  expect(gh.deployments).toHaveLength(0)
  const on = await runAction(deployInputs, { workspace: repo.dir, env })
  expect(on.code).toBe(1)
  expect(gh.deployments).toHaveLength(1)
  expect(gh.deployments[0].statuses.map(s => s.state)).toEqual(['in_progress', 'failure'])
})
