/**
 * runChecks against real Django projects made by `startproject` for each runner-side Django version: 4.2, 5.2
 * (bookworm's Python 3.11) and 6.1 (Python >= 3.12) from `bash scripts/django-versions.sh`, and Debian's 3.2. One project per version; its states
 * (secure settings or not, a model change, a failing test) are toggled in turn to keep the run short.
 * The project sits in `site/` under a temporary repo root, so finding paths must come out as `site/…`.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path, { join } from 'node:path'
import { runChecks } from '../../src/django/checks.js'
import { CHECK_NAMES } from '../../src/settings.js'
import { runnerDjangoVersions, SYSTEM_PYTHON } from '../helpers/django.js'

// Four checks of a real project take several seconds on a loaded machine: the top-level testTimeout in
// jest.config.js (not jest's 5 s default) applies.

const versions = runnerDjangoVersions()
const temps: string[] = []

afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

function tempRepo(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'django-checks-'))
  temps.push(dir)
  return dir
}

// Appended to settings.py: DJANGO_SECURE=1 turns on what `check --deploy` asks for.
const SECURE_SETTINGS = `
import os

if os.environ.get('DJANGO_SECURE') == '1':
    DEBUG = False
    SECRET_KEY = 'k3J9v!q2Lz8#pX4m@wR7tY1uE6oI0aS5dF-hG_jKlZxCvBnM%q'
    ALLOWED_HOSTS = ['example.com']
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Django 6.1's startproject sets a console MAILERS backend, which check --deploy reports as mail.E001;
    # older versions ignore the setting.
    MAILERS = {'default': {'BACKEND': 'django.core.mail.backends.smtp.EmailBackend'}}
`

const MODELS = `from django.db import models


class Page(models.Model):
    title = models.CharField(max_length=100)
`

const PASSING_TESTS = `from django.test import TestCase

from .models import Page


class PageTests(TestCase):
    def test_create(self):
        Page.objects.create(title='hi')
        self.assertEqual(Page.objects.count(), 1)
`

const FAILING_TEST = `

class BrokenTests(TestCase):
    def test_title(self):
        page = Page(title='hello')
        self.assertEqual(page.title, 'goodbye')
`

describe.each(versions)('Django $version', ({ version, python, env }) => {
  let repo: string
  let site: string
  const secure = { ...env, DJANGO_SECURE: '1' }
  const run = (checks: (typeof CHECK_NAMES)[number][], extraEnv: Record<string, string>) =>
    runChecks({
      workingDirectory: site,
      python: python,
      checks,
      repoRoot: repo,
      runnerEnv: process.env,
      env: extraEnv
    })

  beforeAll(() => {
    repo = tempRepo()
    site = path.join(repo, 'site')
    mkdirSync(site)
    const py = (...args: string[]) =>
      execFileSync(python, args, { cwd: site, env: { ...process.env, ...env }, stdio: 'pipe' })
    expect(py('-m', 'django', '--version').toString()).toMatch(
      new RegExp(`^${version.replace('.', '\\.')}\\.`)
    )
    py('-m', 'django', 'startproject', 'mysite', '.')
    py('manage.py', 'startapp', 'pages')
    const settings = path.join(site, 'mysite/settings.py')
    writeFileSync(
      settings,
      readFileSync(settings, 'utf8').replace(
        "'django.contrib.staticfiles',",
        "'django.contrib.staticfiles',\n    'pages',"
      ) + SECURE_SETTINGS
    )
    writeFileSync(path.join(site, 'pages/models.py'), MODELS)
    writeFileSync(path.join(site, 'pages/tests.py'), PASSING_TESTS)
    py('manage.py', 'makemigrations', 'pages', '-v', '0')
  })

  test('(a) with secure settings all four checks pass, without findings', async () => {
    const results = await run([...CHECK_NAMES], secure)
    expect(results.map(r => [r.name, r.outcome, r.findings])).toEqual([
      ['check', 'passed', []],
      ['deploy', 'passed', []],
      ['migrations', 'passed', []],
      ['test', 'passed', []]
    ])
    expect(results.map(r => r.command)).toEqual([
      `${python} manage.py check`,
      `${python} manage.py check --deploy --fail-level WARNING`,
      `${python} manage.py makemigrations --check --dry-run`,
      `${python} manage.py test --noinput`
    ])
    for (const r of results) expect(r.durationMs).toBeGreaterThan(0)
    expect(results[3].tail).toMatch(/Ran 1 test/)
  })

  test('(b) a model change without a migration fails migrations, naming the app and the file', async () => {
    const models = path.join(site, 'pages/models.py')
    appendFileSync(models, "    body = models.TextField(default='')\n")
    try {
      const [result] = await run(['migrations'], secure)
      expect(result.outcome).toBe('failed')
      expect(result.findings).toEqual([
        {
          level: 'error',
          title: 'missing migration: pages',
          message:
            "app 'pages' has model changes without a migration: Add field body to page. " +
            'Run `python manage.py makemigrations pages` and commit the result.',
          file: 'site/pages/migrations/0002_page_body.py'
        }
      ])
    } finally {
      writeFileSync(models, MODELS)
    }
  })

  test('(c) with startproject defaults (DEBUG on) deploy fails with security.W018; check still passes', async () => {
    const [check, deploy] = await run(['check', 'deploy'], env)
    expect(check.outcome).toBe('passed')
    expect(deploy.outcome).toBe('failed')
    expect(deploy.findings).toContainEqual({
      level: 'warning',
      title: 'security.W018',
      message: 'You should not have DEBUG set to True in deployment.'
    })
    expect(deploy.findings.map(f => f.title)).toContain('security.W009')
    expect(deploy.tail).toMatch(/System check identified \d+ issues/)
  })

  test('(d) a failing test fails test with its file (relative to the repo) and line', async () => {
    const tests = path.join(site, 'pages/tests.py')
    const content = PASSING_TESTS + FAILING_TEST
    writeFileSync(tests, content)
    const line = content.split('\n').findIndex(l => l.includes("'goodbye'")) + 1
    try {
      const [result] = await run(['test'], secure)
      expect(result.outcome).toBe('failed')
      expect(result.findings).toEqual([
        {
          level: 'error',
          title: 'test_title (pages.tests.BrokenTests)',
          message: "AssertionError: 'hello' != 'goodbye'\n- hello\n+ goodbye",
          file: 'site/pages/tests.py',
          line
        }
      ])
      expect(result.tail).toMatch(/FAILED \(failures=1\)/)
    } finally {
      writeFileSync(tests, PASSING_TESTS)
    }
  })
})

describe('without a Django project', () => {
  const anyVersion = versions[0]

  test('test-command replaces manage.py test and runs through bash', async () => {
    const repo = tempRepo()
    const [passing, failing] = [
      await runChecks({
        workingDirectory: repo,
        python: SYSTEM_PYTHON,
        checks: ['test'],
        testCommand: 'echo "ran in $PWD with $MARK"',
        repoRoot: repo,
        runnerEnv: process.env,
        env: { ...anyVersion.env, MARK: 'the env input' }
      }),
      await runChecks({
        workingDirectory: repo,
        python: SYSTEM_PYTHON,
        checks: ['test'],
        testCommand: 'echo "custom runner says no" >&2; exit 3',
        repoRoot: repo,
        runnerEnv: process.env
      })
    ].map(r => r[0])
    expect(passing).toMatchObject({ name: 'test', outcome: 'passed', findings: [] })
    expect(passing.command).toBe('echo "ran in $PWD with $MARK"')
    expect(passing.tail).toBe(`ran in ${repo} with the env input`)
    // Output nothing understands still explains the failure.
    expect(failing).toMatchObject({
      name: 'test',
      command: 'echo "custom runner says no" >&2; exit 3',
      outcome: 'failed',
      findings: [{ level: 'error', title: 'test failed (exit code 3)', message: 'custom runner says no' }]
    })
  })

  test("the checks see the job's environment, never the action's inputs, runner tokens or command files", async () => {
    const repo = tempRepo()
    const runnerEnv = {
      ...process.env,
      'INPUT_SSH-KEY': 'leak-ssh-key-1',
      'INPUT_SSH-KEY-PASSPHRASE': 'leak-passphrase-2',
      'INPUT_GITHUB-TOKEN': 'leak-token-3',
      ACTIONS_RUNTIME_TOKEN: 'leak-runtime-4',
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'leak-oidc-5',
      GITHUB_TOKEN: 'leak-gh-6',
      GITHUB_ENV: join(repo, 'github-env'),
      GITHUB_OUTPUT: join(repo, 'github-output'),
      GITHUB_REPOSITORY: 'acme/shop',
      DATABASE_URL: 'sqlite:///x',
      DJANGO_SECRET_KEY: 'the-job-env-secret-key'
    }
    const [r] = await runChecks({
      workingDirectory: repo,
      python: SYSTEM_PYTHON,
      checks: ['test'],
      testCommand: 'env -0 > seen-env',
      repoRoot: repo,
      runnerEnv
    })
    expect(r.outcome).toBe('passed')
    const dump = readFileSync(join(repo, 'seen-env'), 'utf8')
    const seen = Object.fromEntries(dump.split('\0').map(l => [l.split('=')[0], l.slice(l.indexOf('=') + 1)]))
    expect(seen).toMatchObject({
      PATH: process.env.PATH,
      GITHUB_REPOSITORY: 'acme/shop',
      DATABASE_URL: 'sqlite:///x',
      DJANGO_SECRET_KEY: 'the-job-env-secret-key'
    })
    expect(dump).not.toMatch(/leak-|INPUT_|ACTIONS_|GITHUB_TOKEN|GITHUB_ENV|GITHUB_OUTPUT/)
  })

  test('check-timeout kills the check and every process it started', async () => {
    const repo = tempRepo()
    const pids = join(repo, 'pids')
    const started = Date.now()
    const [r] = await runChecks({
      workingDirectory: repo,
      python: SYSTEM_PYTHON,
      checks: ['test'],
      // A child that ignores SIGTERM and a grandchild in the background: both must go.
      testCommand: `(trap '' TERM; sleep 300) & sh -c 'sleep 300 & echo $!' >> ${pids}; echo $! >> ${pids}; echo $$ >> ${pids}; echo started; sleep 300`,
      repoRoot: repo,
      runnerEnv: process.env,
      timeoutSeconds: 1
    })
    expect(Date.now() - started).toBeLessThan(60_000)
    expect(r).toMatchObject({
      outcome: 'failed',
      findings: [
        {
          level: 'error',
          title: 'test timed out',
          message: expect.stringMatching(/after 1 s \(check-timeout\)/)
        }
      ]
    })
    expect(r.tail).toMatch(/^started$/m)
    const list = readFileSync(pids, 'utf8').trim().split('\n').map(Number)
    expect(list).toHaveLength(3)
    const alive = (pid: number): boolean => {
      try {
        return !/^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
      } catch {
        return false
      }
    }
    for (let i = 0; i < 100 && list.some(alive); i++) await new Promise(res => setTimeout(res, 100))
    expect(list.filter(alive)).toEqual([])
  })

  test('commands that exit at once, many side by side, never fail on their stdin (no EPIPE)', async () => {
    const repo = tempRepo()
    const runs = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        runChecks({
          workingDirectory: repo,
          python: SYSTEM_PYTHON,
          checks: ['test'],
          testCommand: `exec 0<&-; exit ${i % 2}`,
          repoRoot: repo,
          runnerEnv: process.env
        })
      )
    )
    expect(runs.map(r => r[0].outcome)).toEqual(
      Array.from({ length: 24 }, (_, i) => (i % 2 ? 'failed' : 'passed'))
    )
    for (const r of runs) expect(r[0].findings.map(f => f.title)).not.toContain('test could not run')
  })

  test('a prompt gets end of input instead of waiting', async () => {
    const repo = tempRepo()
    const [r] = await runChecks({
      workingDirectory: repo,
      python: SYSTEM_PYTHON,
      checks: ['test'],
      testCommand: 'if read -r answer; then echo "read $answer"; else echo "got EOF"; fi',
      repoRoot: repo,
      runnerEnv: process.env,
      timeoutSeconds: 60
    })
    expect(r.tail).toBe('got EOF')
  })

  test('a directory without manage.py fails every check with a clear message, and runs nothing', async () => {
    const repo = tempRepo()
    const results = await runChecks({
      workingDirectory: repo,
      python: SYSTEM_PYTHON,
      checks: [...CHECK_NAMES],
      repoRoot: repo,
      runnerEnv: process.env
    })
    expect(results.map(r => [r.name, r.outcome])).toEqual(CHECK_NAMES.map(n => [n, 'failed']))
    for (const r of results) {
      expect(r.findings).toEqual([
        {
          level: 'error',
          title: `${r.name} could not run`,
          message: expect.stringContaining('No manage.py in')
        }
      ])
    }
  })

  test('a python that does not exist fails the check instead of throwing', async () => {
    const repo = tempRepo()
    writeFileSync(path.join(repo, 'manage.py'), '')
    const [result] = await runChecks({
      workingDirectory: repo,
      python: path.join(repo, 'no-such-python'),
      checks: ['check'],
      repoRoot: repo,
      runnerEnv: process.env
    })
    expect(result.outcome).toBe('failed')
    expect(result.findings).toHaveLength(1)
    expect(result.findings[0].message).toMatch(
      /^Could not start .*no-such-python manage.py check: .*python input/s
    )
  })
})
