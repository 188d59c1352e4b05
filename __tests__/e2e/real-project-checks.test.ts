/**
 * The checks on a project as tutorials write it (__tests__/fixtures/realproject: whitenoise's manifest storage,
 * DATABASE_URL, python-dotenv), taken as it is: `manage.py test` needs the manifest only `collectstatic` makes,
 * and `makemigrations --check` creates the SQLite file of the settings. The checks pass and leave the checkout
 * exactly as they found it.
 */
import { execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { runChecks } from '../../src/django/checks.js'
import { djangoVersions, REPO_ROOT } from '../helpers/django.js'

const FIXTURE = path.join(REPO_ROOT, '__tests__/fixtures/realproject')
const temps: string[] = []
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

function checkout(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'dd-realproject-'))
  temps.push(dir)
  cpSync(FIXTURE, dir, { recursive: true, filter: s => !/__pycache__|db\.sqlite3$|staticfiles$/.test(s) })
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]).toString()
  git('init', '-q', '-b', 'main')
  git('add', '-A')
  git('commit', '-q', '-m', 'tutorial')
  return dir
}

const status = (dir: string): string =>
  execFileSync('git', ['-C', dir, 'status', '--porcelain', '--ignored', '--untracked-files=all']).toString()

// The server-side versions: whitenoise, dj-database-url and python-dotenv are bookworm's Python 3.11 packages.
describe.each(djangoVersions())('Django $version', ({ python, env }) => {
  test('check, migrations and test pass on a manifest storage as it is, and the checkout is left as it was', async () => {
    const dir = checkout()
    const before = status(dir)
    expect(before).toBe('')
    const results = await runChecks({
      workingDirectory: dir,
      repoRoot: dir,
      python,
      checks: ['check', 'migrations', 'test'],
      runnerEnv: { PATH: process.env.PATH, HOME: process.env.HOME },
      env
    })
    const summary = results.map(r => `${r.name}: ${r.outcome}\n${r.outcome === 'passed' ? '' : r.tail}`)
    expect(summary).toEqual(['check: passed\n', 'migrations: passed\n', 'test: passed\n'])
    expect(results[2].tail).toMatch(/Ran 2 tests[\s\S]*OK/)
    expect(status(dir)).toBe(before)
  })
})
