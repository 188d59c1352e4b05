/**
 * scripts/django-versions.sh fails clearly, naming the version and the archive, when a pinned Django is no longer
 * in its Debian suite or its bytes differ from the pinned sha256; nothing is unpacked then. Runs a copy of the
 * script with one pin changed, on its own DJANGO_DIR (the apt cache of .django/ is copied in to save downloads).
 */
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO_ROOT, runnerDjangoVersions } from '../helpers/django.js'

const base = mkdtempSync(join(tmpdir(), 'dd-djv-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

const SCRIPT = readFileSync(join(REPO_ROOT, 'scripts/django-versions.sh'), 'utf8')
const PIN_61 = /"6\.1 experimental (\S+) ([0-9a-f]{64})"/

function runWith(script: string, name: string) {
  const dir = join(base, name)
  mkdirSync(join(dir, 'scripts'), { recursive: true })
  writeFileSync(join(dir, 'scripts/django-versions.sh'), script)
  const apt = join(REPO_ROOT, '.django/.apt/debs')
  if (existsSync(apt)) cpSync(apt, join(dir, 'dj/.apt/debs'), { recursive: true })
  const r = spawnSync('bash', [join(dir, 'scripts/django-versions.sh')], {
    env: { ...process.env, DJANGO_DIR: join(dir, 'dj') },
    encoding: 'utf8',
    timeout: 300_000
  })
  return { status: r.status, err: r.stderr, dir: join(dir, 'dj') }
}

test('every Django is pinned to a Debian version and a sha256', () => {
  for (const v of ['4.2', '5.2', '6.1'])
    expect(SCRIPT).toMatch(
      new RegExp(`"${v.replace('.', '\\.')} \\S+ 3:${v.replace('.', '\\.')}\\.\\d+\\S* [0-9a-f]{64}"`)
    )
  expect(SCRIPT).toMatch(PIN_61)
})

test('a pinned version that is gone from the suite fails naming the version and the archive', () => {
  const [, ver] = PIN_61.exec(SCRIPT)!
  const r = runWith(SCRIPT.replace(ver, '3:6.1.0~gone-1'), 'gone')
  expect(r.err).toMatch(
    /django-versions: Django 6\.1: python3-django 3:6\.1\.0~gone-1 is no longer in Debian experimental \(http\S+\); pin a version it has/
  )
  expect(r.status).toBe(1)
  expect(existsSync(join(r.dir, '6.1/.complete'))).toBe(false)
})

test('a .deb whose sha256 differs from the pin is refused and not unpacked', () => {
  const [, , sha] = PIN_61.exec(SCRIPT)!
  const wrong = sha.replace(/^./, c => (c === '0' ? '1' : '0'))
  const r = runWith(SCRIPT.replace(sha, wrong), 'sha')
  expect(r.err).toContain(`django-versions: Django 6.1: python3-django`)
  expect(r.err).toContain(`has sha256 ${sha}, the pin in scripts/django-versions.sh is ${wrong}`)
  expect(r.status).toBe(1)
  expect(existsSync(join(r.dir, '6.1/.complete'))).toBe(false)
})

// Debian's Django links the admin's vendored jQuery to libjs-jquery's files: the trees hold them, so a project
// with django.contrib.admin collects its static files on every version, as it does on a server.
test.each(runnerDjangoVersions().map(d => [d.version, d] as const))(
  'collectstatic with django.contrib.admin works on Django %s',
  (_, d) => {
    const project = mkdtempSync(join(base, `admin-${d.version}-`))
    writeFileSync(
      join(project, 'adminsite.py'),
      [
        `SECRET_KEY = "${'k'.repeat(50)}"`,
        'INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",',
        '                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles"]',
        'STATIC_URL = "/static/"',
        `STATIC_ROOT = ${JSON.stringify(join(project, 'static'))}`,
        ''
      ].join('\n')
    )
    const r = spawnSync(d.python, ['-m', 'django', 'collectstatic', '--noinput'], {
      cwd: project,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        DJANGO_SETTINGS_MODULE: 'adminsite',
        PYTHONPATH: [project, d.env.PYTHONPATH].filter(Boolean).join(':')
      },
      encoding: 'utf8',
      timeout: 120_000
    })
    expect({ status: r.status, stderr: r.stderr.split('\n').slice(-3) }).toEqual({
      status: 0,
      stderr: expect.anything()
    })
    expect(readFileSync(join(project, 'static/admin/js/vendor/jquery/jquery.js'), 'utf8')).toMatch(/jQuery/)
  }
)
