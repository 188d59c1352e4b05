/**
 * Peak memory of the action shipping a release of 5, 50 and 500 MB: the VmHWM of its `node` process for a
 * first deploy (the whole release crosses the network) and for a one-file change on top of it (incremental),
 * in one run, to one sandbox target. The release streams from `git archive` through the SSH channel with
 * back-pressure, so the peak should not grow with the release's size; the baseline is the smallest release's
 * peak in the same run (and, for scale, a bare `node` process).
 *
 * Run: `npm run bench:memory` (bash bench/run.sh memory; root). Env: BENCH_SIZES (MB, default 5,50,500),
 * BENCH_FILE_MB (size of each asset file, default 8), BENCH_NODE_OPTIONS (NODE_OPTIONS of the action's node). Writes bench/results-memory.md and prints it.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { deployInputs, writeServerEnv } from '../sandbox/inputs.js'
import { startTarget, type Target } from '../sandbox/target.js'
import { Repo, ROOT, runAction } from '../__tests__/helpers/action.js'
import { watchActionRss } from './rss.mjs'

const SIZES = (process.env.BENCH_SIZES || '5,50,500').split(',').map(Number)
const FILE_MB = Number(process.env.BENCH_FILE_MB || 8)
if (SIZES.some(n => !Number.isInteger(n) || n < 1 || n > 4000) || !(FILE_MB > 0))
  throw new Error('BENCH_SIZES must be MB values in 1..4000 (e.g. 5,50,500); BENCH_FILE_MB a positive number')
const RESULTS = path.join(ROOT, 'bench/results-memory.md')
/** Node options for the action's process (e.g. `--max-semi-space-size=1`, to see what the GC's sizing costs). */
const NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS ?? ''

interface Row {
  mb: number
  files: number
  kind: string
  peakKb: number
  sentKiB: number
  wallMs: number
  uploadS: string
}
const rows: Row[] = []
const mib = (kb: number): string => (kb / 1024).toFixed(1)

/** VmHWM of a bare node process (what Node itself costs), measured the same way. */
function bareNodeKb(): number {
  const out = execFileSync(process.execPath, [
    '-e',
    "process.stdout.write(/^VmHWM:\\s+(\\d+)/m.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])"
  ])
  return Number(out.toString())
}

let t: Target | undefined
const repos: Repo[] = []
const started = performance.now()
try {
  t = await startTarget({ name: 'bmemory' })
  await writeServerEnv(t)
  const deploy = async (repo: Repo, mb: number, files: number, name: string, kind: string): Promise<void> => {
    const rss = watchActionRss()
    const start = performance.now()
    const r = await runAction(deployInputs(t!, { mode: 'deploy', checks: 'none', 'release-name': name }), {
      workspace: repo.dir,
      env: { GITHUB_REF: `refs/tags/${name}`, ...(NODE_OPTIONS ? { NODE_OPTIONS } : {}) },
      timeoutMs: 900_000
    })
    const wallMs = performance.now() - start
    const peakKb = rss.stop()
    if (r.code !== 0 || peakKb === undefined)
      throw new Error(`deploy ${name} failed (peak ${peakKb}):\n${r.log.slice(-3000)}`)
    const sent = /([\d.]+) KiB sent for/.exec(r.log)
    const upload = /^✓ upload \(([\d.]+) s\)$/m.exec(r.log)
    rows.push({
      mb,
      files,
      kind,
      peakKb,
      sentKiB: Number(sent?.[1] ?? NaN),
      wallMs,
      uploadS: upload?.[1] ?? '?'
    })
    console.error(
      `   ${name} ${kind}: peak ${mib(peakKb)} MiB, ${sent?.[1]} KiB sent, ${(wallMs / 1000).toFixed(1)} s`
    )
  }

  for (const mb of SIZES) {
    // The example project plus `mb` MB of random bytes (they do not compress) in files of FILE_MB.
    const repo = new Repo()
    repos.push(repo)
    mkdirSync(path.join(repo.dir, 'assets'))
    const files = Math.ceil(mb / FILE_MB)
    let left = mb * 1024 * 1024
    for (let i = 0; i < files; i++) {
      const n = Math.min(left, FILE_MB * 1024 * 1024)
      writeFileSync(path.join(repo.dir, 'assets', `a${i}.bin`), randomBytes(n))
      left -= n
    }
    repo.commit(`${mb} MB of assets`)
    console.error(`== ${mb} MB release (${files} asset files)`)
    // A new repository: none of its assets is live on the target, so they all cross the network (the example's
    // own files may be reused from the previous size's release).
    await deploy(repo, mb, files, `m${mb}`, 'first deploy (every asset sent)')
    repo.write(
      'pages/templates/pages/index.html',
      `${repo.read('pages/templates/pages/index.html')}\n<!-- 1 -->\n`
    )
    repo.commit('one template changed')
    await deploy(repo, mb, files, `m${mb}b`, 'one-file change (incremental)')
  }

  const bare = bareNodeKb()
  const first = rows.filter(r => r.kind.startsWith('first'))
  const base = first[0]
  const text = [
    `# Memory benchmark: peak RSS of the action shipping a ${SIZES.join(', ')} MB release`,
    '',
    `Command: \`npm run bench:memory\` (= \`bash bench/run.sh memory\`). Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s. Machine: ${os.cpus().length} CPUs, Node ${process.version}.`,
    '',
    `Each release is the example project plus that many MB of random bytes (they do not compress) in files of ${FILE_MB} MB, committed to a new repository and deployed to one sandbox target with \`checks: none\`: first with every asset sent (none is live there; the example's own small files may be reused from the previous size's release), then the same repository with one template changed (incremental: only that file is sent). Peak = VmHWM of the action's \`node\` process, polled every 25 ms. Baseline: the ${base.mb} MB release's first deploy, same run. A bare \`node -e\` process peaks at ${mib(bare)} MiB.`,
    '',
    '| release | files | deploy | KiB sent | upload step (s) | wall (s) | peak RSS (MiB) | peak / baseline |',
    '|--:|--:|---|--:|--:|--:|--:|--:|',
    ...rows.map(
      r =>
        `| ${r.mb} MB | ${r.files} | ${r.kind} | ${r.sentKiB.toFixed(1)} | ${r.uploadS} | ${(r.wallMs / 1000).toFixed(1)} | ${mib(r.peakKb)} | ${(r.peakKb / base.peakKb).toFixed(2)} |`
    ),
    '',
    `First deploys, each size against the one before: ${first
      .slice(1)
      .map(
        (r, i) =>
          `${r.mb} / ${first[i].mb} MB: ${(r.mb / first[i].mb).toFixed(0)}× the bytes, ${(r.peakKb / first[i].peakKb).toFixed(2)}× the peak`
      )
      .join(
        '; '
      )}. Largest / smallest: ${(first.at(-1)!.mb / base.mb).toFixed(0)}× the bytes, ${(first.at(-1)!.peakKb / base.peakKb).toFixed(2)}× the peak.${NODE_OPTIONS ? ` The action ran with NODE_OPTIONS=${NODE_OPTIONS}.` : ''}`,
    ''
  ].join('\n')
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await t?.stop()
  for (const r of repos) r.remove()
}
