/**
 * A real deployment target on this machine: a fresh deploy user, sshd on loopback, nginx (root master,
 * test/reload allowed to the user through sudo), and gunicorn started as the user on demand.
 *
 * Every process it starts is tracked by PID and stopped by PID in `stop()`, which also removes the user,
 * its sudoers file and the temp directory. Needs root (useradd, sudoers, nginx master).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, promises as fs } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'

export interface TargetOptions {
  /** Prefix for the user name and the temp dir (lowercase letters and digits, 1-16 chars). Default `dd`. */
  name?: string
  /** Loopback address sshd, nginx and gunicorn listen on (must be in 127.0.0.0/8). Default `127.0.0.1`. */
  bindIp?: string
  /**
   * Network namespace to run sshd, nginx and gunicorn in (a host of a fleet, made by `sandbox/fleet.ts`):
   * `bindIp` is then the namespace's end of its veth pair, reached from outside through the veth only.
   */
  netns?: string
  /** WSGI module gunicorn serves. Default `mysite.wsgi` (the example project). */
  wsgiModule?: string
  /** Gunicorn workers. Default 2. */
  gunicornWorkers?: number
  /** Parent of the target's temp dir. Default `os.tmpdir()`. */
  tmpDir?: string
  /**
   * Host key types sshd has, in this order (`HostKey` lines). Default `['ed25519']`. `knownHosts` and
   * `fingerprint` are the first one's; `hostKeys` lists them all.
   */
  hostKeyTypes?: HostKeyType[]
  /** Testing aid: throw at this point of the start-up (to check that a failed start cleans up). */
  failAt?: 'after-sshd' | 'after-nginx' | 'end'
}

export type HostKeyType = 'ed25519' | 'ecdsa' | 'ecdsa384' | 'ecdsa521' | 'rsa'

export interface HostKey {
  type: HostKeyType
  /** known_hosts line: `[127.0.0.1]:PORT <keytype> AAAA…`. */
  knownHosts: string
  /** `SHA256:…` fingerprint. */
  fingerprint: string
}

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Kill the command (its whole process group) after this many ms. Default 120000. */
  timeoutMs?: number
  /** Extra environment variables. */
  env?: Record<string, string>
  /** Text written to the command's stdin. */
  input?: string
}

export interface GunicornOptions {
  /** Extra environment for gunicorn (e.g. SECRET_KEY, DATABASE_PATH). */
  env?: Record<string, string>
  /** How long to wait for gunicorn to answer HTTP. Default 30000 ms. */
  timeoutMs?: number
  /**
   * Start `<current>/.venv/bin/gunicorn` by itself, so its shebang's interpreter (`venvs/<key>/bin/python`)
   * runs it: the start that keeps the old virtualenv on a USR2 re-exec (tests of that refusal).
   */
  byShebang?: boolean
}

export interface TargetLogs {
  sshd: string
  nginxError: string
  nginxAccess: string
  gunicorn: string
}

export interface Target {
  host: string
  sshPort: number
  user: string
  /** Absolute; owned by the user; holds releases/, shared/, current. */
  deployPath: string
  /** The user's home directory. */
  home: string
  /** OpenSSH private key text for the deploy user (ed25519, no passphrase). */
  privateKey: string
  /** The matching `ssh-ed25519 AAAA… comment` public key line. */
  publicKey: string
  /** known_hosts line: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`. */
  knownHosts: string
  /** `SHA256:…` fingerprint of the host key. */
  fingerprint: string
  /** Every host key sshd has (see `TargetOptions.hostKeyTypes`), the first being `knownHosts`/`fingerprint`'s. */
  hostKeys: HostKey[]
  httpPort: number
  /** `http://HOST:HTTPPORT` (no trailing slash: use `${url}/health/`) — nginx, proxying to gunicorn, /static/ from <deployPath>/current/static/. */
  url: string
  gunicornPort: number
  /** Pidfile gunicorn writes; the user can read/write it (HUP/USR2 via `kill -HUP $(cat pidfile)`). */
  gunicornPidfile: string
  /** The shell line `startGunicorn()` runs as the user (for display and docs). */
  gunicornCommand: string
  wsgiModule: string
  /** `sudo -n /usr/sbin/nginx -c <conf> -t` (allowed to the user NOPASSWD, exactly this line). */
  nginxTestCommand: string
  /** `sudo -n /usr/sbin/nginx -c <conf> -s reload` (allowed to the user NOPASSWD, exactly this line). */
  nginxReloadCommand: string
  nginxConf: string
  /** The target's temp dir (everything but /etc/sudoers.d/<file> and the user account lives under it). */
  root: string
  logs: TargetLogs
  /** PIDs of what the target started (gunicorn: the current master from the pidfile, if running). */
  pids(): Promise<{ sshd?: number; nginx?: number; gunicorn?: number }>
  startGunicorn(opts?: GunicornOptions): Promise<void>
  stopGunicorn(): Promise<void>
  /** Runs `bash -c cmd` as the deploy user on the target (locally, via runuser), in its home dir. */
  run(cmd: string, opts?: RunOptions): Promise<RunResult>
  /** Stops exactly what it started (by PID), removes the user, the sudoers file and the temp dir. Idempotent. */
  stop(): Promise<void>
}

const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const NGINX = '/usr/sbin/nginx'
const SSHD = '/usr/sbin/sshd'

// ---------------------------------------------------------------------------------------------------------
// Small process helpers

/** Runs a program (no shell), collecting output. Never rejects for a non-zero exit; rejects on spawn errors. */
export function execFile(
  file: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? { PATH: SAFE_PATH, LANG: 'C.UTF-8' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    child.stdin.on('error', () => undefined)
    child.stdin.end(opts.input ?? '')
    const timeoutMs = opts.timeoutMs ?? 120_000
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      if (child.pid) killQuietly(-child.pid, 'SIGKILL')
    }, timeoutMs)
    child.on('error', e => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const stderr = Buffer.concat(err).toString('utf8')
      resolve({
        code: code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: timedOut ? `${stderr}\n[timed out after ${timeoutMs} ms]` : stderr
      })
    })
  })
}

export async function mustExec(
  file: string,
  args: string[],
  opts?: Parameters<typeof execFile>[2]
): Promise<string> {
  const r = await execFile(file, args, opts)
  if (r.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`)
  }
  return r.stdout
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

/** Fields of /proc/PID/stat we need, or undefined if the process is gone. */
async function procStat(pid: number): Promise<{ state: string; ppid: number } | undefined> {
  try {
    const text = await fs.readFile(`/proc/${pid}/stat`, 'utf8')
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return { state: rest[0], ppid: Number(rest[1]) }
  } catch {
    return undefined
  }
}

/** Alive and not a zombie (the init process here reaps orphans slowly). */
export async function isAlive(pid: number): Promise<boolean> {
  const st = await procStat(pid)
  return st !== undefined && st.state !== 'Z' && st.state !== 'X'
}

async function allPids(): Promise<number[]> {
  const names = await fs.readdir('/proc')
  return names.filter(n => /^\d+$/.test(n)).map(Number)
}

/** Direct children of a process (read from /proc). */
async function childrenOf(pid: number): Promise<number[]> {
  const kids: number[] = []
  for (const p of await allPids()) {
    const st = await procStat(p)
    if (st && st.ppid === pid) kids.push(p)
  }
  return kids
}

/** Live processes whose real uid is `uid`. */
async function pidsOfUid(uid: number): Promise<number[]> {
  const found: number[] = []
  for (const p of await allPids()) {
    try {
      const status = await fs.readFile(`/proc/${p}/status`, 'utf8')
      const m = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status)
      if (m && (Number(m[1]) === uid || Number(m[2]) === uid) && (await isAlive(p))) found.push(p)
    } catch {
      // raced with exit
    }
  }
  return found
}

export async function waitDead(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs
  let left = pids
  for (;;) {
    const alive: number[] = []
    for (const p of left) if (await isAlive(p)) alive.push(p)
    left = alive
    if (left.length === 0 || Date.now() >= deadline) return left
    await sleep(50)
  }
}

/** Signal each PID, wait for them to die, then SIGKILL leftovers. Returns PIDs still alive after that. */
async function killAndWait(pids: number[], signal: NodeJS.Signals, graceMs: number): Promise<number[]> {
  const live: number[] = []
  for (const p of pids) if (await isAlive(p)) live.push(p)
  for (const p of live) killQuietly(p, signal)
  let left = await waitDead(live, graceMs)
  if (left.length) {
    for (const p of left) killQuietly(p, 'SIGKILL')
    left = await waitDead(left, 5000)
  }
  return left
}

/** Ports the OS says are free on `host` (all held open together, so they differ), then released. */
export async function freePorts(host: string, count: number): Promise<number[]> {
  const servers: net.Server[] = []
  try {
    const ports: number[] = []
    for (let i = 0; i < count; i++) {
      const srv = net.createServer()
      servers.push(srv)
      ports.push(
        await new Promise<number>((resolve, reject) => {
          srv.once('error', reject)
          srv.listen({ port: 0, host, exclusive: true }, () =>
            resolve((srv.address() as net.AddressInfo).port)
          )
        })
      )
    }
    return ports
  } finally {
    await Promise.all(servers.map(s => new Promise<void>(r => (s.listening ? s.close(() => r()) : r()))))
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const sock = net.connect({ host, port })
    const done = (ok: boolean) => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(1000, () => done(false))
    sock.once('connect', () => done(true))
    sock.once('error', () => done(false))
  })
}

function httpAnswers(host: string, port: number, urlPath: string): Promise<number | undefined> {
  return new Promise(resolve => {
    const req = http.get({ host, port, path: urlPath, agent: false, timeout: 2000 }, res => {
      res.resume()
      resolve(res.statusCode)
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(undefined))
  })
}

async function tail(file: string, lines = 20): Promise<string> {
  try {
    return (await fs.readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/** Spawns a long-running daemon with stdout/stderr appended to `logFile`; tracks its exit. */
function spawnDaemon(
  file: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv,
  cwd?: string,
  netns?: string
): { child: ChildProcess; exited: () => boolean } {
  const fd = openSync(logFile, 'a', 0o644)
  let exited = false
  try {
    // `ip netns exec` enters the namespace and execs the program: the PID stays the daemon's.
    const [f, a] = netns ? ['/usr/bin/ip', ['netns', 'exec', netns, file, ...args]] : [file, args]
    const child = spawn(f, a, { stdio: ['ignore', fd, fd], detached: true, env, cwd })
    child.on('exit', () => (exited = true))
    child.on('error', () => (exited = true))
    child.unref()
    return { child, exited: () => exited }
  } finally {
    closeSync(fd)
  }
}

async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  failed: () => boolean,
  timeoutMs: number,
  log: string
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (failed()) throw new Error(`${what} exited during start-up:\n${await tail(log)}`)
    if (await check()) return
    if (Date.now() >= deadline)
      throw new Error(`${what} did not come up in ${timeoutMs} ms:\n${await tail(log)}`)
    await sleep(50)
  }
}

/** Quote for a POSIX shell. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_\-./=:@%+,]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/** Retries a command that fails while another useradd/userdel holds the passwd lock. */
async function withPasswdLock(file: string, args: string[]): Promise<RunResult> {
  let r: RunResult = { code: 1, stdout: '', stderr: '' }
  for (let i = 0; i < 40; i++) {
    r = await execFile(file, args)
    if (r.code === 0 || !/lock|try again/i.test(r.stderr)) return r
    await sleep(100 + Math.random() * 200)
  }
  return r
}

// ---------------------------------------------------------------------------------------------------------

export async function startTarget(opts: TargetOptions = {}): Promise<Target> {
  if (process.getuid?.() !== 0) throw new Error('startTarget needs root (useradd, sudoers, nginx master)')
  const prefix = opts.name ?? 'dd'
  if (!/^[a-z][a-z0-9]{0,15}$/.test(prefix)) throw new Error(`bad target name prefix: ${prefix}`)
  const host = opts.bindIp ?? '127.0.0.1'
  if (net.isIPv4(host) === false || !host.startsWith('127.'))
    throw new Error(`bindIp must be in 127.0.0.0/8: ${host}`)
  const wsgiModule = opts.wsgiModule ?? 'mysite.wsgi'
  if (!/^[A-Za-z_][\w.:]*$/.test(wsgiModule)) throw new Error(`bad wsgi module: ${wsgiModule}`)
  const workers = opts.gunicornWorkers ?? 2

  const user = `${prefix}${randomBytes(4).toString('hex')}`
  const cleanups: Array<{ name: string; fn: () => Promise<void> }> = []
  const state: {
    sshd?: ChildProcess
    nginx?: ChildProcess
    gunicorn?: ChildProcess
  } = {}

  const root = await fs.mkdtemp(path.join(opts.tmpDir ?? os.tmpdir(), `${user}-`))
  cleanups.push({ name: 'temp dir', fn: () => fs.rm(root, { recursive: true, force: true }) })
  const home = path.join(root, 'home')
  const deployPath = path.join(root, 'app')
  const runDir = path.join(root, 'run')
  const sshDir = path.join(root, 'sshd')
  const nginxDir = path.join(root, 'nginx')
  const logDir = path.join(root, 'logs')
  const logs: TargetLogs = {
    sshd: path.join(logDir, 'sshd.log'),
    nginxError: path.join(logDir, 'nginx-error.log'),
    nginxAccess: path.join(logDir, 'nginx-access.log'),
    gunicorn: path.join(logDir, 'gunicorn.log')
  }
  const gunicornPidfile = path.join(runDir, 'gunicorn.pid')
  const nginxConf = path.join(nginxDir, 'nginx.conf')
  const sudoersFile = `/etc/sudoers.d/django-deploy-${user}`
  const nginxTestCommand = `sudo -n ${NGINX} -c ${nginxConf} -t`
  const nginxReloadCommand = `sudo -n ${NGINX} -c ${nginxConf} -s reload`
  const current = path.join(deployPath, 'current')
  // As the README tells users to start it: the interpreter through `current`, so a USR2 re-exec (which runs
  // `sys.executable` + `sys.argv` again) resolves `current` anew and runs the new release's virtualenv; the
  // `gunicorn` console script that pip puts in the virtualenv (the example's requirements install it over
  // Debian's gunicorn). Not `python -m gunicorn`: for `-m`, the re-exec runs `python .../gunicorn/__main__.py`,
  // and with gunicorn/ first on sys.path its `http` package shadows the stdlib one (Django fails: `cannot
  // import name 'cookies' from 'http'`). A hand-made release with no bin/gunicorn gets a launcher script
  // that does what the console script does.
  const launcher = path.join(root, 'bin', 'gunicorn')
  const gunicornCommandFor = (bind: string, script = `${current}/.venv/bin/gunicorn`) =>
    `cd ${shq(current)} && exec ${shq(current + '/.venv/bin/python')} ${shq(script)} --chdir ${shq(current)}` +
    ` --pid ${shq(gunicornPidfile)} --bind ${bind} --workers ${workers} ${wsgiModule}`

  let uid = -1
  let gid = -1

  // On the host: inside its network namespace when it has one.
  const runAsUser = (cmd: string, ro: RunOptions = {}) =>
    execFile(
      opts.netns ? '/usr/bin/ip' : '/usr/sbin/runuser',
      [
        ...(opts.netns ? ['netns', 'exec', opts.netns, '/usr/sbin/runuser'] : []),
        '-u',
        user,
        '--',
        '/bin/bash',
        '-c',
        cmd
      ],
      {
        cwd: home,
        env: { PATH: SAFE_PATH, LANG: 'C.UTF-8', HOME: home, USER: user, LOGNAME: user, ...ro.env },
        timeoutMs: ro.timeoutMs,
        input: ro.input
      }
    )

  // --- gunicorn ------------------------------------------------------------------------------------------
  let gunicornPort = 0
  const gunicornMasters = async (): Promise<number[]> => {
    const pids = new Set<number>()
    if (state.gunicorn?.pid) pids.add(state.gunicorn.pid)
    for (const f of [gunicornPidfile, `${gunicornPidfile}.oldbin`, `${gunicornPidfile}.2`]) {
      try {
        const n = Number((await fs.readFile(f, 'utf8')).trim())
        if (Number.isInteger(n) && n > 1) pids.add(n)
      } catch {
        // no such pidfile
      }
    }
    const live: number[] = []
    for (const p of pids) {
      // Only processes of the deploy user: never signal a PID that a stale pidfile now gives to someone else.
      const owned = (await pidsOfUidCheck(p, uid)) && (await isAlive(p))
      if (owned) live.push(p)
    }
    return live
  }

  const stopGunicorn = async (): Promise<void> => {
    const masters = await gunicornMasters()
    const workersOf: number[] = []
    for (const m of masters) workersOf.push(...(await childrenOf(m)))
    const left = await killAndWait([...masters], 'SIGTERM', 10_000)
    const leftWorkers = await killAndWait(workersOf, 'SIGTERM', 5000)
    state.gunicorn = undefined
    await fs.rm(gunicornPidfile, { force: true })
    if (left.length || leftWorkers.length) {
      throw new Error(`gunicorn processes did not stop: ${[...left, ...leftWorkers].join(' ')}`)
    }
  }

  const startGunicorn = async (g: GunicornOptions = {}): Promise<void> => {
    if ((await gunicornMasters()).length) throw new Error('gunicorn is already running')
    try {
      await fs.access(path.join(current, '.venv/bin/python'))
    } catch {
      throw new Error(`no ${current}/.venv/bin/python: deploy a release (with its .venv) first`)
    }
    const documented = await fs.access(path.join(current, '.venv/bin/gunicorn')).then(
      () => true,
      () => false
    )
    const cmd = g.byShebang
      ? `cd ${shq(current)} && exec ${shq(current + '/.venv/bin/gunicorn')} --chdir ${shq(current)}` +
        ` --pid ${shq(gunicornPidfile)} --bind ${host}:${gunicornPort} --workers ${workers} ${wsgiModule}`
      : gunicornCommandFor(`${host}:${gunicornPort}`, documented ? undefined : launcher)
    const d = spawnDaemon(
      '/usr/bin/setpriv',
      [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', '/bin/bash', '-c', cmd],
      logs.gunicorn,
      { PATH: SAFE_PATH, LANG: 'C.UTF-8', HOME: home, USER: user, LOGNAME: user, ...g.env },
      home,
      opts.netns
    )
    state.gunicorn = d.child
    try {
      await waitUntil(
        'gunicorn',
        async () => (await httpAnswers(host, gunicornPort, '/health/')) !== undefined,
        d.exited,
        g.timeoutMs ?? 30_000,
        logs.gunicorn
      )
    } catch (e) {
      await stopGunicorn().catch(() => undefined)
      throw e
    }
  }

  // --- stop ----------------------------------------------------------------------------------------------
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const errors: string[] = []
      const step = async (name: string, fn: () => Promise<void>) => {
        try {
          await fn()
        } catch (e) {
          errors.push(`${name}: ${(e as Error).message}`)
        }
      }
      for (const c of [...cleanups].reverse()) await step(c.name, c.fn)
      if (errors.length) throw new Error(`stopping target ${user} failed:\n${errors.join('\n')}`)
    })()
    return stopping
  }

  try {
    // --- the deploy user ---------------------------------------------------------------------------------
    await fs.chmod(root, 0o755)
    await mustExec('/usr/bin/mkdir', ['-p', '-m', '0755', '/run/sshd'])
    const add = await withPasswdLock('/usr/sbin/useradd', ['-m', '-d', home, '-s', '/bin/bash', '-U', user])
    if (add.code !== 0) throw new Error(`useradd ${user}: ${add.stderr.trim()}`)
    cleanups.push({
      name: 'user',
      fn: async () => {
        // Everything the user still runs (ssh sessions, a gunicorn re-exec'd by USR2, leftovers of a test).
        if (uid >= 0) {
          const left = await killAndWait(await pidsOfUid(uid), 'SIGTERM', 3000)
          if (left.length) throw new Error(`processes of ${user} did not exit: ${left.join(' ')}`)
        }
        // userdel refuses (exit 8) while a zombie of the user waits for the (slow) init to reap it.
        let r = await withPasswdLock('/usr/sbin/userdel', [user])
        for (let i = 0; r.code === 8 && i < 100; i++) {
          await sleep(100)
          r = await withPasswdLock('/usr/sbin/userdel', [user])
        }
        if (r.code === 8) r = await withPasswdLock('/usr/sbin/userdel', ['-f', user]) // only zombies are left
        if (r.code !== 0 && r.code !== 6) throw new Error(`userdel ${user}: ${r.stderr.trim()}`)
      }
    })
    const ids = (await mustExec('/usr/bin/id', ['-u', user])).trim()
    uid = Number(ids)
    gid = Number((await mustExec('/usr/bin/id', ['-g', user])).trim())
    await mustExec('/usr/sbin/usermod', ['-p', '*', user])
    await fs.chmod(home, 0o755)

    for (const d of [deployPath, runDir]) {
      await fs.mkdir(d, { mode: 0o755 })
      await fs.chown(d, uid, gid)
      await fs.chmod(d, 0o755)
    }
    await fs.mkdir(sshDir, { mode: 0o700 })
    await fs.mkdir(logDir, { mode: 0o755 })
    // Alone in its dir (which becomes sys.path[0]); no .py suffix, so it cannot shadow the gunicorn package.
    await fs.mkdir(path.dirname(launcher), { mode: 0o755 })
    await fs.writeFile(
      launcher,
      '# gunicorn launcher of the sandbox target: runs gunicorn under the interpreter that runs this file\n' +
        'import sys\n\nfrom gunicorn.app.wsgiapp import run\n\n' +
        "if __name__ == '__main__':\n    sys.exit(run())\n",
      { mode: 0o755 }
    )
    await fs.mkdir(path.join(nginxDir, 'tmp'), { recursive: true, mode: 0o755 })

    // --- keys ------------------------------------------------------------------------------------------
    const keyTypes = opts.hostKeyTypes ?? ['ed25519']
    if (keyTypes.length === 0 || new Set(keyTypes).size !== keyTypes.length)
      throw new Error(`hostKeyTypes must be distinct and not empty: ${keyTypes.join(',')}`)
    const keygenArgs: Record<HostKeyType, string[]> = {
      ed25519: ['-t', 'ed25519'],
      ecdsa: ['-t', 'ecdsa', '-b', '256'],
      ecdsa384: ['-t', 'ecdsa', '-b', '384'],
      ecdsa521: ['-t', 'ecdsa', '-b', '521'],
      rsa: ['-t', 'rsa', '-b', '3072']
    }
    const hostKeyFiles = keyTypes.map(k => path.join(sshDir, `host_${k}_key`))
    const clientKey = path.join(sshDir, 'client_ed25519_key')
    await Promise.all([
      ...keyTypes.map((k, i) =>
        mustExec('/usr/bin/ssh-keygen', [
          '-q',
          ...keygenArgs[k],
          '-N',
          '',
          '-C',
          `sandbox-host-${user}`,
          '-f',
          hostKeyFiles[i]
        ])
      ),
      mustExec('/usr/bin/ssh-keygen', [
        '-q',
        '-t',
        'ed25519',
        '-N',
        '',
        '-C',
        `${user}@sandbox`,
        '-f',
        clientKey
      ])
    ])
    const privateKey = await fs.readFile(clientKey, 'utf8')
    const publicKey = (await fs.readFile(`${clientKey}.pub`, 'utf8')).trim()
    await fs.rm(clientKey)
    await fs.rm(`${clientKey}.pub`)
    const hostPubs = await Promise.all(
      hostKeyFiles.map(async f => {
        const pub = (await fs.readFile(`${f}.pub`, 'utf8')).trim().split(/\s+/)
        const fp = (await mustExec('/usr/bin/ssh-keygen', ['-lf', `${f}.pub`])).split(/\s+/)[1]
        if (!fp?.startsWith('SHA256:')) throw new Error(`unexpected fingerprint: ${fp}`)
        return { pub, fp }
      })
    )
    const hostPub = hostPubs[0].pub
    const fingerprint = hostPubs[0].fp

    const dotSsh = path.join(home, '.ssh')
    await fs.mkdir(dotSsh, { mode: 0o700 })
    await fs.writeFile(path.join(dotSsh, 'authorized_keys'), `${publicKey}\n`, { mode: 0o600 })
    await fs.chown(dotSsh, uid, gid)
    await fs.chown(path.join(dotSsh, 'authorized_keys'), uid, gid)

    // --- ports -----------------------------------------------------------------------------------------
    let sshPort = 0
    let httpPort = 0

    // --- sshd (retry with new ports if one was taken between asking and binding) --------------------------
    const sshdConf = path.join(sshDir, 'sshd_config')
    for (let attempt = 1; ; attempt++) {
      // A namespace of its own is empty: any port free here is free there.
      ;[sshPort, httpPort, gunicornPort] = await freePorts(opts.netns ? '127.0.0.1' : host, 3)
      await fs.writeFile(
        sshdConf,
        [
          `Port ${sshPort}`,
          `ListenAddress ${host}`,
          ...hostKeyFiles.map(f => `HostKey ${f}`),
          `PidFile ${path.join(sshDir, 'sshd.pid')}`,
          'UsePAM no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'PubkeyAuthentication yes',
          'PermitRootLogin no',
          'AuthorizedKeysFile .ssh/authorized_keys',
          `AllowUsers ${user}`,
          'MaxStartups 100:30:200',
          'MaxSessions 64',
          'LogLevel INFO',
          'Subsystem sftp /usr/lib/openssh/sftp-server -u 022',
          ''
        ].join('\n'),
        { mode: 0o600 }
      )
      await mustExec(SSHD, ['-t', '-f', sshdConf])
      // umask 022 for the sessions (files of a release must be world-readable for nginx); exec keeps the PID.
      const d = spawnDaemon(
        '/bin/sh',
        ['-c', 'umask 022 && exec "$0" -f "$1" -D -e', SSHD, sshdConf],
        logs.sshd,
        {
          PATH: SAFE_PATH,
          LANG: 'C.UTF-8'
        },
        undefined,
        opts.netns
      )
      state.sshd = d.child
      try {
        await waitUntil('sshd', () => canConnect(host, sshPort), d.exited, 10_000, logs.sshd)
        break
      } catch (e) {
        if (d.child.pid) await killAndWait([d.child.pid], 'SIGTERM', 2000)
        state.sshd = undefined
        if (attempt >= 3) throw e
      }
    }
    cleanups.push({
      name: 'sshd',
      fn: async () => {
        const pid = state.sshd?.pid
        if (!pid) return
        const sessions = await childrenOf(pid) // per-connection sshd processes outlive the listener
        const left = await killAndWait([pid, ...sessions], 'SIGTERM', 5000)
        if (left.length) throw new Error(`sshd processes did not stop: ${left.join(' ')}`)
      }
    })

    if (opts.failAt === 'after-sshd') throw new Error('failAt: after-sshd')

    // --- nginx -----------------------------------------------------------------------------------------
    const workerUser =
      (await execFile('/usr/bin/getent', ['passwd', 'www-data'])).code === 0 ? 'www-data' : 'nobody'
    const tmp = path.join(nginxDir, 'tmp')
    await fs.writeFile(
      nginxConf,
      `# nginx for sandbox target ${user}: root master, started in the foreground by sandbox/target.ts
daemon off;
master_process on;
worker_processes 1;
user ${workerUser};
pid ${path.join(nginxDir, 'nginx.pid')};
error_log ${logs.nginxError} warn;

events {
  worker_connections 1024;
}

http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log ${logs.nginxAccess};
  client_body_temp_path ${tmp}/client_body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  sendfile on;
  server_tokens off;

  server {
    listen ${host}:${httpPort};
    server_name _;

    location /static/ {
      alias ${current}/static/;
    }

    location / {
      proxy_pass http://${host}:${gunicornPort};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_connect_timeout 5s;
      proxy_read_timeout 60s;
      proxy_next_upstream off;
    }
  }
}
`,
      { mode: 0o644 }
    )
    // nginx -t binds the listen addresses: inside the host's namespace.
    if (opts.netns) await mustExec('/usr/bin/ip', ['netns', 'exec', opts.netns, NGINX, '-c', nginxConf, '-t'])
    else await mustExec(NGINX, ['-c', nginxConf, '-t'])
    {
      const d = spawnDaemon(
        NGINX,
        ['-c', nginxConf],
        logs.nginxError,
        { PATH: SAFE_PATH, LANG: 'C.UTF-8' },
        undefined,
        opts.netns
      )
      state.nginx = d.child
      cleanups.push({
        name: 'nginx',
        fn: async () => {
          const pid = state.nginx?.pid
          if (!pid) return
          const nginxWorkers = await childrenOf(pid)
          const left = await killAndWait([pid, ...nginxWorkers], 'SIGQUIT', 5000)
          if (left.length) throw new Error(`nginx processes did not stop: ${left.join(' ')}`)
        }
      })
      await waitUntil('nginx', () => canConnect(host, httpPort), d.exited, 10_000, logs.nginxError)
    }
    if (opts.failAt === 'after-nginx') throw new Error('failAt: after-nginx')

    // --- sudoers: exactly the two nginx command lines ----------------------------------------------------
    const sudoersText =
      `# django-deploy sandbox target ${user}: may test and reload its own nginx, nothing else\n` +
      `${user} ALL=(root) NOPASSWD: ${NGINX} -c ${nginxConf} -t, ${NGINX} -c ${nginxConf} -s reload\n`
    const staged = path.join(root, 'sudoers')
    await fs.writeFile(staged, sudoersText, { mode: 0o440 })
    await mustExec('/usr/sbin/visudo', ['-cf', staged])
    // A name with a dot is ignored by @includedir: stage there, then rename into place atomically.
    const hidden = `/etc/sudoers.d/.django-deploy-${user}.tmp`
    await fs.copyFile(staged, hidden)
    await fs.chmod(hidden, 0o440)
    await fs.rename(hidden, sudoersFile)
    cleanups.push({ name: 'sudoers', fn: () => fs.rm(sudoersFile, { force: true }) })
    await mustExec('/usr/sbin/visudo', ['-c'])
    const check = await runAsUser(nginxTestCommand, { timeoutMs: 15_000 })
    if (check.code !== 0) throw new Error(`sudo -n nginx -t as ${user} failed: ${check.stderr.trim()}`)

    // gunicorn is stopped first (cleanups run in reverse order), while the user still exists.
    cleanups.push({ name: 'gunicorn', fn: stopGunicorn })

    if (opts.failAt === 'end') throw new Error('failAt: end')

    const target: Target = {
      host,
      sshPort,
      user,
      deployPath,
      home,
      privateKey,
      publicKey,
      knownHosts: `[${host}]:${sshPort} ${hostPub[0]} ${hostPub[1]}`,
      fingerprint,
      hostKeys: keyTypes.map((type, i) => ({
        type,
        knownHosts: `[${host}]:${sshPort} ${hostPubs[i].pub[0]} ${hostPubs[i].pub[1]}`,
        fingerprint: hostPubs[i].fp
      })),
      httpPort,
      url: `http://${host}:${httpPort}`,
      gunicornPort,
      gunicornPidfile,
      gunicornCommand: gunicornCommandFor(`${host}:${gunicornPort}`),
      wsgiModule,
      nginxTestCommand,
      nginxReloadCommand,
      nginxConf,
      root,
      logs,
      pids: async () => ({
        sshd: state.sshd?.pid,
        nginx: state.nginx?.pid,
        gunicorn: (await gunicornMasters().catch(() => []))[0]
      }),
      startGunicorn,
      stopGunicorn,
      run: runAsUser,
      stop
    }
    return target
  } catch (e) {
    await stop().catch(err => {
      ;(e as Error).message += `\n(cleanup after the failed start also failed: ${(err as Error).message})`
    })
    throw e
  }
}

async function pidsOfUidCheck(pid: number, uid: number): Promise<boolean> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8')
    const m = /^Uid:\s+(\d+)/m.exec(status)
    return m !== null && Number(m[1]) === uid
  } catch {
    return false
  }
}
