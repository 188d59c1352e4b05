/**
 * A real PostgreSQL (Debian's 15) for the sandbox: a cluster made in its own temp dir, run as the `postgres` user on
 * its own port, listening only on the addresses given (loopback; for a fleet, the outside ends of the hosts'
 * veths, so every host's namespace reaches it over TCP). One database and one password role per cluster. Stopped
 * by PID; its dir removed.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile, freePorts, isAlive } from './target.js'

const BIN = '/usr/lib/postgresql/15/bin'
const PSQL = '/usr/bin/psql'

export interface Postgres {
  port: number
  /** Addresses it listens on (loopback only). */
  listen: string[]
  database: string
  user: string
  password: string
  /** DATABASE_URL for a client that reaches it at `address` (one of `listen`; default the first). */
  url(address?: string): string
  /** Runs SQL with psql as the superuser over the unix socket; rejects when psql fails. */
  sql(text: string): Promise<string>
  /**
   * A psql session kept open (as the app's role, over TCP), fed `text`; `ready` resolves once psql echoed
   * `marker` (send `\echo marker` after the statements that must have run). `end()` closes it.
   */
  session(text: string, marker: string): { ready: Promise<void>; end(): Promise<void> }
  stop(): Promise<void>
}

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

async function must(file: string, args: string[], input?: string): Promise<string> {
  const r = await execFile(file, args, { input, timeoutMs: 60_000 })
  if (r.code !== 0)
    throw new Error(`${file} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`)
  return r.stdout
}

const asPostgres = (...args: string[]): string[] => ['-u', 'postgres', '--', ...args]

/**
 * Makes and starts a cluster listening on `listen` (127.x addresses). `name` (letters, digits) names the
 * database and its role.
 */
export async function startPostgres(o: { name: string; listen: string[] }): Promise<Postgres> {
  if (!/^[a-z][a-z0-9]{0,15}$/.test(o.name)) throw new Error(`bad cluster name: ${o.name}`)
  for (const a of o.listen) if (!a.startsWith('127.')) throw new Error(`${a} is not a loopback address`)
  const dir = mkdtempSync(join(tmpdir(), `dd-pg-${o.name}-`))
  chmodSync(dir, 0o755)
  const data = join(dir, 'data')
  const sockets = join(dir, 'run')
  let postmaster: ChildProcess | undefined
  /** The postmaster's own PID (runuser forks it: read from postmaster.pid once it runs). */
  let serverPid: number | undefined
  const stop = async (): Promise<void> => {
    const pid = serverPid ?? postmaster?.pid
    if (pid && (await isAlive(pid))) {
      // SIGINT: fast shutdown (open sessions are ended, as a stopped server would).
      process.kill(pid, 'SIGINT')
      for (let i = 0; i < 200 && (await isAlive(pid)); i++) await sleep(50)
      if (await isAlive(pid)) process.kill(pid, 'SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (const d of [data, sockets]) {
      await must('/usr/bin/install', ['-d', '-o', 'postgres', '-g', 'postgres', '-m', '0700', d])
    }
    const password = randomBytes(12).toString('hex')
    const pwfile = join(dir, 'pw')
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 })
    chownSync(pwfile, 101, 104)
    await must(
      '/usr/sbin/runuser',
      asPostgres(
        `${BIN}/initdb`,
        '-D',
        data,
        '-U',
        'postgres',
        '-A',
        'peer',
        '--no-sync',
        '-E',
        'UTF8',
        '--locale',
        'C.UTF-8'
      )
    )
    rmSync(pwfile)
    // Clients from any loopback address (the hosts' namespaces) with the role's password; the superuser by socket.
    writeFileSync(
      join(data, 'pg_hba.conf'),
      `local all postgres peer\nhost all all 127.0.0.0/8 scram-sha-256\n`
    )
    const [port] = await freePorts(o.listen[0], 1)
    postmaster = spawn(
      '/usr/sbin/runuser',
      asPostgres(
        `${BIN}/postgres`,
        '-D',
        data,
        '-p',
        String(port),
        '-c',
        `listen_addresses=${o.listen.join(',')}`,
        '-c',
        `unix_socket_directories=${sockets}`,
        '-c',
        'fsync=off',
        '-c',
        'max_connections=60'
      ),
      { stdio: ['ignore', 'ignore', 'pipe'] }
    )
    let log = ''
    postmaster.stderr!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-4000)))
    const psqlArgs = (db = 'postgres'): string[] =>
      asPostgres(
        PSQL,
        '-h',
        sockets,
        '-p',
        String(port),
        '-d',
        db,
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-At'
      )
    const sql = (text: string, db = o.name): Promise<string> => must('/usr/sbin/runuser', psqlArgs(db), text)
    for (let i = 0; ; i++) {
      const r = await execFile('/usr/sbin/runuser', [...psqlArgs(), '-c', 'select 1'])
      if (r.code === 0) break
      if (i > 200 || postmaster.exitCode !== null) throw new Error(`postgres did not start: ${log}`)
      await sleep(50)
    }
    await sql(
      `CREATE ROLE ${o.name} LOGIN PASSWORD '${password}';\nCREATE DATABASE ${o.name} OWNER ${o.name};\n`,
      'postgres'
    )
    serverPid = Number((await must('/usr/bin/head', ['-1', join(data, 'postmaster.pid')])).trim())
    const url = (address = o.listen[0]): string =>
      `postgres://${o.name}:${password}@${address}:${port}/${o.name}`
    return {
      port,
      listen: o.listen,
      database: o.name,
      user: o.name,
      password,
      url,
      sql: text => sql(text),
      session(text, marker) {
        const p = spawn(PSQL, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', url()], {
          stdio: ['pipe', 'pipe', 'pipe']
        })
        let out = ''
        const ready = new Promise<void>((resolve, reject) => {
          p.stdout.on('data', (b: Buffer) => {
            out += b.toString()
            if (out.includes(marker)) resolve()
          })
          p.on('exit', code => reject(new Error(`psql session ended (${code}) before ${marker}: ${out}`)))
        })
        p.stdin.write(text)
        return {
          ready,
          async end() {
            ready.catch(() => undefined)
            if (p.exitCode !== null) return
            p.stdin.end('ROLLBACK;\n\\q\n')
            for (let i = 0; i < 100 && p.exitCode === null; i++) await sleep(50)
            if (p.exitCode === null) p.kill('SIGKILL')
          }
        }
      },
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}

/**
 * Lines appended to the example project's settings so its database comes from DATABASE_URL when set (Debian's
 * python3-dj-database-url and python3-psycopg2, seen through a `--system-site-packages` virtualenv).
 */
export const DATABASE_URL_SETTINGS = `
if env('DATABASE_URL'):
    import dj_database_url
    DATABASES = {'default': dj_database_url.parse(env('DATABASE_URL'))}
`
