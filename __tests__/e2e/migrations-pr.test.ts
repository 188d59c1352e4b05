/**
 * The built action (dist/index.js) in check mode on a pull request whose branch adds migrations to the example
 * project: the PR comment and the job summary get a "Migrations" section (a dropped column is contract with its
 * SQL, an added nullable column expand, a RunPython review), contract and review operations are annotations on
 * the migration files, and nothing is left in the checkout. A push, a PR without migrations and a PR whose base
 * is not in the checkout say nothing or one line. Real Django (Debian's /usr/bin/python3), real git, the stand-in
 * GitHub API.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startFakeGitHub, type FakeGitHub } from '../helpers/fake-github.js'
import { Repo, runAction, type ActionRun } from '../helpers/action.js'

let gh: FakeGitHub
let repo: Repo
let events: string
let base: string

const ADD_MOOD = `from django.db import migrations, models


def fill(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [("pages", "0002_first_greeting")]
    operations = [
        migrations.AddField("greeting", "mood", models.CharField(max_length=20, null=True)),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
`
const DROP_CREATED = `from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("pages", "0003_greeting_mood")]
    operations = [
        migrations.RemoveField("greeting", "created"),
    ]
`

function prEnv(pr: number, baseSha: string): Record<string, string> {
  const event = join(events, `event-${pr}.json`)
  writeFileSync(event, JSON.stringify({ pull_request: { number: pr, base: { sha: baseSha } } }))
  return {
    GITHUB_EVENT_NAME: 'pull_request',
    GITHUB_REF: `refs/pull/${pr}/merge`,
    GITHUB_EVENT_PATH: event,
    GITHUB_API_URL: gh.url
  }
}
const inputs = { python: '/usr/bin/python3', checks: 'check', 'github-token': 'ghs_migrations_pr_token' }

/** The section of a summary or comment body, from its heading to the next heading of its level or the end. */
function section(body: string): string {
  const start = body.indexOf('### Migrations')
  if (start < 0) return ''
  const next = body.indexOf('\n### ', start + 1)
  return body.slice(start, next < 0 ? undefined : next)
}

beforeAll(async () => {
  gh = await startFakeGitHub()
  events = mkdtempSync(join(tmpdir(), 'dd-migrations-pr-'))
  repo = new Repo()
  base = repo.git('rev-parse', 'HEAD').trim()
})

afterAll(async () => {
  await gh?.close()
  repo?.remove()
  rmSync(events, { recursive: true, force: true })
})

describe('a pull request that adds a nullable column, a RunPython and drops a column', () => {
  let r: ActionRun
  beforeAll(async () => {
    repo.git('checkout', '-q', '-b', 'drop-created')
    repo.write('pages/migrations/0003_greeting_mood.py', ADD_MOOD)
    repo.write('pages/migrations/0004_remove_greeting_created.py', DROP_CREATED)
    repo.write('pages/views.py', `${repo.read('pages/views.py')}\n# not a migration\n`)
    repo.commit('mood, no created')
    r = await runAction(inputs, { workspace: repo.dir, env: prEnv(31, base) })
  }, 120_000)

  test('the comment lists each operation with its class; the dropped column is contract with its SQL', () => {
    expect(r.code).toBe(0)
    const [comment] = gh.comments.get('acme/shop#31') ?? []
    const s = section(comment?.body ?? '')
    expect(s).toContain(
      `2 migrations added or changed against \`${base.slice(0, 12)}\`: 🔴 1 contract, 🟡 1 review, 🟢 1 expand`
    )
    expect(s).toMatch(
      /\| `pages\.0003_greeting_mood` \| Add field mood to greeting \(`AddField`\) \| 🟢 expand \| {2}\|$/m
    )
    expect(s).toMatch(
      /\| `pages\.0003_greeting_mood` \| Raw Python operation \(`RunPython`\) \| 🟡 review \| cannot be classified statically/
    )
    expect(s).toMatch(
      /\| `pages\.0004_remove_greeting_created` \| Remove field created from greeting \(`RemoveField`\) \| 🔴 contract \| expand\/contract: release code that no longer reads or writes the field first/
    )
    expect(s).toContain('<details><summary>SQL of <code>pages.0004_remove_greeting_created</code></summary>')
    // Debian's Django 3.2 on SQLite drops a column by copying the table without it.
    expect(s).toMatch(
      /```sql\n[\s\S]*-- Remove field created from greeting[\s\S]*CREATE TABLE "new__pages_greeting"/
    )
    expect(s).not.toContain('views.py')
  })

  test('the job summary has the same section', () => {
    expect(section(r.summary).trim()).toBe(section(gh.comments.get('acme/shop#31')![0].body).trim())
  })

  test('contract and review operations are annotations on their migration file and line', () => {
    expect(r.log).toMatch(
      /::warning title=migrations%3A contract%3A RemoveField,file=pages\/migrations\/0004_remove_greeting_created\.py,line=7::pages\.0004_remove_greeting_created: Remove field created from greeting — expand\/contract/
    )
    expect(r.log).toMatch(
      /::notice title=migrations%3A review%3A RunPython,file=pages\/migrations\/0003_greeting_mood\.py,line=12::pages\.0003_greeting_mood: Raw Python operation/
    )
    expect(r.log).not.toMatch(/title=migrations%3A expand/)
  })

  test('sqlmigrate left no database in the checkout', () => {
    expect(existsSync(join(repo.dir, 'db.sqlite3'))).toBe(false)
    expect(repo.git('status', '--porcelain')).toBe('')
  })

  test('without a database sqlmigrate can reach: one line says so, the classification stays', async () => {
    const env = { ...prEnv(32, base), DATABASE_PATH: join(events, 'no-such-dir/db.sqlite3') }
    const r2 = await runAction(inputs, { workspace: repo.dir, env })
    const s = section(r2.summary)
    expect(s).toContain('🔴 contract')
    expect(s).not.toContain('<details>')
    expect(s).toContain(
      "_SQL not shown for 2 migrations: `sqlmigrate` could not run (OperationalError: unable to open database file); it needs the project's database driver and a database it can reach._"
    )
  }, 120_000)
})

test('a push (no base) and a pull request without migrations have no Migrations section', async () => {
  const push = await runAction(inputs, { workspace: repo.dir, env: { GITHUB_API_URL: gh.url } })
  expect(push.code).toBe(0)
  expect(push.summary).not.toContain('Migrations')
  const head = repo.git('rev-parse', 'HEAD').trim()
  repo.write('pages/views.py', `${repo.read('pages/views.py')}\n# still not a migration\n`)
  repo.commit('views only')
  const none = await runAction(inputs, { workspace: repo.dir, env: prEnv(33, head) })
  expect(none.code).toBe(0)
  expect(none.summary).toContain('Django check: passed')
  expect(none.summary).not.toContain('Migrations')
}, 120_000)

test('a base commit that is not in the checkout: one line saying how to fetch it', async () => {
  const r = await runAction(inputs, { workspace: repo.dir, env: prEnv(34, 'f'.repeat(40)) })
  expect(r.code).toBe(0)
  expect(section(r.summary)).toContain(
    "### Migrations\n\n_the pull request's base commit ffffffffffff is not in the checkout, so its migrations are not known: give actions/checkout fetch-depth: 2 (the merge commit and its base) or 0._\n\n"
  )
}, 120_000)
