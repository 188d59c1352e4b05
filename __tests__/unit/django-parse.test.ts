/**
 * Parsers against outputs captured from real Django 3.2 (Debian bookworm), 4.2 (trixie) and 5.2 (sid) runs on
 * Python 3.11, plus 3.2 on Python 3.10 for the older test-name format. Regenerate with
 * `bash __tests__/fixtures/django/capture.sh`. The projects lived at /tmp/djcap/<version>/repo/web: the repo
 * root is one level above manage.py, so finding paths start with `web/`.
 */
import { readFileSync } from 'node:fs'
import type { Finding } from '../../src/report.js'
import type { CheckName } from '../../src/settings.js'
import {
  fallbackFinding,
  parseCheckOutput,
  parseMigrations,
  parseSystemChecks,
  parseTestFailures,
  repoRelative,
  testTitle
} from '../../src/django/parse.js'

const VERSIONS = ['3.2', '4.2', '5.2', '6.1'] as const
type Version = (typeof VERSIONS)[number]

function fixture(version: Version, name: string): { output: string; exitCode: number } {
  const dir = new URL(`../fixtures/django/${version}/`, import.meta.url)
  return {
    output: readFileSync(new URL(`${name}.txt`, dir), 'utf8'),
    exitCode: Number(readFileSync(new URL(`${name}.rc`, dir), 'utf8').trim())
  }
}

function ctx(version: Version) {
  return { projectDir: `/tmp/djcap/${version}/repo/web`, repoRoot: `/tmp/djcap/${version}/repo` }
}

function parse(version: Version, name: string, check: CheckName): { findings: Finding[]; exitCode: number } {
  const { output, exitCode } = fixture(version, name)
  return { findings: parseCheckOutput(check, output, exitCode, ctx(version)), exitCode }
}

const w042 = (obj: string, config: string): Finding => ({
  level: 'warning',
  title: 'models.W042',
  message:
    `${obj}: Auto-created primary key used when not defining a primary key type, by default ` +
    `'django.db.models.AutoField'.\nHINT: Configure the DEFAULT_AUTO_FIELD setting or the ` +
    `${config}.default_auto_field attribute to point to a subclass of AutoField, e.g. 'django.db.models.BigAutoField'.`
})

// Django 4.0 reworded W009's last sentence.
const secretKeyAdvice: Record<Version, string> = {
  '3.2': 'Please generate a long and random SECRET_KEY, otherwise',
  '4.2': 'Please generate a long and random value, otherwise',
  '5.2': 'Please generate a long and random value, otherwise',
  '6.1': 'Please generate a long and random value, otherwise'
}

// Django 6.0 made BigAutoField the default DEFAULT_AUTO_FIELD: no models.W042 for a project without the setting.
const W042 = (version: Version): boolean => version !== '6.1'

describe.each(VERSIONS)('Django %s outputs', version => {
  test('check: a warning with a HINT, exit 0', () => {
    const { findings, exitCode } = parse(version, 'check', 'check')
    expect(exitCode).toBe(0)
    expect(findings).toEqual(W042(version) ? [w042('pages.Page', 'PagesConfig')] : [])
  })

  test('check: errors and warnings under their headings, in order', () => {
    const { findings, exitCode } = parse(version, 'check-errors', 'check')
    expect(exitCode).toBe(1)
    expect(findings).toEqual([
      {
        level: 'error',
        title: 'fields.E121',
        message: "blog.Broken.name: 'max_length' must be a positive integer."
      },
      {
        level: 'error',
        title: 'fields.E300',
        message:
          "blog.Broken.parent: Field defines a relation with model 'Nope', which is either not installed, or is abstract."
      },
      {
        level: 'error',
        title: 'fields.E307',
        message:
          "blog.Broken.parent: The field blog.Broken.parent was declared with a lazy reference to 'blog.nope', " +
          "but app 'blog' doesn't provide model 'nope'."
      },
      ...(W042(version)
        ? [
            w042('blog.Broken', 'BlogConfig'),
            w042('blog.Post', 'BlogConfig'),
            w042('pages.Page', 'PagesConfig')
          ]
        : [])
    ])
  })

  test('deploy: the security warnings of a fresh startproject fail it', () => {
    const { findings, exitCode } = parse(version, 'deploy', 'deploy')
    expect(exitCode).toBe(1)
    // Django sorts by object: `?` comes before `pages.Page`.
    expect(findings.map(f => [f.level, f.title])).toEqual([
      // 6.1's startproject writes a console MAILERS backend: an error under --deploy
      ...(version === '6.1' ? [['error', 'mail.E001']] : []),
      ['warning', 'security.W004'],
      ['warning', 'security.W008'],
      ['warning', 'security.W009'],
      ['warning', 'security.W012'],
      ['warning', 'security.W016'],
      ['warning', 'security.W018'],
      ['warning', 'security.W020'],
      ...(W042(version) ? [['warning', 'models.W042']] : [])
    ])
    if (version === '6.1') {
      expect(findings[0].message).toMatch(
        /^Your MAILERS setting uses a development-only email backend .*\nHINT: Use a production-ready email backend/
      )
    }
    // `?` (no object) is not repeated in the message.
    expect(findings.find(f => f.title === 'security.W018')).toEqual({
      level: 'warning',
      title: 'security.W018',
      message: 'You should not have DEBUG set to True in deployment.'
    })
    expect(findings.find(f => f.title === 'security.W009')?.message).toContain(secretKeyAdvice[version])
    expect(findings.every(f => f.file === undefined && f.line === undefined)).toBe(true)
  })

  test('migrations: one finding per app, naming the changes and the file it would write', () => {
    const { findings, exitCode } = parse(version, 'migrations', 'migrations')
    expect(exitCode).toBe(1)
    // 3.2 names a multi-operation migration after the date; 4.0+ after the operations.
    const pagesFile =
      version === '3.2'
        ? 'web/pages/migrations/0002_auto_20261124_0101.py'
        : 'web/pages/migrations/0002_page_body_page_slug_alter_page_title.py'
    expect(findings).toEqual([
      {
        level: 'error',
        title: 'missing migration: blog',
        message:
          "app 'blog' has model changes without a migration: Create model Post. " +
          'Run `python manage.py makemigrations blog` and commit the result.',
        file: 'web/blog/migrations/0001_initial.py'
      },
      {
        level: 'error',
        title: 'missing migration: pages',
        message:
          "app 'pages' has model changes without a migration: Add field body to page; Add field slug to page; " +
          'Alter field title on page. Run `python manage.py makemigrations pages` and commit the result.',
        file: pagesFile
      }
    ])
  })

  test('migrations: nothing when there are no changes (the W042 warning belongs to `check`)', () => {
    const { findings, exitCode } = parse(version, 'migrations-clean', 'migrations')
    expect(exitCode).toBe(0)
    expect(findings).toEqual([])
  })

  test('migrations: system-check errors that stop makemigrations are the findings', () => {
    const { findings, exitCode } = parse(version, 'migrations-errors', 'migrations')
    expect(exitCode).toBe(1)
    expect(findings.map(f => [f.level, f.title])).toEqual([
      ['error', 'fields.E121'],
      ['error', 'fields.E300'],
      ['error', 'fields.E307']
    ])
  })

  test('test: failures and errors with the innermost project frame', () => {
    const { findings, exitCode } = parse(version, 'test', 'test')
    expect(exitCode).toBe(1)
    expect(findings).toEqual([
      {
        level: 'error',
        title: 'test_boom (pages.tests.HomeTests)',
        message: 'ValueError: boom',
        file: 'web/pages/tests.py',
        line: 16
      },
      {
        level: 'error',
        title: 'test_math (pages.tests.HomeTests)',
        message: 'AssertionError: 2 != 3',
        file: 'web/pages/tests.py',
        line: 9
      }
    ])
  })

  test('a crash while loading the project: the exception and the project line it points at', () => {
    const { findings, exitCode } = parse(version, 'check-crash', 'check')
    expect(exitCode).toBe(1)
    expect(findings).toEqual([
      {
        level: 'error',
        title: 'check failed (exit code 1)',
        message: 'SyntaxError: invalid syntax',
        file: 'web/blog/models.py',
        line: 11
      }
    ])
  })
})

test('Python 3.10 test names (`test_x (app.tests.T)`) give the same findings as 3.11+', () => {
  const { output } = fixture('3.2', 'test-py310')
  expect(output).toContain('FAIL: test_math (pages.tests.HomeTests)\n')
  expect(parseTestFailures(output, ctx('3.2'))).toEqual(
    parseTestFailures(fixture('3.2', 'test').output, ctx('3.2'))
  )
  expect(parseTestFailures(output, ctx('3.2'))).toHaveLength(2)
})

describe('testTitle', () => {
  test.each([
    ['test_x (app.tests.T)', 'test_x (app.tests.T)'],
    ['test_x (app.tests.T.test_x)', 'test_x (app.tests.T)'],
    ['test_x (app.tests.T.test_x) (i=2)', 'test_x (app.tests.T) (i=2)'],
    ['setUpClass (app.tests.T)', 'setUpClass (app.tests.T)'],
    ['no parentheses', 'no parentheses']
  ])('%s → %s', (heading, title) => {
    expect(testTitle(heading)).toBe(title)
  })
})

describe('edge cases (hand-written output)', () => {
  const c = { projectDir: '/r/web', repoRoot: '/r' }

  test('frames in installed packages or outside the repo are not blamed', () => {
    const output = [
      '='.repeat(70),
      'ERROR: test_db (app.tests.T.test_db)',
      '-'.repeat(70),
      'Traceback (most recent call last):',
      '  File "/r/.venv/lib/python3.11/site-packages/django/db/utils.py", line 9, in x',
      '    raise Boom',
      '  File "/usr/lib/python3.11/socket.py", line 3, in y',
      'OSError: no route',
      '',
      '-'.repeat(70),
      'Ran 1 test in 0.1s'
    ].join('\n')
    expect(parseTestFailures(output, c)).toEqual([
      { level: 'error', title: 'test_db (app.tests.T)', message: 'OSError: no route' }
    ])
  })

  test('a multi-line assertion message is kept, up to the end of the block; colour codes are dropped', () => {
    const output = [
      '='.repeat(70),
      '\u001b[31mFAIL: test_s (app.tests.T)\u001b[0m',
      '-'.repeat(70),
      'Traceback (most recent call last):',
      '  File "/r/web/app/tests.py", line 4, in test_s',
      "    self.assertEqual('a\\nb', 'a\\nc')",
      "AssertionError: 'a\\nb' != 'a\\nc'",
      '  a',
      '- b',
      '+ c',
      '',
      '='.repeat(70)
    ].join('\n')
    expect(parseTestFailures(output, c)).toEqual([
      {
        level: 'error',
        title: 'test_s (app.tests.T)',
        message: "AssertionError: 'a\\nb' != 'a\\nc'\n  a\n- b\n+ c",
        file: 'web/app/tests.py',
        line: 4
      }
    ])
  })

  test('a third-party check id and an info message', () => {
    const output = 'INFOS:\n?: (debug_toolbar.I001) Toolbar is on.\nmyapp.Thing: (myapp.C002) Broken.\n'
    expect(parseSystemChecks(output)).toEqual([
      { level: 'notice', title: 'debug_toolbar.I001', message: 'Toolbar is on.' },
      { level: 'error', title: 'myapp.C002', message: 'myapp.Thing: Broken.' }
    ])
  })

  test('a migration path outside the repository gives no file', () => {
    const output = "Migrations for 'x':\n  /elsewhere/x/migrations/0002_y.py\n    ~ Alter field y on x\n"
    expect(parseMigrations(output, c)).toEqual([
      {
        level: 'error',
        title: 'missing migration: x',
        message:
          "app 'x' has model changes without a migration: Alter field y on x. " +
          'Run `python manage.py makemigrations x` and commit the result.'
      }
    ])
  })

  test('an unparsed failure yields its last lines', () => {
    const output = Array.from({ length: 15 }, (_, i) => `line ${i + 1}`).join('\n') + '\n\n'
    const findings = parseCheckOutput('test', output, 2, c)
    expect(findings).toEqual([
      {
        level: 'error',
        title: 'test failed (exit code 2)',
        message: Array.from({ length: 10 }, (_, i) => `line ${i + 6}`).join('\n')
      }
    ])
    expect(fallbackFinding('check', '', 1, c).message).toBe('The command failed without printing anything.')
  })

  test('a failed check with only warnings is not explained by them (except deploy)', () => {
    const output = '?: (x.W001) Meh.\nCommandError: something else broke\n'
    expect(parseCheckOutput('check', output, 1, c)).toEqual([
      { level: 'warning', title: 'x.W001', message: 'Meh.' },
      {
        level: 'error',
        title: 'check failed (exit code 1)',
        message: '?: (x.W001) Meh.\nCommandError: something else broke'
      }
    ])
    expect(parseCheckOutput('deploy', output, 1, c)).toEqual([
      { level: 'warning', title: 'x.W001', message: 'Meh.' }
    ])
    // A passing run never gets a fallback finding.
    expect(parseCheckOutput('check', output, 0, c)).toHaveLength(1)
  })

  test('repoRelative', () => {
    expect(repoRelative('app/tests.py', c)).toBe('web/app/tests.py')
    expect(repoRelative('/r/web/app/tests.py', c)).toBe('web/app/tests.py')
    expect(repoRelative('/rx/app.py', c)).toBeUndefined()
    expect(repoRelative('../../etc/passwd', c)).toBeUndefined()
  })
})
