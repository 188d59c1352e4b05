/**
 * Bytes on the wire for a one-file change in a 40 MB project: the action's incremental upload, the action's
 * full upload of the same tree, and rsync for the same change, in one run. The deploying side (the action,
 * rsync) runs in a network namespace joined to the sandbox target by a veth pair; the bytes are the veth's
 * own counters (both directions, SSH handshakes and every step's output included), read before and after.
 *
 * Run: `npm run bench:upload` (bash bench/run.sh upload; root). Env: BENCH_ROUNDS (default 3), BENCH_MB
 * (default 40). Writes bench/results-upload.md and prints it.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { deployInputs, writeServerEnv } from '../sandbox/inputs.js'
import { shq, startTarget, type Target } from '../sandbox/target.js'
import { Repo, ROOT, runAction } from '../__tests__/helpers/action.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const MB = Number(process.env.BENCH_MB || 40)
const RESULTS = path.join(ROOT, 'bench/results-upload.md')
const NS = 'ddbenchup'
const HOST_IP = '127.203.0.1'
const NS_IP = '127.203.0.2'
const VETH = 'ddbu0'
/** rsync as deploy scripts call it, and with -c (compare by checksum, as easingthemes/ssh-deploy's -rlgoDzvc). */
const RSYNC = '-rlptz'
const RSYNC_C = '-rlptzc'

const sh = (cmd: string): string =>
  execFileSync('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] }).toString()

function netnsUp(): void {
  netnsDown()
  sh(
    [
      `ip netns add ${NS}`,
      `ip link add ${VETH} type veth peer name ${VETH}n`,
      `ip link set ${VETH}n netns ${NS}`,
      `ip addr add ${HOST_IP}/30 dev ${VETH}`,
      `ip link set ${VETH} up`,
      `sysctl -qw net.ipv4.conf.${VETH}.route_localnet=1`,
      `ip netns exec ${NS} ip addr add ${NS_IP}/30 dev ${VETH}n`,
      `ip netns exec ${NS} ip link set ${VETH}n up`,
      `ip netns exec ${NS} ip link set lo up`,
      `ip netns exec ${NS} sysctl -qw net.ipv4.conf.${VETH}n.route_localnet=1`
    ].join(' && ')
  )
}
function netnsDown(): void {
  sh(`ip netns del ${NS} 2>/dev/null; ip link del ${VETH} 2>/dev/null; true`)
}
/** Bytes through the veth so far, both directions. */
function wire(): number {
  const read = (f: string): number => Number(readFileSync(`/sys/class/net/${VETH}/statistics/${f}`, 'utf8'))
  return read('rx_bytes') + read('tx_bytes')
}

const scratch = mkdtempSync(path.join(os.tmpdir(), 'dd-bench-upload-'))
// The action's node, run inside the namespace. Not a shell script: sh drops variables whose names are not
// shell names, and the inputs are INPUT_SSH-KEY and the like.
const nodeInNs = path.join(scratch, 'node-in-netns')
writeFileSync(
  nodeInNs,
  `#!/usr/bin/python3\nimport os, sys\nos.execvp('ip', ['ip', 'netns', 'exec', '${NS}', ${JSON.stringify(process.execPath)}] + sys.argv[1:])\n`
)
chmodSync(nodeInNs, 0o755)

let t: Target | undefined
let repo: Repo | undefined

interface Row {
  round: number
  variant: string
  bytes: number
  wallMs: number
}
const rows: Row[] = []

async function action(name: string, round: number, variant: string): Promise<void> {
  const before = wire()
  const start = performance.now()
  const r = await runAction(
    deployInputs(t!, {
      mode: 'deploy',
      checks: 'none',
      'release-name': name,
      hosts: `${HOST_IP}:${t!.sshPort}`
    }),
    { workspace: repo!.dir, env: { GITHUB_REF: `refs/tags/${name}` }, node: nodeInNs, timeoutMs: 300_000 }
  )
  const wallMs = performance.now() - start
  if (r.code !== 0) throw new Error(`${variant} deploy ${name} failed:\n${r.log.slice(-3000)}`)
  rows.push({ round, variant, bytes: wire() - before, wallMs })
  console.error(
    `   r${round} ${variant}: ${Math.round((wire() - before) / 1024)} KiB, ${(wallMs / 1000).toFixed(2)} s`
  )
}

try {
  netnsUp()
  t = await startTarget({ name: 'bupload', bindIp: HOST_IP })
  const knownHosts = t.knownHosts
  await writeServerEnv(t, { allowedHosts: `${HOST_IP},localhost` })

  // A 40 MB project: the example plus static assets that do not compress (images, fonts, bundles).
  repo = new Repo()
  mkdirSync(path.join(repo.dir, 'assets'), { recursive: true })
  const files = MB * 4
  for (let i = 0; i < files; i++)
    writeFileSync(path.join(repo.dir, 'assets', `a${i}.bin`), randomBytes(256 * 1024))
  repo.commit(`${MB} MB of assets`)

  // rsync's copy of the project: a directory on the server holding the same first tree, as rsync-based
  // tools keep one.
  const rsyncDir = `${t.deployPath}/rsync`
  const exportDir = path.join(scratch, 'export')
  const exportTree = (): void => {
    rmSync(exportDir, { recursive: true, force: true })
    mkdirSync(exportDir)
    sh(`git -C ${shq(repo!.dir)} archive HEAD | tar -x -C ${shq(exportDir)}`)
  }
  const keyFile = path.join(scratch, 'key')
  writeFileSync(keyFile, t.privateKey, { mode: 0o600 })
  const khFile = path.join(scratch, 'known_hosts')
  writeFileSync(khFile, knownHosts)
  const rsync = async (round: number, flags: string): Promise<void> => {
    exportTree()
    const before = wire()
    const start = performance.now()
    sh(
      `ip netns exec ${NS} rsync ${flags} --delete -e ${shq(`ssh -p ${t!.sshPort} -i ${keyFile} -o UserKnownHostsFile=${khFile} -o StrictHostKeyChecking=yes -o BatchMode=yes`)} ${shq(exportDir + '/')} ${shq(`${t!.user}@${HOST_IP}:${rsyncDir}${flags}/`)}`
    )
    const wallMs = performance.now() - start
    rows.push({ round, variant: `rsync ${flags} (same change)`, bytes: wire() - before, wallMs })
    console.error(
      `   r${round} rsync ${flags}: ${Math.round((wire() - before) / 1024)} KiB, ${(wallMs / 1000).toFixed(2)} s`
    )
  }

  console.error(`== ${MB} MB project (${files} files of 256 KiB + the example), ${ROUNDS} rounds`)
  await action('v0', 0, 'action, first deploy (full upload)')
  await rsync(0, RSYNC)
  await rsync(0, RSYNC_C)
  for (let round = 1; round <= ROUNDS; round++) {
    repo.write(
      'pages/templates/pages/index.html',
      `${repo.read('pages/templates/pages/index.html')}\n<!-- round ${round} -->\n`
    )
    repo.commit(`round ${round}: one template changed`)
    await action(`v${round}`, round, 'action, one-file change (incremental)')
    await rsync(round, RSYNC)
    await rsync(round, RSYNC_C)
    // The same tree again, as a full upload: the live release without its manifest has nothing to reuse.
    const m = await t.run(`rm ${shq(`${t.deployPath}/releases/v${round}/.deploy-manifest`)}`)
    if (m.code !== 0) throw new Error(m.stderr)
    await action(`v${round}full`, round, 'action, same change, full upload')
  }

  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b)
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
  }
  const measured = rows.filter(r => r.round > 0)
  const by = (v: string): Row[] => measured.filter(r => r.variant === v)
  const rsyncBytes = Math.min(
    ...[RSYNC, RSYNC_C].map(f => median(by(`rsync ${f} (same change)`).map(r => r.bytes)))
  )
  const variants = [...new Set(measured.map(r => r.variant))]
  const kib = (b: number): string => (b / 1024).toFixed(1)
  const text = [
    `# Upload benchmark: bytes on the wire for a one-file change in a ${MB} MB project`,
    '',
    `Command: \`npm run bench:upload\`. Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. Rounds: ${ROUNDS}.`,
    '',
    `The project: the example plus ${files} files of 256 KiB of random bytes (they do not compress), ${MB} MB in git. Each round changes one template (one line) and commits. The action and rsync run in a network namespace joined to the sandbox target by a veth pair; bytes are the veth's rx + tx counters before and after (SSH handshakes, every step's commands and output, both directions). rsync (Debian's 3.2, \`-rlptz --delete\` over the same sshd, host key checked) updates its own copy of the tree on the server, which held the previous round's tree. The full upload sends the same tree as the incremental one, after the live release's manifest was removed.`,
    '',
    '| variant | median KiB on the wire | median / rsync (the fewer bytes of the two) | median wall (s) |',
    '|---|--:|--:|--:|',
    ...variants.map(v => {
      const b = median(by(v).map(r => r.bytes))
      return `| ${v} | ${kib(b)} | ${(b / rsyncBytes).toFixed(2)} | ${(median(by(v).map(r => r.wallMs)) / 1000).toFixed(2)} |`
    }),
    '',
    `First deploy (full upload, unmeasured in the table): ${kib(rows[0].bytes)} KiB; rsync's first copies: ${kib(rows[1].bytes)} and ${kib(rows[2].bytes)} KiB.`,
    '',
    '| round | variant | KiB | wall (s) |',
    '|--:|---|--:|--:|',
    ...rows.map(r => `| ${r.round} | ${r.variant} | ${kib(r.bytes)} | ${(r.wallMs / 1000).toFixed(2)} |`),
    ''
  ].join('\n')
  writeFileSync(RESULTS, text)
  console.log(text)
} finally {
  await t?.stop()
  repo?.remove()
  netnsDown()
  rmSync(scratch, { recursive: true, force: true })
}
