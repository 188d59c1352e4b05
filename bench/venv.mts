/**
 * Dependency-change benchmark (issue 8, item 5): every round adds a new local wheel to requirements.txt and
 * deploys that commit with the built action (a new virtualenv: a hard-linked copy of the live one that pip grows, USR2)
 * and with the hand-written baseline of bench/baseline.mts (`tar | ssh`, pip install into its one virtualenv,
 * migrate, collectstatic, restart), in one run, on two identical sandbox targets, under the same HTTP load.
 * In the same run it also times the virtualenv alone: a shell script over ssh that makes a plain virtualenv and
 * pip-installs the requirements into it, against the action's `virtualenv` step.
 *
 * Run: `npm run bench:venv` (bash bench/run.sh venv). Env: BENCH_ROUNDS (default 3), BENCH_RATE (req/s,
 * default 100), BENCH_CONCURRENCY (default 4). Writes bench/results-venv.md and prints it.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startLoad, versionMarker, type LoadResult } from '../sandbox/load.js'
import { deployInputs, liveInputs } from '../sandbox/inputs.js'
import { shq, startTarget, type Target } from '../sandbox/target.js'
import { Repo, ROOT, runAction } from '../__tests__/helpers/action.js'
import { buildWheel } from '../__tests__/helpers/wheel.js'
import { runBaseline } from './baseline.mjs'

const ROUNDS = intEnv('BENCH_ROUNDS', 3, 1, 20)
const RATE = intEnv('BENCH_RATE', 100, 1, 2000)
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 4, 1, 64)
const PRE_MS = 300
const POST_MS = 500
const RESULTS = path.join(ROOT, 'bench/results-venv.md')

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
const failed = (l: LoadResult): number => l.non200 + l.errors

type Variant = 'baseline' | 'action'
interface Sample {
  round: string
  variant: Variant
  ok: boolean
  wallMs: number
  load: LoadResult
  /** action: seconds of its virtualenv step, and whether pip came from the live virtualenv (seeded) */
  venvStep?: number
  seeded?: boolean
  /** Grown from a copy of the live virtualenv (new pins only). */
  copied?: boolean
  steps?: string
}

/** Runs a script on the target over the system ssh, as the baseline does; returns its wall time. */
async function overSsh(
  t: Target,
  dir: string,
  script: string
): Promise<{ code: number; ms: number; log: string }> {
  const key = path.join(dir, 'key')
  const known = path.join(dir, 'known_hosts')
  writeFileSync(key, t.privateKey.endsWith('\n') ? t.privateKey : `${t.privateKey}\n`, { mode: 0o600 })
  writeFileSync(known, `${t.knownHosts}\n`, { mode: 0o600 })
  const start = performance.now()
  const child = spawn(
    'ssh',
    [
      '-i',
      key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${known}`,
      '-p',
      String(t.sshPort),
      `${t.user}@${t.host}`,
      'bash -s'
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] }
  )
  let log = ''
  child.stdout.on('data', (b: Buffer) => (log += b.toString()))
  child.stderr.on('data', (b: Buffer) => (log += b.toString()))
  child.stdin.end(script)
  const code = await new Promise<number>(r => child.on('close', c => r(c ?? 1)))
  return { code, ms: performance.now() - start, log }
}

async function deploy(
  v: Variant,
  t: Target,
  repo: Repo,
  round: string,
  dir: string,
  first: boolean
): Promise<Sample> {
  const load = first
    ? undefined
    : startLoad(`${t.url}/`, {
        concurrency: CONCURRENCY,
        ratePerSecond: RATE,
        maxSeconds: 300,
        requestTimeoutMs: 10_000,
        marker: versionMarker
      })
  if (load) await sleep(PRE_MS)
  let sample: Omit<Sample, 'load'>
  if (v === 'baseline') {
    const r = await runBaseline(t, `${t.deployPath}/current`, repo.dir, `${t.home}/gunicorn.log`, dir)
    if (r.code !== 0) console.error(r.log.split('\n').slice(-20).join('\n'))
    sample = { round, variant: v, ok: r.code === 0, wallMs: r.wallMs }
  } else {
    const start = performance.now()
    const inputs = first
      ? deployInputs(t, { checks: 'none' })
      : liveInputs(t, { checks: 'none', 'health-check-timeout': '30' })
    const r = await runAction(inputs, {
      workspace: repo.dir,
      env: { GITHUB_REF: `refs/tags/${round}` },
      timeoutMs: 180_000
    })
    const wallMs = performance.now() - start
    if (r.code !== 0) console.error(r.log.split('\n').slice(-30).join('\n'))
    const venv = /^✓ virtualenv \(([\d.]+) s\)$/m.exec(r.log)
    sample = {
      round,
      variant: v,
      ok: r.code === 0 && r.outputs.deployed === 'true',
      wallMs,
      venvStep: venv ? Number(venv[1]) : undefined,
      seeded: /virtualenv seeded with pip from/.test(r.log),
      copied: /virtualenv copied from the live one/.test(r.log),
      steps: [...r.log.matchAll(/^✓ ([\w-]+) \(([\d.]+) s\)$/gm)].map(m => `${m[1]} ${m[2]}`).join(', ')
    }
  }
  if (load) await sleep(POST_MS)
  const result = load
    ? await load.stop()
    : ({ total: 0, ok: 0, non200: 0, errors: 0, byStatus: {}, errorCodes: {}, bodies: {} } as LoadResult)
  const served = await fetch(`${t.url}/version/`)
    .then(r => r.text())
    .catch(() => '')
  if (served.trim() !== repo.read('VERSION').trim()) sample.ok = false
  return { ...sample, load: result }
}

const t0 = performance.now()
const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
const loadBefore = os.loadavg()[0].toFixed(2)
const targets: Partial<Record<Variant, Target>> = {}
let repo: Repo | undefined
const dir = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-venv-'))
let cleaning: Promise<void> | undefined
const cleanup = (): Promise<void> =>
  (cleaning ??= (async () => {
    for (const t of Object.values(targets)) await t?.stop().catch((e: Error) => console.error(e.message))
    repo?.remove()
    rmSync(dir, { recursive: true, force: true })
  })())
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => void cleanup().finally(() => process.exit(130)))
}

try {
  repo = new Repo()
  repo.write('VERSION', 'r0\n').commit('r0')
  console.error('== starting targets')
  for (const v of ['baseline', 'action'] as const) {
    const t = await startTarget({ name: v === 'baseline' ? 'bvbase' : 'bvact' })
    targets[v] = t
    const envDir = v === 'baseline' ? `${t.deployPath}/current` : `${t.deployPath}/shared`
    const w = await t.run(
      `mkdir -p ${shq(envDir)} ${shq(`${t.deployPath}/shared`)} && cat > ${shq(envDir + '/.env')}`,
      {
        input: `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`
      }
    )
    if (w.code !== 0) throw new Error(`writing .env: ${w.stderr}`)
  }
  console.error('== first deploy of r0 (not measured)')
  for (const v of ['baseline', 'action'] as const) {
    const s = await deploy(v, targets[v]!, repo, 'r0', dir, true)
    if (v === 'action') await targets[v]!.startGunicorn()
    if (!s.ok && v === 'baseline') throw new Error('first deploy failed for baseline')
  }

  const samples: Sample[] = []
  const plain: number[] = []
  for (let i = 1; i <= ROUNDS; i++) {
    const round = `d${i}`
    const wheel = buildWheel(path.join(repo.dir, 'vendor'), `benchdep${i}`, '1.0', `VALUE = ${i}\n`)
    repo.write('requirements.txt', repo.read('requirements.txt') + `benchdep${i}==1.0\n`)
    repo.write('VERSION', `${round}\n`).commit(`${round}: ${wheel}`)
    const order: Variant[] = i % 2 ? ['baseline', 'action'] : ['action', 'baseline']
    for (const v of order) {
      const s = await deploy(v, targets[v]!, repo, round, dir, false)
      samples.push(s)
      console.error(
        `   ${round} ${v.padEnd(8)} ${secs(s.wallMs)} s  failed ${failed(s.load)}/${s.load.total}` +
          (s.venvStep !== undefined
            ? `  virtualenv ${s.venvStep} s${s.copied ? ' (copied)' : s.seeded ? ' (seeded)' : ''}`
            : '')
      )
    }
    // The virtualenv alone, by hand over ssh on the action's target: a plain venv and pip install of this
    // round's requirements (the same files the action's virtualenv step installed), then removed.
    const t = targets.action!
    const rel = `${t.deployPath}/releases/${round}`
    const venv = `${t.deployPath}/bench-plain-venv`
    const r = await overSsh(
      t,
      dir,
      `set -eu\nrm -rf ${shq(venv)}\ncd ${shq(rel)}\n/usr/bin/python3 -m venv --system-site-packages ${shq(venv)}\n` +
        `${shq(venv)}/bin/pip install -q --disable-pip-version-check --no-index -r requirements.txt\nrm -rf ${shq(venv)}\n`
    )
    if (r.code !== 0) throw new Error(`plain venv over ssh failed: ${r.log}`)
    plain.push(r.ms)
    console.error(`   ${round} plain venv + pip install over ssh: ${secs(r.ms)} s`)
  }

  const by = (v: Variant) => samples.filter(s => s.variant === v)
  const base = median(by('baseline').map(s => s.wallMs))
  const act = median(by('action').map(s => s.wallMs))
  const venvSteps = by('action').map(s => s.venvStep ?? NaN)
  const lines = [
    '# Dependency-change benchmark: django-deploy vs a hand-written baseline',
    '',
    `Command: \`npm run bench:venv\` (= \`bash bench/run.sh venv\`) with BENCH_ROUNDS=${ROUNDS}` +
      (RATE !== 100 ? `, BENCH_RATE=${RATE}` : '') +
      (CONCURRENCY !== 4 ? `, BENCH_CONCURRENCY=${CONCURRENCY}` : '') +
      '.',
    '',
    `Date: ${date}. Whole run: ${secs(performance.now() - t0)} s. Machine: ${os.availableParallelism()} CPUs ` +
      `(${os.cpus()[0]?.model.trim() ?? '?'}), Debian ${readFileSync('/etc/debian_version', 'utf8').trim()}, ` +
      `Node ${process.version}. Load average (1 min) at the start: ${loadBefore}, at the end: ${os.loadavg()[0].toFixed(2)}.`,
    '',
    `Each round adds a new local wheel to requirements.txt and deploys that commit with both variants (order ` +
      `alternating), each on its own sandbox target, under ${CONCURRENCY} loops of at most ${RATE} req/s ` +
      `(\`GET /\` through nginx, a new connection per request). Wall: start of the deploy command to its exit.`,
    '',
    '| variant | deploys | median wall (s) | min – max (s) | median / baseline | failed / total requests |',
    '|---|---|---|---|---|---|'
  ]
  for (const v of ['baseline', 'action'] as const) {
    const ss = by(v)
    const walls = ss.map(s => s.wallMs)
    const bad = ss.filter(s => !s.ok).length
    lines.push(
      `| ${v === 'baseline' ? 'baseline: `tar \\| ssh`, pip install into its one venv, migrate, collectstatic, restart' : 'action (`checks: none`): new venv (a hard-linked copy of the live one that pip grows, or one seeded with its pip), USR2'} | ` +
        `${ss.length}${bad ? ` (**${bad} failed**)` : ''} | ${secs(median(walls))} | ${secs(Math.min(...walls))} – ${secs(Math.max(...walls))} | ` +
        `${(median(walls) / base).toFixed(2)} | ${ss.reduce((a, s) => a + failed(s.load), 0)} / ${ss.reduce((a, s) => a + s.load.total, 0)} |`
    )
  }
  lines.push(
    '',
    'The virtualenv alone (same run, same requirements, the action target):',
    '',
    '| how | median (s) | each (s) |',
    '|---|---|---|',
    `| by hand over ssh: \`python3 -m venv --system-site-packages\` + \`pip install -r requirements.txt\` | ${secs(median(plain))} | ${plain.map(secs).join(', ')} |`,
    `| the action's \`virtualenv\` step (${by('action').every(s => s.copied) ? 'a copy of the live one every time' : by('action').every(s => s.copied || s.seeded) ? 'copied or seeded every time' : '**not always copied or seeded**'}) | ${median(venvSteps).toFixed(2)} | ${venvSteps.map(x => x.toFixed(1)).join(', ')} |`,
    '',
    `Action / baseline, whole deploy: **${(act / base).toFixed(2)}×** (target ≤ 1.2×).`,
    '',
    "## The action's steps (seconds, from its log)",
    '',
    ...by('action').map(s => `- ${s.round}: ${s.steps}`),
    ''
  )
  const text = lines.join('\n')
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await cleanup()
}
