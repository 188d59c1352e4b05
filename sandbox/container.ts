/**
 * A whole Debian server on this machine: systemd as PID 1 in `systemd-nspawn`, on an overlay of this machine's
 * own root (upper layer on a tmpfs, gone after `stop()`), in a network namespace of its own joined to this one by
 * a veth pair (sandbox/netns.ts), so it is reached on `127.<net>.<n>.2` as a real host would be.
 *
 * It looks like a freshly installed server: sshd on port 22 with fresh host keys, root login by key only (a fresh
 * admin key pair), nginx with its default site, no deploy user, no app units, PostgreSQL masked unless asked
 * (see sandbox/container-image.ts for what is hidden from the machine's live files).
 *
 * Everything is stopped by PID and unmounted in `stop()`, also when `startContainer` fails halfway.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, openSync, promises as fs } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { makeBare, makeKeys, type ContainerHostKey } from './container-image.js'
import { killCgroups, makeCgroups, pidsInCgroups, removeCgroups } from './cgroups.js'
import { makeNamespace, removeNamespace } from './netns.js'
import { execFile, isAlive, mustExec, waitDead, type RunResult } from './target.js'

export interface ContainerOptions {
  /** Prefix of the machine, namespace, veth and directories (lowercase letters and digits, 1-8 chars). */
  name: string
  /** Picks the 127.<net>.0.0/16 block (2-254), so concurrent test files don't collide. */
  net: number
  /** Picks 127.<net>.<n>.0/30 inside the block (0-255). Default 1. */
  n?: number
  /** Files written inside before boot: absolute path → content (mode 0644 unless given). */
  files?: Record<string, string | { content: string; mode?: number }>
  /** Content of /etc/os-release inside (e.g. an unsupported distribution). */
  osRelease?: string
  /** Start PostgreSQL 15 with a fresh `main` cluster (masked otherwise: it costs boot time). */
  postgres?: boolean
  /** How long to wait for `systemctl is-system-running` to say running/degraded. Default 90000 ms. */
  bootTimeoutMs?: number
}

export interface ExecOptions {
  /** Text written to the command's stdin. */
  input?: string
  /** Kill the command after this many ms. Default 120000. */
  timeoutMs?: number
  /** Extra environment variables. */
  env?: Record<string, string>
}

export interface Container {
  /** Machine name (also its hostname). */
  machine: string
  /** The container's address, `127.<net>.<n>.2`. */
  host: string
  /** This side's end of its veth, `127.<net>.<n>.1`: reachable from inside (e.g. for an ACME server). */
  outside: string
  sshPort: 22
  adminUser: 'root'
  /** OpenSSH private key text of the admin key (ed25519, no passphrase); root's authorized_keys holds its pair. */
  privateKey: string
  publicKey: string
  /** known_hosts line of the ed25519 host key: `127.x.y.2 ssh-ed25519 AAAA…`. */
  knownHosts: string
  /** `SHA256:…` of the ed25519 host key. */
  fingerprint: string
  /** ed25519, ecdsa and rsa host keys (all fresh). */
  hostKeys: ContainerHostKey[]
  netns: string
  veth: string
  /** PID (in this namespace) of the container's systemd. */
  pid: number
  /** `pid:[inode]` of the container's PID namespace (to check that nothing of it is left after `stop()`). */
  pidNamespace: string
  /** Its cgroups here (`dd-<machine>` per hierarchy; sandbox/cgroups.ts), removed by `stop()`. */
  cgroups: string[]
  /** The merged root directory of the container, as seen from here. */
  root: string
  /** Milliseconds from spawning nspawn to running/degraded. */
  bootMs: number
  /** Units that had failed when the boot finished (`degraded`), one per line; empty when `running`. */
  failedUnits: string
  /** Runs `bash -c cmd` as root inside (all of its namespaces). Never rejects for a non-zero exit. */
  exec(cmd: string, opts?: ExecOptions): Promise<RunResult>
  /** Writes a file inside (through the overlay), parents made as needed. */
  writeFile(file: string, content: string, mode?: number): Promise<void>
  /** Powers off, waits for nspawn to exit, unmounts, removes the namespace. Idempotent. */
  stop(): Promise<void>
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const kill = (pid: number, signal: NodeJS.Signals): void => {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** PIDs whose status names `ppid` as parent and whose innermost PID is 1: the container's init. */
async function findInit(parent: number): Promise<number | undefined> {
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const status = await fs.readFile(`/proc/${name}/status`, 'utf8').catch(() => '')
    const ppid = /^PPid:\s+(\d+)/m.exec(status)?.[1]
    const nspid = /^NSpid:\s+(.+)$/m.exec(status)?.[1].trim().split(/\s+/)
    if (Number(ppid) === parent && nspid && nspid.length > 1 && nspid[nspid.length - 1] === '1')
      return Number(name)
  }
  return undefined
}

/** Live processes in PID namespace `ns` (`pid:[inode]`). */
export async function pidsInNamespace(ns: string): Promise<number[]> {
  const found: number[] = []
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const link = await fs.readlink(`/proc/${name}/ns/pid`).catch(() => '')
    if (link === ns && (await isAlive(Number(name)))) found.push(Number(name))
  }
  return found
}

const tailOf = async (file: string): Promise<string> =>
  (await fs.readFile(file, 'utf8').catch(() => '')).trimEnd().split('\n').slice(-25).join('\n')

function validate(o: ContainerOptions): void {
  if (process.getuid?.() !== 0) throw new Error('startContainer needs root (mounts, namespaces, nspawn)')
  if (!/^[a-z][a-z0-9]{0,7}$/.test(o.name))
    throw new Error(
      `container name: expected 1-8 lowercase letters/digits starting with a letter, got ${o.name}`
    )
  for (const f of Object.keys(o.files ?? {}))
    if (!path.isAbsolute(f) || f.split('/').includes('..'))
      throw new Error(`container file: not absolute: ${f}`)
}

export async function startContainer(o: ContainerOptions): Promise<Container> {
  validate(o)
  try {
    return await startOnce(o)
  } catch (e) {
    // Seen once in a full run, with two other containers starting on the machine: nspawn's child exited before it
    // could report ("Child died too early"), the log saying nothing more. Everything of that try is gone (its
    // clean-ups ran): one more try, with a new id, and an error only if that fails too.
    if (!/Child died too early/.test((e as Error).message)) throw e
    console.warn(`startContainer ${o.name}: systemd-nspawn's child died early; trying once more`)
    return startOnce(o)
  }
}

async function startOnce(o: ContainerOptions): Promise<Container> {
  const id = `${o.name}${randomBytes(2).toString('hex')}`
  const base = `/var/lib/machines/dd-${id}`
  const ovl = `${base}.ovl`
  const cleanups: Array<() => Promise<void>> = []
  const state: State & { stopped?: Promise<void> } = {}
  const stop = (): Promise<void> => (state.stopped ??= runCleanups(cleanups))
  let cgroups: string[] = []
  try {
    const ns = makeNamespace(`dd-${id}`, `v${id}`, o.net, o.n ?? 1)
    cleanups.push(async () => removeNamespace(ns.name, ns.veth))
    await mountOverlay(base, ovl, cleanups)

    await makeBare(base, {
      machineId: randomBytes(16).toString('hex'),
      hostname: id
    })
    const keys = await makeKeys(base, ovl, ns.inside)
    const writeFile = async (file: string, content: string, mode = 0o644): Promise<void> => {
      const p = path.join(base, file)
      await fs.mkdir(path.dirname(p), { recursive: true })
      await fs.rm(p, { force: true }) // a symlink (e.g. /etc/os-release) is replaced, not followed
      await fs.writeFile(p, content, { mode })
      await fs.chmod(p, mode)
    }
    if (o.osRelease !== undefined) await writeFile('/etc/os-release', o.osRelease)
    for (const [f, v] of Object.entries(o.files ?? {}))
      await (typeof v === 'string' ? writeFile(f, v) : writeFile(f, v.content, v.mode))

    const started = Date.now()
    const log = `${ovl}/console.log`
    cgroups = await makeCgroups(id)
    cleanups.push(() => removeCgroups(cgroups))
    state.nspawn = spawnNspawn(base, id, ns.name, log, cgroups)
    await waitInCgroups(state.nspawn, cgroups, log)
    cleanups.push(() => shutdown(state, cgroups))
    const exec = (cmd: string, e: ExecOptions = {}): Promise<RunResult> =>
      state.init === undefined
        ? Promise.resolve({ code: 125, stdout: '', stderr: 'container not running' })
        : execFile('/usr/bin/nsenter', ['-t', String(state.init), '-a', '/bin/bash', '-c', cmd], {
            env: { PATH, LANG: 'C.UTF-8', HOME: '/root', ...e.env },
            input: e.input,
            timeoutMs: e.timeoutMs
          })
    const failedUnits = await waitBooted(state, exec, log, o.bootTimeoutMs ?? 90_000)
    const bootMs = Date.now() - started
    state.booted = true
    if (!(await canConnect(ns.inside, 22)))
      throw new Error(`container ${id}: sshd not reachable on ${ns.inside}:22`)
    if (o.postgres) await freshPostgres(exec)
    const ed = keys.hostKeys[0]
    return {
      machine: id,
      host: ns.inside,
      outside: ns.outside,
      sshPort: 22,
      adminUser: 'root',
      ...keys,
      knownHosts: ed.knownHosts,
      fingerprint: ed.fingerprint,
      netns: ns.name,
      veth: ns.veth,
      pid: state.init as number,
      pidNamespace: state.pidns as string,
      root: base,
      cgroups,
      bootMs,
      failedUnits,
      exec,
      writeFile,
      stop
    }
  } catch (e) {
    await stop().catch((s: Error) => console.warn(`cleaning up after a failed start: ${s.message}`))
    throw e
  }
}

/** A tmpfs at `ovl` holding the upper and work dirs of an overlay of / mounted at `base` (the upper dir must not be
 * on overlayfs, and this machine's root may be). Each step's undo goes on `cleanups`. */
async function mountOverlay(base: string, ovl: string, cleanups: Array<() => Promise<void>>): Promise<void> {
  await fs.mkdir(ovl, { recursive: true })
  cleanups.push(() => fs.rmdir(ovl))
  await mustExec('/usr/bin/mount', ['-t', 'tmpfs', '-o', 'mode=0700', 'tmpfs', ovl])
  cleanups.push(() => umount(ovl))
  await fs.mkdir(`${ovl}/upper`)
  await fs.mkdir(`${ovl}/work`)
  await snapshotEtc(`${ovl}/upper`)
  await fs.mkdir(base)
  cleanups.push(() => fs.rmdir(base))
  const opts = `lowerdir=/,upperdir=${ovl}/upper,workdir=${ovl}/work`
  await mustExec('/usr/bin/mount', ['-t', 'overlay', 'overlay', '-o', opts, base])
  cleanups.push(() => umount(base))
}

/**
 * /etc as it is now, opaque in the upper layer: the lower /etc is this machine's, live, and other tests change it
 * while the container runs (seen: the setup e2e test's checksum of /etc changed during a run, e.g. /etc/passwd- and
 * /etc/postgresql/ of other tests). ≈ 4 MB, ≈ 0.2 s.
 */
async function snapshotEtc(upper: string): Promise<void> {
  await mustExec('/bin/cp', ['-a', '/etc', `${upper}/`])
  const setOpaque = 'import os, sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")'
  await mustExec('/usr/bin/python3', ['-c', setOpaque, `${upper}/etc`])
}

async function runCleanups(cleanups: Array<() => Promise<void>>): Promise<void> {
  const errors: string[] = []
  for (const c of cleanups.reverse()) {
    try {
      await c()
    } catch (e) {
      errors.push((e as Error).message)
    }
  }
  if (errors.length) throw new Error(`container stop: ${errors.join('; ')}`)
}

async function umount(dir: string): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await execFile('/usr/bin/umount', [dir])
    if (r.code === 0 || /not mounted|no mount point/i.test(r.stderr)) return
    if (i >= 20) throw new Error(`umount ${dir}: ${r.stderr.trim()}`)
    await sleep(250) // busy for a moment after the container's last process exits
  }
}

function spawnNspawn(root: string, machine: string, netns: string, log: string, cgroups: string[]): number {
  const fd = openSync(log, 'a', 0o600)
  try {
    const args = [
      `--directory=${root}`,
      '--boot',
      `--machine=${machine}`,
      `--network-namespace-path=/run/netns/${netns}`,
      '--register=no',
      '--keep-unit',
      '--link-journal=no',
      '--console=read-only'
    ]
    // Into its own cgroups first (sandbox/cgroups.ts), then exec: the PID stays nspawn's.
    const enter =
      'for f in $DD_CGROUPS; do echo $$ > "$f/cgroup.procs" || exit 97; done; unset DD_CGROUPS; exec "$@"'
    const child = spawn('/bin/sh', ['-c', enter, 'sh', '/usr/bin/systemd-nspawn', ...args], {
      stdio: ['ignore', fd, fd],
      detached: true,
      // A v2 (unified) hierarchy inside: with the v1 one, a unit whose processes exited could stay
      // "deactivating (final-sigkill)" until its stop timeout (seen with user@0.service: poweroff took 30 s).
      env: { PATH, LANG: 'C.UTF-8', SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1', DD_CGROUPS: cgroups.join(' ') }
    })
    child.on('error', () => undefined)
    child.unref()
    if (child.pid === undefined) throw new Error('systemd-nspawn did not start')
    return child.pid
  } finally {
    closeSync(fd)
  }
}

/** Until the wrapper has moved itself into the cgroups (from then on, killing the cgroups kills the container). */
async function waitInCgroups(pid: number, cgroups: string[], log: string): Promise<void> {
  for (let i = 0; !(await pidsInCgroups(cgroups)).includes(pid); i++) {
    if (!(await isAlive(pid)) || i > 100) {
      kill(pid, 'SIGKILL')
      throw new Error(`systemd-nspawn did not enter its cgroups ${cgroups.join(' ')}:\n${await tailOf(log)}`)
    }
    await sleep(50)
  }
}

/** Waits for running/degraded; returns the failed units (degraded), printed as a warning. */
async function waitBooted(
  state: State,
  exec: (cmd: string) => Promise<RunResult>,
  log: string,
  timeoutMs: number
): Promise<string> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    if (!(await isAlive(state.nspawn as number)))
      throw new Error(`systemd-nspawn exited during boot:\n${await tailOf(log)}`)
    if (state.init === undefined) {
      state.init = await findInit(state.nspawn as number)
      if (state.init !== undefined) state.pidns = await fs.readlink(`/proc/${state.init}/ns/pid`)
    } else {
      last = (await exec('systemctl is-system-running')).stdout.trim()
      if (last === 'running') return ''
      if (last === 'degraded') {
        const failed = (await exec('systemctl --failed --no-legend --plain')).stdout.trim()
        console.warn(`container boot degraded; failed units:\n${failed}`)
        return failed
      }
    }
    if (Date.now() >= deadline) {
      const jobs = state.init === undefined ? '' : (await exec('systemctl list-jobs --no-pager')).stdout
      throw new Error(
        `container did not reach running/degraded in ${timeoutMs} ms (state: ${last || 'no init yet'}):\n${jobs}\n${await tailOf(log)}`
      )
    }
    await sleep(200)
  }
}

type State = { nspawn?: number; init?: number; pidns?: string; booted?: boolean }

/**
 * A booted container gets a clean shutdown (nspawn turns SIGTERM into systemd's poweroff); then, or at once for one
 * that failed to boot (early in boot systemd may not act on the signal yet), every process left in its cgroups
 * (nspawn included) is killed. Nothing of its PID namespace may be left.
 */
async function shutdown(state: State, cgroups: string[]): Promise<void> {
  const nspawn = state.nspawn as number
  if (state.booted && (await isAlive(nspawn))) {
    kill(nspawn, 'SIGTERM')
    await waitDead([nspawn], 30_000)
  }
  const left = await killCgroups(cgroups)
  if (left.length) throw new Error(`container processes left in ${cgroups[0]}: ${left.join(' ')}`)
  await waitDead([nspawn], 10_000)
  if (state.pidns) {
    const rest = await pidsInNamespace(state.pidns)
    for (const p of rest) kill(p, 'SIGKILL')
    if ((await waitDead(rest, 10_000)).length) throw new Error(`container processes left: ${rest.join(' ')}`)
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.connect({ host, port, timeout: 3000 })
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
    s.once('timeout', () => (s.destroy(), resolve(false)))
  })
}

/**
 * Drops the clusters copied with /etc (their data directories are this machine's, possibly running, so
 * pg_dropcluster refuses) and makes a fresh one with a data directory of its own, started as a unit.
 */
async function freshPostgres(exec: (cmd: string) => Promise<RunResult>): Promise<void> {
  const r = await exec(
    'set -e; rm -f /etc/systemd/system/postgresql.service /etc/systemd/system/postgresql@.service; ' +
      'systemctl daemon-reload; rm -rf /etc/postgresql/15/*; ' +
      'pg_createcluster -p 5432 -d /var/lib/postgresql-sandbox/15/main 15 main >/dev/null; systemctl start postgresql@15-main; systemctl is-active postgresql@15-main'
  )
  if (r.code !== 0) throw new Error(`container PostgreSQL: ${r.stderr || r.stdout}`)
}
