// migrations.py (the classifier of issue 19) run with real Django 4.2, 5.2 and 6.1 (and Debian's 3.2) on the fixture project
// __tests__/fixtures/migrations (one app, a migration per class of operation), as the action runs it: the embedded
// text, in the Django manage_many.py sets up. Every version must classify the same way.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { REPO_ROOT, runnerDjangoVersions, type DjangoVersion } from '../helpers/django.js'
import { MANAGE_MANY_PY, MIGRATIONS_PY } from '../../src/remote/python/programs.js'

const PROJECT = path.join(REPO_ROOT, '__tests__/fixtures/migrations')
// 4.2, 5.2, 6.1, and Debian's 3.2 (what a bookworm server runs without a virtualenv of its own).
const VERSIONS = runnerDjangoVersions()

interface Line {
  app: string
  name: string
  file?: string
  class?: string
  after_deploy?: boolean
  error?: string
  sql?: string
  sql_error?: string
  operations?: { op: string; class: string; describe: string; hint?: string; line?: number }[]
}

let tmp: string
beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'dd-migrations-classify-'))
})
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

/** Runs migrations.py with `args`; its JSON lines and its exit status (from manage_many's mark line). */
function run(
  v: DjangoVersion,
  args: string[],
  env: Record<string, string> = {}
): { lines: Line[]; status: number; err: string } {
  let out: string
  let err = ''
  try {
    out = execFileSync(
      v.python,
      ['-c', MANAGE_MANY_PY, 'dd-mark', 'hint', JSON.stringify([['m', args, MIGRATIONS_PY]])],
      {
        cwd: PROJECT,
        env: { PATH: process.env.PATH ?? '', PYTHONDONTWRITEBYTECODE: '1', ...v.env, ...env },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe']
      }
    )
  } catch (e) {
    const x = e as { stdout: string; stderr: string }
    out = x.stdout
    err = x.stderr
  }
  const mark = /^dd-mark m (\d+)$/m.exec(out)
  const lines = out
    .split('\n')
    .filter(l => l.startsWith('{'))
    .map(l => JSON.parse(l) as Line)
  return { lines, status: mark ? Number(mark[1]) : -1, err }
}

/** Each migration as `class after_deploy: op=class,...` (hints only as a `+`), for comparing across versions. */
function shape(l: Line): string {
  const ops = (l.operations ?? []).map(o => `${o.op}=${o.class}${o.hint ? '+' : ''}`).join(',')
  return `${l.app}.${l.name} ${l.class}${l.after_deploy ? ' after' : ''}: ${ops}`
}

const ALL = [
  'shop.0001_initial',
  'shop.0002_expand',
  'shop.0003_contract',
  'shop.0004_review',
  'shop.0005_after_deploy',
  'shop.0006_rename_model',
  'shop.0007_enum_after'
]

function expected(v: DjangoVersion): string[] {
  // db_default exists from Django 5.0: 0002 has one more AddField there.
  const dbDefault = Number(v.version.split('.')[0]) < 5 ? '' : ',AddField=expand'
  return [
    'shop.0001_initial expand: CreateModel=expand,CreateModel=expand',
    `shop.0002_expand expand: AddField=expand,AddIndex=expand+,AlterField=expand,AddConstraint=expand+,CreateModel=expand${dbDefault}`,
    'shop.0003_contract contract: RemoveField=contract+,AddField=contract+,AlterField=contract+,AlterField=contract+,RenameField=contract+,AlterField=contract+,AddConstraint=contract+',
    'shop.0004_review review: RunPython=review+,RunSQL=review+,SeparateDatabaseAndState=review+',
    'shop.0005_after_deploy contract after: DeleteModel=contract+',
    'shop.0006_rename_model contract: RenameModel=contract+',
    'shop.0007_enum_after contract after: AlterUniqueTogether=contract+,AddField=contract+'
  ]
}

describe.each(VERSIONS)('Django $version', v => {
  test('classify: every operation of the fixture, the same on each version', () => {
    const r = run(v, ['classify', ...ALL])
    expect(r.status).toBe(0)
    expect(r.lines.map(shape)).toEqual(expected(v))
  })

  test('classify: what each contract hint says, the file and the line of each operation', () => {
    const { lines } = run(v, ['classify', 'shop.0003_contract'])
    const [m] = lines
    expect(m.file).toBe(path.join(PROJECT, 'shop/migrations/0003_contract.py'))
    expect(m.operations!.map(o => o.line)).toEqual([7, 8, 9, 10, 11, 12, 13])
    const hint = (i: number): string => m.operations![i].hint!
    expect(hint(0)).toMatch(/drop it in a later release/)
    expect(hint(1)).toMatch(/drops the default .* fails on NOT NULL/)
    expect(hint(2)).toMatch(/old type/)
    expect(hint(3)).toMatch(/may still write NULL/)
    expect(hint(4)).toMatch(/db_column/)
    expect(hint(5)).toMatch(/duplicates/)
    expect(m.operations![0].describe).toBe('Remove field legacy from item')
  })

  test('classify --sql: the SQL of the project backend, or one line saying why there is none', () => {
    const ok = run(v, ['classify', '--sql', 'shop.0003_contract'])
    // SQLite drops a column in place from Django 4.2 (3.2 copies the table without it).
    expect(ok.lines[0].sql).toMatch(
      /^BEGIN;\n--\n-- Remove field legacy from item\n--\n(ALTER TABLE "shop_item" DROP COLUMN "legacy"|CREATE TABLE "new__shop_item")/
    )
    expect(ok.lines[0].sql_error).toBeUndefined()
    const no = run(v, ['classify', '--sql', 'shop.0003_contract'], {
      DD_MIGRATIONS_DB: path.join(tmp, 'no-such-dir/x.db')
    })
    expect(no.lines[0].sql).toBeUndefined()
    expect(no.lines[0].sql_error).toBe('OperationalError: unable to open database file')
    // The classification does not need the database.
    expect(shape(no.lines[0])).toBe(expected(v)[2])
  })

  test('plan: the unapplied migrations in migrate order, after-deploy marked or listed', () => {
    const db = path.join(tmp, `plan-${v.version}.sqlite3`)
    const env = { PYTHONDONTWRITEBYTECODE: '1', PATH: process.env.PATH ?? '', ...v.env, DD_MIGRATIONS_DB: db }
    execFileSync(v.python, ['manage.py', 'migrate', 'shop', '0003', '-v', '0'], { cwd: PROJECT, env })
    const r = run(v, ['plan', '--after-deploy', 'shop.0004_review,shop.0006_rename_model'], {
      DD_MIGRATIONS_DB: db
    })
    expect(r.status).toBe(0)
    expect(r.lines.map(l => `${l.name} ${l.after_deploy}`)).toEqual([
      '0004_review true',
      '0005_after_deploy true',
      '0006_rename_model true',
      '0007_enum_after true'
    ])
    execFileSync(v.python, ['manage.py', 'migrate', '-v', '0'], { cwd: PROJECT, env })
    expect(run(v, ['plan'], { DD_MIGRATIONS_DB: db }).lines).toEqual([])
  })
})

describe('arguments (Django 5.2)', () => {
  const v = VERSIONS.find(x => x.version === '5.2')!

  test('--files: the migration files of an app, by path; other files are left out', () => {
    const r = run(v, [
      'classify',
      '--files',
      'shop/migrations/0004_review.py',
      path.join(PROJECT, 'shop/migrations/__init__.py'),
      'proj/settings.py',
      path.join(PROJECT, 'shop/migrations/0001_initial.py')
    ])
    expect(r.lines.map(l => l.name)).toEqual(['0004_review', '0001_initial'])
  })

  test('a hostile name is data: an error line naming it, exit 1, nothing run', () => {
    const hostile = `shop.$(touch ${tmp}/pwned);x`
    const r = run(v, ['classify', hostile, 'shop.0001_initial'])
    expect(r.lines[0]).toEqual({
      app: 'shop',
      name: `$(touch ${tmp}/pwned);x`,
      error: `no migration ${hostile} in this project`
    })
    expect(r.lines[1].name).toBe('0001_initial')
    expect(r.status).toBe(1)
  })

  test.each([
    [['classify', 'shop'], /expected app_label\.migration_name, got shop/],
    [
      ['classify', '--after-deploy', 'nodot', 'shop.0001_initial'],
      /expected app_label\.migration_name, got nodot/
    ],
    [['plan', 'shop.0001_initial'], /expected app_label\.migration_name, got shop\.0001_initial/],
    [['plan', '--bogus'], /unknown option --bogus/],
    [['drop'], /usage: migrations\.py classify/]
  ])('bad arguments %j: exit 2 with a message', (args, message) => {
    const r = run(v, args)
    expect(r.status).toBe(2)
    expect(r.err).toMatch(message)
    expect(r.lines).toEqual([])
  })
})
