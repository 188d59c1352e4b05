/**
 * What the migration analysis adds to check mode: the built action (`checks: check`, Debian's Django 3.2 on the
 * example project) on a push (no base: no analysis), on a pull request that changes no migration (a `git diff`
 * only), and on one that adds two (the diff, the settings probe, migrations.py with `sqlmigrate` for each, the
 * section). Rounds alternate the three; medians of the wall time of `node dist/index.js`.
 *
 * Run: `bash bench/run.sh migrations` (or `npx tsx bench/migrations.mts` once dist/ is built).
 * Env: BENCH_ROUNDS (default 7). Writes bench/results-migrations.md (with the section the PR run wrote) and
 * prints it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Repo, ROOT, runAction, type ActionRun } from '../__tests__/helpers/action.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS || 7)
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 100) throw new Error('BENCH_ROUNDS must be 1..100')

const ADD_MOOD = [
  'from django.db import migrations, models',
  '',
  '',
  'def fill(apps, schema_editor):',
  '    pass',
  '',
  '',
  'class Migration(migrations.Migration):',
  '    dependencies = [("pages", "0002_first_greeting")]',
  '    operations = [',
  '        migrations.AddField("greeting", "mood", models.CharField(max_length=20, null=True)),',
  '        migrations.RunPython(fill, migrations.RunPython.noop),',
  '    ]',
  ''
].join('\n')
const DROP_CREATED = [
  'from django.db import migrations',
  '',
  '',
  'class Migration(migrations.Migration):',
  '    dependencies = [("pages", "0003_greeting_mood")]',
  '    operations = [migrations.RemoveField("greeting", "created")]',
  ''
].join('\n')

const events = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-migrations-'))
const repo = new Repo()
try {
  const base = repo.git('rev-parse', 'HEAD').trim()
  repo.git('checkout', '-q', '-b', 'no-migrations')
  repo.write('pages/views.py', `${repo.read('pages/views.py')}\n# a change that is not a migration\n`)
  repo.commit('views only')
  repo.git('checkout', '-q', '-b', 'migrations', base)
  repo.write('pages/migrations/0003_greeting_mood.py', ADD_MOOD)
  repo.write('pages/migrations/0004_remove_greeting_created.py', DROP_CREATED)
  repo.commit('mood, no created')

  const pr = (n: number): Record<string, string> => {
    const event = path.join(events, `event-${n}.json`)
    writeFileSync(event, JSON.stringify({ pull_request: { number: n, base: { sha: base } } }))
    return { GITHUB_EVENT_NAME: 'pull_request', GITHUB_REF: `refs/pull/${n}/merge`, GITHUB_EVENT_PATH: event }
  }
  const kinds = [
    { name: 'push (no analysis)', branch: 'no-migrations', env: {} },
    { name: 'pull request, no migration changed', branch: 'no-migrations', env: pr(1) },
    { name: 'pull request adding 2 migrations (3 operations)', branch: 'migrations', env: pr(2) }
  ]
  const times: number[][] = kinds.map(() => [])
  let section = ''
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < kinds.length; i++) {
      const k = kinds[(i + round) % kinds.length]
      repo.git('checkout', '-q', k.branch)
      const started = process.hrtime.bigint()
      const r: ActionRun = await runAction(
        { python: '/usr/bin/python3', checks: 'check' },
        { workspace: repo.dir, env: k.env }
      )
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      if (r.code !== 0) throw new Error(`${k.name}: the action exited ${r.code}\n${r.log.slice(-2000)}`)
      times[kinds.indexOf(k)].push(ms)
      if (k.branch === 'migrations' && 'GITHUB_EVENT_PATH' in k.env)
        section = r.summary.slice(r.summary.indexOf('### Migrations'))
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const push = median(times[0])
  const rows = kinds.map((k, i) => {
    const m = median(times[i])
    const extra = i === 0 ? '–' : `+${((m - push) / 1000).toFixed(2)} s`
    return `| ${k.name} | ${(m / 1000).toFixed(2)} s | ${extra} |`
  })
  const report = [
    '# Migration analysis in check mode',
    '',
    `${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs, ${ROUNDS} rounds, medians of the wall time`,
    'of `node dist/index.js` with `checks: check` on the example project (Debian’s Django 3.2, SQLite).',
    'Command: `npx tsx bench/migrations.mts`.',
    '',
    '| run | median | vs. push |',
    '|---|--:|--:|',
    ...rows,
    '',
    '## The section the pull request run wrote',
    '',
    section.replace(/\[View the workflow run\][^\n]*\n?/, '').trim(),
    ''
  ].join('\n')
  writeFileSync(path.join(ROOT, 'bench/results-migrations.md'), report)
  console.log(report)
} finally {
  repo.remove()
  rmSync(events, { recursive: true, force: true })
}
