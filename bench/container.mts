/**
 * Container sandbox benchmark: how long a bare systemd server (sandbox/container.ts) takes to boot and to stop,
 * one after another on this machine; with `BENCH_POSTGRES=1` also a fresh PostgreSQL cluster started as a unit.
 *
 * Run: `npx tsx bench/container.mts` (root). Env: BENCH_ROUNDS (default 5). Prints medians and every round.
 */
import { startContainer } from '../sandbox/container.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS || 5)
const postgres = process.env.BENCH_POSTGRES === '1'
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const rows: Array<{ boot: number; start: number; stop: number }> = []
for (let i = 0; i < ROUNDS; i++) {
  const t0 = Date.now()
  const c = await startContainer({ name: 'bench', net: 253, n: 200, postgres })
  const start = Date.now() - t0
  const t1 = Date.now()
  await c.stop()
  rows.push({ boot: c.bootMs, start, stop: Date.now() - t1 })
}
const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
console.log(`container sandbox${postgres ? ' with PostgreSQL' : ''}, ${ROUNDS} rounds (median):`)
console.log(`  nspawn to running:      ${s(median(rows.map(r => r.boot)))}`)
console.log(
  `  startContainer() total: ${s(median(rows.map(r => r.start)))} (overlay, keys, boot${postgres ? ', cluster' : ''})`
)
console.log(`  stop():                 ${s(median(rows.map(r => r.stop)))}`)
console.log(`  rounds: ${rows.map(r => `${s(r.boot)}/${s(r.start)}/${s(r.stop)}`).join('  ')}`)
