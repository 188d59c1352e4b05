/**
 * The server-side Django steps (preflight, migrate, collectstatic in one Python process, as the deploy runs
 * them) against real Django 3.2, 4.2 and 5.2, run by /bin/sh on a release laid out as the deploy lays it out.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { batch, updateSteps } from '../../src/deploy/plan.js'
import { layout } from '../../src/remote/commands.js'
import type { DeploySettings } from '../../src/settings.js'
import { djangoVersions, REPO_ROOT, SYSTEM_PYTHON } from '../helpers/django.js'

const base = mkdtempSync(join(tmpdir(), 'dd-djserver-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

const d = {
  migrate: true,
  collectstatic: true,
  nginx: false,
  sharedPaths: [],
  venvOptions: [],
  pipArgs: [],
  remotePython: 'python3'
} as unknown as DeploySettings

describe.each(djangoVersions())('Django $version on the server', ({ version, env }) => {
  const l = layout(join(base, version))
  const release = join(l.releases, 'r1')
  beforeAll(() => {
    mkdirSync(l.releases, { recursive: true })
    cpSync(join(REPO_ROOT, 'example'), release, {
      recursive: true,
      filter: s => !/db\.sqlite3|__pycache__|\/\.env$/.test(s)
    })
    execFileSync(SYSTEM_PYTHON, [
      '-m',
      'venv',
      '--system-site-packages',
      '--without-pip',
      join(release, '.venv')
    ])
    writeFileSync(join(release, '.env'), `DATABASE_PATH=${join(base, `${version}.sqlite3`)}\n`)
  })

  const steps = (): ReturnType<typeof batch> => {
    const all = updateSteps(d, l, {
      name: 'r1',
      revision: 'x',
      treeish: 'HEAD',
      repoRoot: '/',
      venvKey: 'k',
      hasRequirements: false
    })
    return batch(
      all.filter(s => s.manage),
      l,
      'MARK:'
    )
  }
  const run = (script: string) =>
    spawnSync('/bin/sh', ['-c', script], { env: { ...process.env, ...env }, encoding: 'utf8' })

  it('runs preflight, migrate and collectstatic in one process, each reported', () => {
    const b = steps()
    expect(b.parts).toEqual(['preflight', 'migrate', 'collectstatic'])
    const r = run(b.script)
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    const markers = r.stdout.split('\n').filter(line => line.startsWith('MARK:'))
    expect(markers).toEqual(['MARK: preflight 0', 'MARK: migrate 0', 'MARK: collectstatic 0'])
    expect(r.stdout).toMatch(/Applying pages\.0002_first_greeting\.\.\. OK/)
    expect(existsSync(join(release, 'static/pages/site.css'))).toBe(true)
    // the Django that ran is the one under test
    const ran = spawnSync(
      join(release, '.venv/bin/python'),
      ['-c', 'import django; print(django.get_version())'],
      {
        env: { ...process.env, ...env },
        encoding: 'utf8'
      }
    )
    expect(ran.stdout).toMatch(new RegExp(`^${version.replace('.', '\\.')}\\.`))
  })

  it('stops at a release whose settings do not import, reporting preflight', () => {
    writeFileSync(join(release, 'mysite/broken.py'), 'raise RuntimeError("no import")\n')
    const settings = join(release, 'mysite/settings.py')
    const original = execFileSync('cat', [settings]).toString()
    writeFileSync(settings, original + '\nimport mysite.broken  # noqa\n')
    try {
      const r = run(steps().script)
      expect(r.status).toBe(1)
      expect(r.stdout.split('\n').filter(line => line.startsWith('MARK:'))).toEqual(['MARK: preflight 1'])
      expect(r.stderr).toContain('RuntimeError: no import')
    } finally {
      writeFileSync(settings, original)
    }
  })
})
