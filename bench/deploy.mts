/**
 * Deploy benchmark: the built action (dist/index.js) against a hand-written baseline that does what most
 * workflows do today (`git archive | ssh tar -x` into one directory, venv + pip, migrate, collectstatic,
 * restart Gunicorn), in one run, on identical sandbox targets (sshd + nginx + gunicorn on loopback), each
 * deploy under the same HTTP load through nginx.
 *
 * Run: `npm run bench` (bash bench/run.sh). Env: BENCH_ROUNDS (default 3), BENCH_RATE (req/s, default 100),
 * BENCH_CONCURRENCY (default 4), BENCH_DEPS=0 to skip the new-dependency round.
 * Writes bench/results.md and prints it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startLoad, versionMarker, type LoadResult } from '../sandbox/load.js'
import { deployInputs, liveInputs } from '../sandbox/inputs.js'
import { execFile, shq, startTarget, type Target } from '../sandbox/target.js'
import { Repo, ROOT, runAction } from '../__tests__/helpers/action.js'
import { buildWheel } from '../__tests__/helpers/wheel.js'
import { runBaseline } from './baseline.mjs'
import { watchActionRss } from './rss.mjs'

const ROUNDS = intEnv('BENCH_ROUNDS', 3, 1, 20)
const RATE = intEnv('BENCH_RATE', 100, 1, 2000)
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 4, 1, 64)
const DEPS_ROUND = process.env.BENCH_DEPS !== '0'
const PRE_MS = 300 // load runs this long before a deploy starts
const POST_MS = 500 // and this long after it exits
const RESULTS = path.join(ROOT, 'bench/results.md')

type VariantId = 'baseline' | 'action' | 'action-checks'
const VARIANTS: Record<VariantId, string> = {
  baseline: 'baseline: `tar \\| ssh`, pip, migrate, collectstatic, restart',
  action: 'action (`checks: none`)',
  'action-checks': 'action + runner checks (`checks: check, migrations`)'
}
const ORDER: VariantId[] = ['baseline', 'action', 'action-checks']

interface Sample {
  round: string
  variant: VariantId
  ok: boolean
  wallMs: number
  peakRssKb?: number
  load: LoadResult
  served: string
  expected: string
  reload: string
  /** The action's own step timings (`✓ step (1.2 s)` lines of its log). */
  steps?: string
  /** Action only: ms from its start until it logged the end of its last step (cleanup); the rest is exit. */
  doneMs?: number
}

function intEnv(name: string, def: number, min: number, max: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name} must be an integer in ${min}..${max}`)
  return n
}

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const secs = (ms: number): string => (ms / 1000).toFixed(2)

// ---------------------------------------------------------------------------------------------------------

interface Host {
  variant: VariantId
  t: Target
  /** baseline only: the one app directory (`<deployPath>/current`, a plain directory, which is what the
   * sandbox's nginx /static/ alias and gunicorn command point at). */
  app: string
  gunicornLog: string
}

function actionInputs(h: Host, first: boolean): Record<string, string> {
  const checks = h.variant === 'action-checks' ? 'check, migrations' : 'none'
  // The first, unmeasured deploy starts from an empty server: nothing to reload or health-check yet.
  if (first) return deployInputs(h.t, { checks })
  return liveInputs(h.t, { checks, 'health-check-timeout': '30' })
}

async function deployOnce(
  h: Host,
  repo: Repo,
  release: string,
  scriptDir: string,
  /** The unmeasured first deploy: no load, and for the action no reload/nginx/health inputs. */
  first: boolean
): Promise<Sample> {
  const expected = repo.read('VERSION').trim()
  const load = !first
    ? startLoad(`${h.t.url}/`, {
        concurrency: CONCURRENCY,
        ratePerSecond: RATE,
        maxSeconds: 300,
        requestTimeoutMs: 10_000,
        marker: versionMarker
      })
    : undefined
  if (load) await sleep(PRE_MS)
  let ok: boolean
  let wallMs: number
  let peakRssKb: number | undefined
  let reload = ''
  let steps: string | undefined
  let doneMs: number | undefined
  let log: string
  if (h.variant === 'baseline') {
    const r = await runBaseline(h.t, h.app, repo.dir, h.gunicornLog, scriptDir)
    ok = r.code === 0
    wallMs = r.wallMs
    log = r.log
    reload = 'restart (TERM, start)'
  } else {
    const rss = watchActionRss()
    const start = performance.now()
    const r = await runAction(actionInputs(h, first), {
      workspace: repo.dir,
      env: { GITHUB_REF: `refs/tags/${release}` },
      timeoutMs: 180_000,
      // Only watches the log (never kills): when did the last step of the deploy end?
      killWhen: text => {
        if (doneMs === undefined && /^✓ cleanup \(/m.test(text)) doneMs = performance.now() - start
        return false
      }
    })
    wallMs = performance.now() - start
    peakRssKb = rss.stop()
    ok = r.code === 0 && r.outputs.deployed === 'true'
    log = r.log
    reload = /re-executed \(USR2\)/.test(log) ? 'USR2' : /reloaded \(HUP\)/.test(log) ? 'HUP' : 'none'
    steps = [...log.matchAll(/^✓ ([\w-]+) \(([\d.]+) s\)$/gm)].map(m => `${m[1]} ${m[2]}`).join(', ')
  }
  if (load) await sleep(POST_MS)
  const result = load
    ? await load.stop()
    : ({ total: 0, ok: 0, non200: 0, errors: 0, byStatus: {}, errorCodes: {}, bodies: {} } as LoadResult)
  const served = await fetch(`${h.t.url}/version/`)
    .then(async r => (r.status === 200 ? (await r.text()).trim() : `HTTP ${r.status}`))
    .catch((e: Error) => `error ${e.message}`)
  if (!ok) {
    console.error(`!! ${h.variant} ${release} failed; last lines:\n${log.split('\n').slice(-30).join('\n')}`)
  }
  return {
    round: release,
    variant: h.variant,
    ok,
    wallMs,
    peakRssKb,
    load: result,
    served,
    expected,
    reload,
    steps,
    doneMs
  }
}

// ---------------------------------------------------------------------------------------------------------
// Report

const failed = (l: LoadResult): number => l.non200 + l.errors

function describeFailures(l: LoadResult): string {
  const parts = [
    ...Object.entries(l.byStatus)
      .filter(([s]) => s !== '200')
      .map(([s, n]) => `${n}× ${s}`),
    ...Object.entries(l.errorCodes).map(([c, n]) => `${n}× ${c}`)
  ]
  if (!parts.length) return '—'
  const window =
    l.firstFailureMs !== undefined && l.lastFailureMs !== undefined
      ? ` over ${secs(l.lastFailureMs - l.firstFailureMs)} s`
      : ''
  return parts.join(', ') + window
}

async function versionOf(file: string, args: string[], re: RegExp): Promise<string> {
  const r = await execFile(file, args, { timeoutMs: 10_000 }).catch(() => undefined)
  const m = r ? re.exec(r.stdout + r.stderr) : null
  return m ? m[1] : '?'
}

async function machine(): Promise<string> {
  const debian = readFileSync('/etc/debian_version', 'utf8').trim()
  const py = '/usr/bin/python3'
  const [ssh, nginx, gunicorn, django] = await Promise.all([
    versionOf('/usr/bin/ssh', ['-V'], /OpenSSH_([\w.]+)/),
    versionOf('/usr/sbin/nginx', ['-v'], /nginx\/([\d.]+)/),
    versionOf(py, ['-c', 'import gunicorn; print(gunicorn.__version__)'], /([\d.]+)/),
    versionOf(py, ['-m', 'django', '--version'], /([\d.]+)/)
  ])
  return (
    `${os.availableParallelism()} CPUs (${os.cpus()[0]?.model.trim() ?? '?'}), ` +
    `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Debian ${debian}, Node ${process.version}, ` +
    `OpenSSH ${ssh}, nginx ${nginx}, gunicorn ${gunicorn}, Django ${django}`
  )
}

function report(
  samples: Sample[],
  info: { machine: string; date: string; totalMs: number; loadBefore: string }
): string {
  const lines: string[] = []
  const plain = samples.filter(s => s.round !== 'deps')
  const deps = samples.filter(s => s.round === 'deps')
  const baseMedian = median(plain.filter(s => s.variant === 'baseline').map(s => s.wallMs))
  const baseDeps = deps.find(s => s.variant === 'baseline')?.wallMs
  const good = (s: Sample) => s.ok && s.served === s.expected
  const mb = (kb: number) => `${Math.round(kb / 1024)} MB`
  lines.push('# Deploy benchmark: django-deploy vs a `tar | ssh` + restart baseline', '')
  lines.push(
    `Command: \`npm run bench\` (= \`bash bench/run.sh\`) with BENCH_ROUNDS=${ROUNDS}` +
      (DEPS_ROUND ? '' : ', BENCH_DEPS=0') +
      (RATE !== 100 ? `, BENCH_RATE=${RATE}` : '') +
      (CONCURRENCY !== 4 ? `, BENCH_CONCURRENCY=${CONCURRENCY}` : '') +
      '.',
    '',
    `Date: ${info.date}. Whole run (targets, first deploys, rounds, clean-up excluded): ${secs(info.totalMs)} s.`,
    '',
    `Machine: ${info.machine}. Load average (1 min) at the start: ${info.loadBefore}, at the end: ` +
      `${os.loadavg()[0].toFixed(2)} (other work on the machine shows up here and in the spread of the times).`,
    '',
    `Each variant deploys the same commit to its own sandbox target (same sshd, nginx, 2 gunicorn workers, ` +
      `all on loopback), one variant at a time, the order rotating each round. Load during each deploy: ` +
      `${CONCURRENCY} loops, at most ${RATE} req/s in all, a new TCP connection per request, \`GET /\` through ` +
      `nginx, from ${PRE_MS} ms before the deploy starts to ${POST_MS} ms after it exits. Failed = non-200 ` +
      `answers + requests with no answer. Wall: from the start of the deploy command to its exit. ` +
      `Last step: until the action logged the end of its last step (\`cleanup\`); the rest is the process ` +
      `exiting.`,
    ''
  )
  lines.push(
    '| variant | deploys | median wall (s) | min – max wall (s) | median wall / baseline | median until last step (s) | failed / total requests | peak RSS of the action |',
    '|---|---|---|---|---|---|---|---|'
  )
  for (const v of ORDER) {
    const ss = plain.filter(s => s.variant === v)
    if (!ss.length) continue
    const walls = ss.map(s => s.wallMs)
    const m = median(walls)
    const done = ss.map(s => s.doneMs).filter((x): x is number => x !== undefined)
    const fails = ss.reduce((a, s) => a + failed(s.load), 0)
    const total = ss.reduce((a, s) => a + s.load.total, 0)
    const rss = ss.map(s => s.peakRssKb).filter((x): x is number => x !== undefined)
    const bad = ss.filter(s => !good(s)).length
    lines.push(
      `| ${VARIANTS[v]} | ${ss.length}${bad ? ` (**${bad} failed**)` : ''} | ${secs(m)} | ` +
        `${secs(Math.min(...walls))} – ${secs(Math.max(...walls))} | ${(m / baseMedian).toFixed(2)} | ` +
        `${done.length ? secs(median(done)) : '—'} | ${fails} / ${total} | ` +
        `${rss.length ? `${mb(Math.max(...rss))} (max)` : '—'} |`
    )
  }
  for (const s of deps) {
    lines.push(
      `| ${VARIANTS[s.variant]}, **new dependency** | 1${good(s) ? '' : ' (**failed**)'} | ${secs(s.wallMs)} | — | ` +
        `${baseDeps ? (s.wallMs / baseDeps).toFixed(2) : '—'} | ${s.doneMs ? secs(s.doneMs) : '—'} | ` +
        `${failed(s.load)} / ${s.load.total} | ${s.peakRssKb ? mb(s.peakRssKb) : '—'} |`
    )
  }
  lines.push('', '## Every deploy', '')
  lines.push(
    '| round | variant | wall (s) | last step (s) | reload | failed / total | failures | new version served after |',
    '|---|---|---|---|---|---|---|---|'
  )
  for (const s of samples) {
    lines.push(
      `| ${s.round} | ${s.variant} | ${secs(s.wallMs)} | ${s.doneMs ? secs(s.doneMs) : '—'} | ${s.reload} | ` +
        `${failed(s.load)} / ${s.load.total} | ${describeFailures(s.load)} | ` +
        `${good(s) ? 'yes' : `**no** (${s.served}, exit ok: ${s.ok})`} |`
    )
  }
  lines.push('', "## The action's steps (seconds, from its log)", '')
  for (const s of samples) if (s.steps) lines.push(`- ${s.round} ${s.variant}: ${s.steps}`)
  lines.push('')
  return lines.join('\n')
}

// ---------------------------------------------------------------------------------------------------------

const t0 = performance.now()
const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
const loadBefore = os.loadavg()[0].toFixed(2)
const hosts: Host[] = []
let repo: Repo | undefined
const scriptDir = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-'))
let cleaning: Promise<void> | undefined
const cleanup = (): Promise<void> =>
  (cleaning ??= (async () => {
    const errors: string[] = []
    for (const h of hosts) await h.t.stop().catch((e: Error) => errors.push(e.message))
    repo?.remove()
    rmSync(scriptDir, { recursive: true, force: true })
    if (errors.length) throw new Error(`cleanup: ${errors.join('\n')}`)
  })())
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: stopping the targets`)
    void cleanup().finally(() => process.exit(130))
  })
}

try {
  repo = new Repo()
  repo.write('VERSION', 'r0\n').commit('r0')
  const env = (t: Target) =>
    `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`

  console.error('== starting targets')
  for (const v of ORDER) {
    const t = await startTarget({ name: v === 'baseline' ? 'bbase' : v === 'action' ? 'bact' : 'bchk' })
    const h: Host = { variant: v, t, app: `${t.deployPath}/current`, gunicornLog: `${t.home}/gunicorn.log` }
    hosts.push(h)
    // Server-side settings, as a user puts them there before the first deploy.
    const dir = v === 'baseline' ? h.app : `${t.deployPath}/shared`
    const w = await t.run(
      `mkdir -p ${shq(dir)} ${shq(t.deployPath + '/shared')} && cat > ${shq(dir + '/.env')}`,
      {
        input: env(t)
      }
    )
    if (w.code !== 0) throw new Error(`writing .env on ${t.user}: ${w.stderr}`)
  }

  console.error('== first deploy of r0 (not measured)')
  for (const h of hosts) {
    const s = await deployOnce(h, repo, 'r0', scriptDir, true)
    if (!s.ok) throw new Error(`first deploy failed for ${h.variant}`)
    if (h.variant !== 'baseline') await h.t.startGunicorn()
    const r = await fetch(`${h.t.url}/version/`)
    if (r.status !== 200 || (await r.text()).trim() !== 'r0') throw new Error(`${h.variant}: r0 not served`)
  }

  const samples: Sample[] = []
  const rounds = [...Array.from({ length: ROUNDS }, (_, i) => `r${i + 1}`), ...(DEPS_ROUND ? ['deps'] : [])]
  for (const [i, round] of rounds.entries()) {
    if (round === 'deps') {
      const wheel = buildWheel(path.join(repo.dir, 'vendor'), 'benchdep', '1.0', 'VALUE = 1\n')
      repo.write('requirements.txt', repo.read('requirements.txt') + 'benchdep==1.0\n')
      console.error(`== round deps: ${wheel} added to requirements.txt`)
    }
    repo.write('VERSION', `${round}\n`).commit(round)
    const order = ORDER.map((_, k) => ORDER[(k + i) % ORDER.length])
    for (const v of order) {
      const h = hosts.find(x => x.variant === v)!
      const s = await deployOnce(h, repo, round, scriptDir, false)
      samples.push(s)
      console.error(
        `   ${round} ${v.padEnd(13)} ${secs(s.wallMs)} s  failed ${failed(s.load)}/${s.load.total}  ` +
          `${s.reload}  serves ${s.served}${s.peakRssKb ? `  rss ${Math.round(s.peakRssKb / 1024)} MB` : ''}`
      )
      if (s.steps) console.error(`     steps: ${s.steps}`)
    }
  }

  const text = report(samples, {
    machine: await machine(),
    date,
    totalMs: performance.now() - t0,
    loadBefore
  })
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await cleanup()
}
