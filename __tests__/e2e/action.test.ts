/**
 * The built action (dist/index.js) as GitHub runs it, in check mode on a pull request: real Django checks,
 * annotations, the job summary, outputs, and ONE PR comment updated in place on the stand-in GitHub API.
 */
import { jest } from '@jest/globals'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startFakeGitHub, type FakeGitHub } from '../helpers/fake-github.js'
import { Repo, runAction } from '../helpers/action.js'

jest.setTimeout(120_000)

let gh: FakeGitHub
let repo: Repo
let prEnv: Record<string, string>

beforeAll(async () => {
  gh = await startFakeGitHub()
  repo = new Repo()
  // A failing test and a debug setting left on (a missing migration is covered in django-checks.test.ts).
  repo.write(
    'pages/tests.py',
    repo.read('pages/tests.py') +
      '\n\nclass Broken(TestCase):\n    def test_fails(self):\n        self.assertEqual(1 + 1, 3)\n'
  )
  repo.commit('pr changes')
  const event = join(repo.dir, '.event.json')
  writeFileSync(event, JSON.stringify({ pull_request: { number: 7 } }))
  prEnv = {
    GITHUB_EVENT_NAME: 'pull_request',
    GITHUB_REF: 'refs/pull/7/merge',
    GITHUB_EVENT_PATH: event,
    GITHUB_API_URL: gh.url,
    DEBUG: '1'
  }
})

afterAll(async () => {
  await gh?.close()
  repo?.remove()
})

// DEBUG is the job's own variable (the job's `env:`): it reaches the project's checks.
const checkInputs = {
  python: '/usr/bin/python3',
  'github-token': 'ghs_test_token_value_123'
}

test('check mode on a pull request: findings annotated, summary written, one PR comment updated in place', async () => {
  // the runner-side deploy check is opt-in (the server-side one is deploy-check): asked for here
  const first = await runAction(
    { ...checkInputs, checks: 'check, deploy, migrations, test' },
    { workspace: repo.dir, env: prEnv }
  )
  expect(first.code).toBe(1)
  expect(first.outputs).toMatchObject({ mode: 'check', checks: 'failed', deployed: 'false' })
  // annotations: the failing test with its file and line, the deploy warning, the missing migration
  expect(first.log).toMatch(/::error [^\n]*file=pages\/tests\.py,line=\d+[^\n]*::AssertionError: 2 != 3/)
  expect(first.log).toMatch(/::warning title=deploy%3A security\.W018::You should not have DEBUG/)
  expect(first.log).toMatch(/::error::Django checks failed: deploy, test/)
  // No ssh-key in this pull-request job: no advice about deploy keys.
  expect(first.log).not.toContain('deploy key in a pull-request job')
  // the summary has the table of checks
  expect(first.summary).toMatch(/\| `test` \| ❌ failed \|/)
  expect(first.summary).toContain('security.W018')
  const key = 'acme/shop#7'
  expect(gh.comments.get(key)).toHaveLength(1)
  const id = gh.comments.get(key)![0].id

  // the PR is fixed: the same comment is updated, no second one appears
  repo.git('revert', '--no-edit', 'HEAD')
  const second = await runAction(
    { ...checkInputs, checks: 'check, migrations, test' },
    { workspace: repo.dir, env: prEnv }
  )
  expect(second.code).toBe(0)
  expect(second.outputs.checks).toBe('passed')
  expect(gh.comments.get(key)).toHaveLength(1)
  expect(gh.comments.get(key)![0].id).toBe(id)
  expect(gh.comments.get(key)![0].body).not.toContain('security.W018')
  const writes = gh.requests.filter(r => r.method !== 'GET').map(r => `${r.method} ${r.path}`)
  expect(writes).toEqual([
    `POST /repos/acme/shop/issues/7/comments`,
    `PATCH /repos/acme/shop/issues/comments/${id}`
  ])
  // the token went only into the Authorization header
  for (const r of gh.requests)
    expect(JSON.stringify({ ...r, headers: { ...r.headers, authorization: '' } })).not.toContain(
      'ghs_test_token_value_123'
    )
})

test('bad input fails before anything runs, naming each input, with no secret in the output', async () => {
  const r = await runAction(
    {
      mode: 'deploy',
      hosts: 'web1.example.com, bad host!',
      port: '70000',
      user: 'deploy',
      'ssh-key': 'hunter2-not-a-key',
      'known-hosts':
        'web1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm8Lb1YzFq1TVTY1QuJgXEZ4N6Q2kzWb0xwq1Zm1Yv3',
      'deploy-path': 'srv/app',
      'keep-releases': '-2'
    },
    { workspace: repo.dir, env: { GITHUB_REF: 'refs/tags/v1' } }
  )
  expect(r.code).toBe(1)
  const errors = r.log.split('\n').filter(l => l.startsWith('::error'))
  expect(errors.join('\n')).toMatch(/input 'port': port 70000 is out of range; expected 1–65535/)
  expect(errors.join('\n')).toMatch(
    /input 'hosts': "bad" is not a valid host|input 'hosts': "host!" is not a valid host/
  )
  expect(errors.join('\n')).toMatch(/input 'ssh-key': is not a private key/)
  expect(errors.join('\n')).toMatch(/input 'deploy-path': "srv\/app" is relative/)
  expect(errors.join('\n')).toMatch(/input 'keep-releases': -2 is negative/)
  expect(errors[errors.length - 1]).toMatch(
    /invalid input \(\d+ problems\); nothing was changed on any server/
  )
  const shown = r.log
    .split('\n')
    .filter(l => !l.startsWith('::add-mask::'))
    .join('\n')
  expect(shown).not.toContain('hunter2')
  expect(r.log).not.toMatch(/manage\.py/)
})

test('deploy on a pull request event is refused', async () => {
  const r = await runAction({ mode: 'deploy' }, { workspace: repo.dir, env: prEnv })
  expect(r.code).toBe(1)
  expect(r.log).toMatch(/::error[^\n]*mode deploy is refused on a pull_request event/)
})

test("the job's env: reaches the checks: SECRET_KEY and DJANGO_SECURE set there make check --deploy pass", async () => {
  const fresh = new Repo()
  try {
    const r = await runAction(
      // (Not the tests: the example's tests do not expect DJANGO_SECURE's HTTPS redirect.)
      { python: '/usr/bin/python3', checks: 'check, deploy, migrations' },
      {
        workspace: fresh.dir,
        env: {
          GITHUB_EVENT_NAME: 'pull_request',
          GITHUB_REF: 'refs/pull/7/merge',
          // What a workflow's `env:` gives every step of the job.
          SECRET_KEY: 'job-env-Secret-key-7a0e4d1f9c2b8e6a5d3c1f0e9b8a7d6c5e4f3a2b1c0d9e8f',
          DJANGO_SECURE: '1'
        }
      }
    )
    expect(r.log).not.toMatch(/security\.W0\d\d/)
    expect(r.outputs).toMatchObject({ mode: 'check', checks: 'passed' })
    expect(r.code).toBe(0)
  } finally {
    fresh.remove()
  }
})
