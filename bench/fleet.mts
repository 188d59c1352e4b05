/**
 * Fleet benchmark: a redeploy (code change, requirements unchanged) to 1 host and to 4 hosts, in one run, the
 * order alternating each round; plus the first deploy to 4 hosts (virtualenvs built everywhere at once: CPU-bound
 * on this machine, whose 2 cores the 4 hosts share). Hosts are network namespaces with their own sshd and deploy
 * root (sandbox/fleet.ts), sharing one SQLite database. Each deploy also reads the whole machine's busy CPU time
 * (/proc/stat): with the hosts on this machine's cores, CPU time / cores is a floor for the wall time.
 *
 * Run: `npm run bench:fleet` (bash bench/run.sh fleet; root). Env: BENCH_ROUNDS (default 3). Writes
 * bench/results-fleet.md and prints it.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { deployInputs, writeServerEnv } from '../sandbox/inputs.js'
import { startFleet, type Fleet, type FleetHost } from '../sandbox/fleet.js'
import { Repo, ROOT, runAction } from '../__tests__/helpers/action.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const RESULTS = path.join(ROOT, 'bench/results-fleet.md')

let fleet: Fleet | undefined
let repo: Repo | undefined
const db = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-fleet-db-'))
chmodSync(db, 0o777)

const config = (hosts: FleetHost[]): string =>
  `hosts:\n${hosts.map(h => `  - { host: "${h.host}:${h.sshPort}", user: ${h.user}, deploy-path: "${h.deployPath}" }`).join('\n')}\n`

/** CPU time the whole machine spent busy so far (every process: the action, sshd, the hosts' Django), in s. */
function busySeconds(): number {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/)
  const [user, nice, system, , , irq, softirq, steal] = ticks.map(Number)
  return (user + nice + system + irq + softirq + steal) / 100 // USER_HZ is 100 on Linux
}
const cpu: Record<string, number> = {}

async function deploy(hosts: FleetHost[], name: string): Promise<number> {
  repo!.write('deploy.yml', config(hosts)).write('VERSION', `${name}\n`).commit(name)
  const start = performance.now()
  const busy = busySeconds()
  const r = await runAction(
    {
      ...deployInputs(hosts[0], { mode: 'deploy', checks: 'none', 'release-name': name }),
      hosts: '',
      user: '',
      'deploy-path': '',
      'known-hosts': hosts.map(h => h.knownHosts).join('\n')
    },
    { workspace: repo!.dir, env: { GITHUB_REF: `refs/tags/${name}` }, timeoutMs: 600_000 }
  )
  const ms = performance.now() - start
  cpu[name] = busySeconds() - busy
  if (r.code !== 0)
    throw new Error(`deploy ${name} to ${hosts.length} host(s) failed:\n${r.log.slice(-3000)}`)
  console.error(`   ${name}: ${hosts.length} host(s), ${(ms / 1000).toFixed(2)} s`)
  return ms
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

try {
  fleet = await startFleet(4, { name: 'bflt', net: 230 })
  for (const h of fleet.hosts) await writeServerEnv(h, { database: `${db}/db.sqlite3`, allowedHosts: '*' })
  repo = new Repo()
  const all = fleet.hosts
  const one = [fleet.hosts[0]]
  console.error('== first deploy to 4 hosts (a virtualenv built on each, at once)')
  const first = await deploy(all, 'first')
  const times: Record<'1' | '4', number[]> = { '1': [], '4': [] }
  for (let i = 1; i <= ROUNDS; i++) {
    const order = i % 2 ? (['1', '4'] as const) : (['4', '1'] as const)
    for (const n of order) times[n].push(await deploy(n === '1' ? one : all, `r${i}-${n}`))
  }
  const m1 = median(times['1'])
  const m4 = median(times['4'])
  const cores = os.cpus().length
  const cpuOf = (n: '1' | '4'): number =>
    median(Array.from({ length: ROUNDS }, (_, i) => cpu[`r${i + 1}-${n}`]))
  const c1 = cpuOf('1')
  const c4 = cpuOf('4')
  const load = os.loadavg()[0].toFixed(2)
  const text = [
    '# Fleet benchmark: 4 hosts vs 1 host',
    '',
    `Command: \`npm run bench:fleet\`. Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. Rounds: ${ROUNDS}. Load average (1 min) at the end: ${load}. 2 CPUs shared by every host.`,
    '',
    'Each host is a network namespace with its own sshd and deploy root (sandbox/fleet.ts); the hosts share one SQLite database, so migrations run once, on the primary. A redeploy commits a new `VERSION` (requirements unchanged: no pip) and deploys it with `checks: none`, to the first host alone or to all 4, the order alternating each round.',
    '',
    `CPU: the whole machine's busy time during each deploy (/proc/stat: the action, every sshd, every host's shell and Django processes), median. With ${cores} cores, a deploy cannot take less wall time than its CPU time / ${cores}.`,
    '',
    '| deploy | median wall (s) | all (s) | vs 1 host | median CPU (s) | CPU / cores (s) | that floor vs 1 host |',
    '|---|--:|--:|--:|--:|--:|--:|',
    `| redeploy, 1 host | ${(m1 / 1000).toFixed(2)} | ${times['1'].map(t => (t / 1000).toFixed(2)).join(', ')} | 1.00 | ${c1.toFixed(2)} | ${(c1 / cores).toFixed(2)} | — |`,
    `| redeploy, 4 hosts | ${(m4 / 1000).toFixed(2)} | ${times['4'].map(t => (t / 1000).toFixed(2)).join(', ')} | ${(m4 / m1).toFixed(2)} | ${c4.toFixed(2)} | ${(c4 / cores).toFixed(2)} | ${(c4 / cores / (m1 / 1000)).toFixed(2)} |`,
    `| first deploy, 4 hosts (4 virtualenvs at once) | ${(first / 1000).toFixed(2)} | — | — | ${cpu.first.toFixed(2)} | ${(cpu.first / cores).toFixed(2)} | — |`,
    ''
  ].join('\n')
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await fleet?.stop()
  repo?.remove()
  rmSync(db, { recursive: true, force: true })
}
