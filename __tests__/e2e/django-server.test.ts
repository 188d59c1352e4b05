/**
 * The server-side Django steps (preflight, migrate, collectstatic in one Python process, as the deploy runs
 * them) against real Django 3.2, 4.2 and 5.2, run by /bin/sh on a release laid out as the deploy lays it out.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { batch } from '../../src/deploy/batch.js'
import { updateSteps } from '../../src/deploy/plan.js'
import { layout } from '../../src/remote/commands.js'
import type { DeploySettings } from '../../src/settings.js'
import { djangoVersions, REPO_ROOT, SYSTEM_PYTHON } from '../helpers/django.js'

const base = mkdtempSync(join(tmpdir(), 'dd-djserver-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

const d = {
  migrate: true,
  migrateEveryHost: false,
  migrations: { lockTimeout: 5, afterDeploy: [], safety: 'refuse', allowContractRollback: false },
  maxParallel: 10,
  collectstatic: true,
  nginx: false,
  sharedPaths: [],
  venvOptions: [],
  pipArgs: [],
  remotePython: 'python3',
  deployCheck: 'off'
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

  const steps = (o: Partial<DeploySettings> = {}): ReturnType<typeof batch> => {
    const all = updateSteps({ ...d, ...o }, l, {
      name: 'r1',
      revision: 'x',
      treeish: 'HEAD',
      repoRoot: '/',
      venvKey: 'k',
      hasRequirements: false,
      tree: ''
    })
    return batch(
      all.filter(s => s.manage),
      l,
      'MARK:'
    )
  }
  const run = (script: string) =>
    spawnSync('/bin/sh', ['-c', script], {
      env: { ...process.env, ...env, PYTHONDONTWRITEBYTECODE: '1' },
      encoding: 'utf8'
    })
  const marks = (stdout: string): string[] => stdout.split('\n').filter(line => line.startsWith('MARK:'))
  /** Runs `body` with the release's health view replaced by `view` (Python source of `def health(request)`). */
  const withHealthView = <T>(view: string, body: () => T): T => {
    const views = join(release, 'pages/views.py')
    const original = execFileSync('cat', [views]).toString()
    const i = original.indexOf('def health(request):')
    const j = original.indexOf('\ndef ', i + 1)
    writeFileSync(views, original.slice(0, i) + view + '\n\n' + original.slice(j))
    try {
      return body()
    } finally {
      writeFileSync(views, original)
    }
  }
  const health = { healthCheckUrl: 'http://127.0.0.1:8000/health/', healthCheckTimeout: 5 }

  it('runs preflight, migrate and collectstatic in one process, each reported', () => {
    const b = steps()
    expect(b.parts).toEqual(['preflight', 'migrate', 'collectstatic', 'static'])
    const r = run(b.script)
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    const markers = r.stdout.split('\n').filter(line => line.startsWith('MARK:'))
    expect(markers).toEqual([
      'MARK: preflight 0',
      'MARK: migrate 0',
      'MARK: collectstatic 0',
      'MARK: static 0'
    ])
    expect(r.stdout).toMatch(/Applying pages\.0002_first_greeting\.\.\. OK/)
    expect(existsSync(join(release, 'static/pages/site.css'))).toBe(true)
    // and is linked into the shared static directory, where it outlives the release
    expect(statSync(join(l.static, 'pages/site.css')).ino).toBe(
      statSync(join(release, 'static/pages/site.css')).ino
    )
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

  it('reports each check --deploy warning with the server settings, and stops on them with deploy-check: fail', () => {
    const warn = run(steps({ deployCheck: 'warn' }).script)
    expect(warn.status).toBe(0)
    expect(marks(warn.stdout)).toEqual([
      'MARK: preflight 0',
      'MARK: deploy-check 0',
      'MARK: migrate 0',
      'MARK: collectstatic 0',
      'MARK: static 0'
    ])
    const warnings = warn.stdout
      .split('\n')
      .filter(w => w.startsWith('django-deploy-warning: check --deploy: '))
    // the example runs with DEBUG off but Django's insecure placeholder key and no HTTPS settings
    expect(warnings.join('\n')).toMatch(/\(security\.W009\)/)
    expect(warnings.join('\n')).toMatch(/\(security\.W004\)/)
    expect(warnings.every(w => !w.includes('\n'))).toBe(true)
    const fail = run(steps({ deployCheck: 'fail' }).script)
    expect(fail.status).toBe(1)
    expect(marks(fail.stdout)).toEqual(['MARK: preflight 0', 'MARK: deploy-check 1'])
    expect(fail.stderr).toMatch(/check --deploy found warnings, and deploy-check is fail/)
  })

  it('stops at DEBUG = True (security.W018) under the default deploy-check: warn', () => {
    const settings = join(release, 'mysite/settings.py')
    const original = execFileSync('cat', [settings]).toString()
    writeFileSync(settings, original + '\nDEBUG = True\n')
    try {
      const r = run(steps({ deployCheck: 'warn' }).script)
      expect(r.status).toBe(1)
      expect(marks(r.stdout)).toEqual(['MARK: preflight 0', 'MARK: deploy-check 1'])
      expect(r.stderr).toMatch(/security\.W018 refuses the release under deploy-check warn and fail/)
      expect(r.stderr).toMatch(/check --deploy found a serious warning: this release does not go live/)
    } finally {
      writeFileSync(settings, original)
    }
  })

  it('asks the health URL through Django before the switch: 200 passes with the Host header of the URL', () => {
    withHealthView(
      "def health(request):\n    return HttpResponse('host ' + request.get_host(), content_type='text/plain')",
      () => {
        const r = run(steps(health).script)
        expect(marks(r.stdout)).toEqual([
          'MARK: preflight 0',
          'MARK: migrate 0',
          'MARK: collectstatic 0',
          'MARK: static 0',
          'MARK: health-before-switch 0'
        ])
        expect(r.stdout).toMatch(/\/health\/ \(Host: 127\.0\.0\.1:8000\) in the new release.*: HTTP 200/)
      }
    )
  })

  it.each([
    [
      'a 500',
      "def health(request):\n    return HttpResponse('database says no\\nsecond line', status=500)",
      /HTTP 500\ndatabase says no\nsecond line/
    ],
    [
      'an exception',
      "def health(request):\n    raise RuntimeError('cache unreachable')",
      /raised\nTraceback[\s\S]*RuntimeError: cache unreachable/
    ],
    [
      'no answer in time',
      'def health(request):\n    import time\n    time.sleep(30)\n    return HttpResponse()',
      /raised\nTraceback[\s\S]*TimeoutError: no answer within 5 s/
    ]
  ])('refuses %s from the health URL before the switch, showing why', (_what, view, why) => {
    withHealthView(view, () => {
      const r = run(steps(health).script)
      expect(r.status).toBe(1)
      expect(marks(r.stdout)).toEqual([
        'MARK: preflight 0',
        'MARK: migrate 0',
        'MARK: collectstatic 0',
        'MARK: static 0',
        'MARK: health-before-switch 1'
      ])
      expect(r.stderr).toMatch(why)
    })
  })

  it('migration-safety refuse stops a contract migration before migrating anything; after-deploy holds it back', () => {
    const drop = join(release, 'pages/migrations/0003_drop_created.py')
    writeFileSync(
      drop,
      "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('pages', '0002_first_greeting')]\n    operations = [migrations.RemoveField('greeting', 'created')]\n"
    )
    try {
      const refused = run(steps().script)
      expect(refused.status).toBe(1)
      expect(marks(refused.stdout)).toEqual(['MARK: preflight 0', 'MARK: migrate 1'])
      expect(refused.stderr).toMatch(
        /migration-safety refuse: [^\n]*\n- pages\.0003_drop_created: RemoveField: Remove field created from greeting \(expand\/contract: [^\n]*\nNothing was migrated and no host changed\. Run them after every host switched \(after-deploy-migrations: pages\.0003_drop_created,/
      )
      expect(refused.stdout).not.toMatch(/Applying pages\.0003/)
      const held = run(
        steps({ migrations: { ...d.migrations, afterDeploy: ['pages.0003_drop_created'] } }).script
      )
      expect(held.status).toBe(0)
      expect(held.stdout).toMatch(/"name": "0003_drop_created", "when": "after-deploy", "class": "contract"/)
      expect(held.stdout).not.toMatch(/Applying pages\.0003/)
      const warned = run(steps({ migrations: { ...d.migrations, safety: 'warn' } }).script)
      expect(warned.status).toBe(0)
      expect(warned.stdout).toMatch(
        /django-deploy-warning: contract migration before the switch \(migration-safety warn\): pages\.0003_drop_created: RemoveField/
      )
      expect(warned.stdout).toMatch(/Applying pages\.0003_drop_created\.\.\. OK/)
    } finally {
      rmSync(drop)
    }
  })
})
