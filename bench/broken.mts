/**
 * Broken-release benchmark: a release that imports and starts but answers 500, deployed under HTTP load through
 * nginx, by the action as it was before the health check before the switch (its dist/index.js at
 * BENCH_BEFORE, default 26fb4cb, read from git) and by the action now (dist/index.js), in one run, on one
 * sandbox target. Failed = non-200 answers + requests with no answer, counted by the load generator.
 *
 * Run: `npm run bench:broken` (bash bench/run.sh broken). Env: BENCH_RATE (req/s, default 150),
 * BENCH_HEALTH_TIMEOUT (s, default 30), BENCH_BEFORE (a commit). Writes bench/results-broken.md and prints it.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startLoad, versionMarker, type LoadResult } from '../sandbox/load.js'
import { deployInputs, liveInputs } from '../sandbox/inputs.js'
import { shq, startTarget, type Target } from '../sandbox/target.js'
import { Repo, ROOT, runAction, type ActionRun } from '../__tests__/helpers/action.js'

const RATE = Number(process.env.BENCH_RATE || 150)
const HEALTH_TIMEOUT = Number(process.env.BENCH_HEALTH_TIMEOUT || 30)
const BEFORE = process.env.BENCH_BEFORE || '26fb4cb'
const RESULTS = path.join(ROOT, 'bench/results-broken.md')
const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

interface Sample {
  variant: string
  run: ActionRun
  wallMs: number
  load: LoadResult
  servedAfter: string
}

const scratch = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-broken-'))
const before = path.join(scratch, 'before.js')
writeFileSync(
  before,
  execFileSync('git', ['-C', ROOT, 'show', `${BEFORE}:dist/index.js`], { maxBuffer: 64 << 20 })
)
let t: Target | undefined
let repo: Repo | undefined

async function deployBroken(variant: string, dist: string | undefined, tag: string): Promise<Sample> {
  const load = startLoad(`${t!.url}/`, {
    concurrency: 4,
    ratePerSecond: RATE,
    maxSeconds: 300,
    marker: versionMarker
  })
  await sleep(300)
  const start = performance.now()
  const run = await runAction(
    liveInputs(t!, { checks: 'none', 'health-check-timeout': String(HEALTH_TIMEOUT) }),
    { workspace: repo!.dir, env: { GITHUB_REF: `refs/tags/${tag}` }, dist, timeoutMs: 300_000 }
  )
  const wallMs = performance.now() - start
  await sleep(500)
  const result = await load.stop()
  const servedAfter = await fetch(`${t!.url}/version/`).then(r => r.text())
  console.error(
    `   ${variant}: exit ${run.code}, ${(wallMs / 1000).toFixed(1)} s, failed ${result.non200 + result.errors}/${result.total}, serves ${servedAfter}`
  )
  return { variant, run, wallMs, load: result, servedAfter }
}

try {
  t = await startTarget({ name: 'bbroken' })
  const env = `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`
  const w = await t.run(
    `mkdir -p ${shq(t.deployPath + '/shared')} && cat > ${shq(t.deployPath + '/shared/.env')}`,
    {
      input: env
    }
  )
  if (w.code !== 0) throw new Error(`writing .env: ${w.stderr}`)
  repo = new Repo()
  repo.write('VERSION', 'good\n').commit('good')
  const first = await runAction(deployInputs(t, { checks: 'none' }), {
    workspace: repo.dir,
    env: { GITHUB_REF: 'refs/tags/good' }
  })
  if (first.code !== 0) throw new Error(`first deploy failed:\n${first.log.slice(-2000)}`)
  await t.startGunicorn()

  // Imports, starts, and answers every request with a 500 (e.g. a view broken by a bad refactor).
  const views = repo.read('pages/views.py')
  repo
    .write(
      'pages/views.py',
      `${views}\n\ndef _broken(request, *a, **k):\n    return HttpResponse('broken release', status=500)\n\n\nindex = health = version = _broken\n`
    )
    .write('VERSION', 'broken\n')
    .commit('broken')

  console.error(`== a 500-answering release under ${RATE} req/s, health-check-timeout ${HEALTH_TIMEOUT} s`)
  const samples = [
    await deployBroken(`before (dist/index.js at ${BEFORE})`, before, 'broken-before'),
    await deployBroken('now (dist/index.js)', undefined, 'broken-now')
  ]
  const rows = samples.map(s => {
    const failed = s.load.non200 + s.load.errors
    const step = /step ([\w-]+) failed/.exec(s.run.log)?.[1] ?? '?'
    return `| ${s.variant} | ${step} | ${(s.wallMs / 1000).toFixed(1)} | ${failed} / ${s.load.total} | ${s.servedAfter.trim()} |`
  })
  const text = [
    '# Broken-release benchmark: a release that answers 500, deployed under load',
    '',
    `Command: \`npm run bench:broken\`. Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. Load: 4 loops, at most ${RATE} req/s, \`GET /\` through nginx, from 0.3 s before the deploy to 0.5 s after it. health-check-timeout ${HEALTH_TIMEOUT} s. Both variants deploy the same broken commit to the same target, which serves the good release before each.`,
    '',
    '| variant | stopped at step | wall (s) | failed / total requests | served after |',
    '|---|---|--:|--:|---|',
    ...rows,
    ''
  ].join('\n')
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await t?.stop()
  repo?.remove()
  rmSync(scratch, { recursive: true, force: true })
}
