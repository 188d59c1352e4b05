/**
 * The sandbox target itself: a real sshd, nginx and gunicorn serving the example project, reached over real ssh.
 * Needs root and the Debian packages from shared/NOTES.md.
 */
import { execFile as execFileCb } from 'node:child_process'
import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { get } from '../../sandbox/http.js'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { isAlive, startTarget, type Target } from '../../sandbox/target.js'
import { startLoad, versionMarker } from '../../sandbox/load.js'

const execFile = promisify(execFileCb)
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const example = path.join(repo, 'example')
// jest's per-project testTimeout does not apply when a file is run on its own: set it here.
const TIMEOUT = 120_000

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p)
    return true
  } catch {
    return false
  }
}

/** What a target named `prefix` could leave behind: users, temp dirs, sudoers files, live processes. */
async function traces(prefix: string): Promise<string[]> {
  const found: string[] = []
  const passwd = await fs.readFile('/etc/passwd', 'utf8')
  found.push(...passwd.split('\n').filter(l => l.startsWith(prefix)))
  found.push(...(await fs.readdir(os.tmpdir())).filter(n => n.startsWith(prefix)))
  found.push(...(await fs.readdir('/etc/sudoers.d')).filter(n => n.includes(prefix)))
  const ps = (await execFile('ps', ['-eo', 'stat=,args='])).stdout.split('\n')
  found.push(...ps.filter(l => l.includes(`${os.tmpdir()}/${prefix}`) && !l.trim().startsWith('Z')))
  return found
}

/** Copies example/ (without local build output) into a release dir owned by the deploy user. */
async function putRelease(t: Target, name: string, version: string): Promise<string> {
  const dir = path.join(t.deployPath, 'releases', name)
  await fs.cp(example, dir, {
    recursive: true,
    filter: src => !/^(\.venv|static|db\.sqlite3|\.env)$|(^|\/)__pycache__$/.test(path.relative(example, src))
  })
  await fs.writeFile(path.join(dir, 'VERSION'), `${version}\n`)
  const uid = Number((await execFile('id', ['-u', t.user])).stdout.trim())
  await execFile('chown', ['-R', `${uid}:${uid}`, path.join(t.deployPath, 'releases')])
  const r = await t.run(
    [
      'set -e',
      `cd ${dir}`,
      'ln -s ../../shared/.env .env',
      '/usr/bin/python3 -m venv --system-site-packages --without-pip .venv',
      '.venv/bin/python manage.py collectstatic --noinput -v0',
      '.venv/bin/python manage.py migrate --noinput -v0',
      `cd ${t.deployPath}`,
      `ln -s releases/${name} current.tmp`,
      'mv -T current.tmp current'
    ].join('\n')
  )
  expect(r).toMatchObject({ code: 0 })
  return dir
}

describe('sandbox target', () => {
  let t: Target
  let keyDir: string
  let ssh: (cmd: string, knownHosts?: string) => Promise<{ code: number; stdout: string; stderr: string }>
  let startMs = 0

  beforeAll(async () => {
    const t0 = Date.now()
    t = await startTarget({ name: 'ddtest' })
    startMs = Date.now() - t0
    keyDir = await fs.mkdtemp(path.join(os.tmpdir(), 'dd-sshkey-'))
    const keyFile = path.join(keyDir, 'id_ed25519')
    await fs.writeFile(keyFile, t.privateKey, { mode: 0o600 })
    await fs.writeFile(path.join(keyDir, 'known_hosts'), `${t.knownHosts}\n`, { mode: 0o600 })
    ssh = async (cmd, knownHosts = path.join(keyDir, 'known_hosts')) => {
      try {
        const { stdout, stderr } = await execFile(
          'ssh',
          [
            '-F',
            '/dev/null',
            '-i',
            keyFile,
            '-o',
            'IdentitiesOnly=yes',
            '-o',
            'BatchMode=yes',
            '-o',
            `UserKnownHostsFile=${knownHosts}`,
            '-o',
            'GlobalKnownHostsFile=/dev/null',
            '-o',
            'StrictHostKeyChecking=yes',
            '-o',
            'ConnectTimeout=10',
            '-p',
            String(t.sshPort),
            `${t.user}@${t.host}`,
            cmd
          ],
          { timeout: 60_000 }
        )
        return { code: 0, stdout, stderr }
      } catch (e) {
        const err = e as { code?: number; stdout?: string; stderr?: string }
        return {
          code: typeof err.code === 'number' ? err.code : 255,
          stdout: err.stdout ?? '',
          stderr: err.stderr ?? ''
        }
      }
    }
  }, TIMEOUT)

  afterAll(async () => {
    await t?.stop()
    if (keyDir) await fs.rm(keyDir, { recursive: true, force: true })
  }, TIMEOUT)

  test(
    'starts with loopback-only servers, a pinned host key and a fresh user',
    async () => {
      console.log(`target started in ${startMs} ms`)
      expect(t.host).toBe('127.0.0.1')
      expect(t.url).toBe(`http://127.0.0.1:${t.httpPort}`)
      expect(t.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)
      expect(t.knownHosts).toMatch(new RegExp(`^\\[127\\.0\\.0\\.1\\]:${t.sshPort} ssh-ed25519 AAAA`))
      expect(t.privateKey).toContain('BEGIN OPENSSH PRIVATE KEY')
      const ss = (await execFile('ss', ['-Hltnp'])).stdout
      for (const port of [t.sshPort, t.httpPort]) {
        const lines = ss.split('\n').filter(l => new RegExp(`:${port}\\s`).test(l))
        expect(lines.length).toBeGreaterThan(0)
        for (const l of lines) expect(l).toContain(`127.0.0.1:${port}`)
      }
      const sudoers = await fs.stat(`/etc/sudoers.d/django-deploy-${t.user}`)
      expect(sudoers.mode & 0o777).toBe(0o440)
      const who = await t.run('id -un; pwd')
      expect(who.stdout.split('\n').slice(0, 2)).toEqual([t.user, t.home])
    },
    TIMEOUT
  )

  test(
    'serves a hand-made release through nginx and gunicorn',
    async () => {
      await t.run(`mkdir -p ${t.deployPath}/shared`)
      await fs.writeFile(
        path.join(t.deployPath, 'shared/.env'),
        `SECRET_KEY=sandbox-${Date.now()}\nDEBUG=0\nDATABASE_PATH=${t.deployPath}/shared/db.sqlite3\n`
      )
      await putRelease(t, 'r1', 'sandbox-r1')
      const g0 = Date.now()
      await t.startGunicorn()
      console.log(`gunicorn answered in ${Date.now() - g0} ms`)

      const home = await get(t.url)
      expect(home.status).toBe(200)
      expect(versionMarker(home.body)).toBe('sandbox-r1')
      expect(home.body).toContain('Hello from the example project')
      expect(home.body).toContain('/static/pages/site.css')
      const css = await get(`${t.url}/static/pages/site.css`)
      expect(css.status).toBe(200)
      expect(css.body).toContain('#version')
      expect(await get(`${t.url}/health/`)).toMatchObject({ status: 200, body: 'ok' })
      expect(await get(`${t.url}/static/nope.css`)).toMatchObject({ status: 404 })
      const pid = Number((await t.run(`cat ${t.gunicornPidfile}`)).stdout.trim())
      expect(await t.pids()).toMatchObject({ gunicorn: pid })
    },
    TIMEOUT
  )

  test(
    'over real ssh: exactly the two nginx commands run via sudo, the pinned key is enforced',
    async () => {
      const test = await ssh(t.nginxTestCommand)
      expect(test.code).toBe(0)
      expect(test.stderr).toContain('test is successful')
      expect((await ssh(t.nginxReloadCommand)).code).toBe(0)
      // Any other command line through sudo is refused.
      const other = await ssh(`sudo -n /usr/sbin/nginx -c ${t.nginxConf} -s stop`)
      expect(other.code).not.toBe(0)
      expect(other.stderr).toMatch(/password is required|not allowed/)
      expect((await ssh('sudo -n /bin/true')).code).not.toBe(0)
      // A wrong pinned host key is refused by the client.
      const wrong = path.join(keyDir, 'wrong_known_hosts')
      const otherKey = path.join(keyDir, 'other')
      await execFile('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey])
      const otherPub = (await fs.readFile(`${otherKey}.pub`, 'utf8')).split(' ')
      await fs.writeFile(wrong, `[${t.host}]:${t.sshPort} ${otherPub[0]} ${otherPub[1]}\n`)
      const refused = await ssh('true', wrong)
      expect(refused.code).toBe(255)
      expect(refused.stderr).toMatch(/host key/i)
      // Sessions get umask 022, so files a deploy writes are readable by nginx.
      expect((await ssh('umask')).stdout.trim()).toBe('0022')
      // nginx still serves after the reload.
      expect((await get(t.url)).status).toBe(200)
    },
    TIMEOUT
  )

  test(
    'node-ssh (ssh2) connects with the in-memory key and pins the host key by its SHA256 fingerprint',
    async () => {
      const { NodeSSH } = await import('node-ssh')
      const seen: string[] = []
      const conn = await new NodeSSH().connect({
        host: t.host,
        port: t.sshPort,
        username: t.user,
        privateKey: t.privateKey,
        readyTimeout: 10_000,
        hostVerifier: (key: Buffer) => {
          const fp = `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`
          seen.push(fp)
          return fp === t.fingerprint
        }
      })
      try {
        const r = await conn.execCommand(t.nginxTestCommand)
        expect(r.code).toBe(0)
        expect(seen).toEqual([t.fingerprint])
      } finally {
        conn.dispose()
      }
    },
    TIMEOUT
  )

  test(
    'a second release goes live with a HUP and an nginx reload, with no failed request under load',
    async () => {
      await putRelease(t, 'r2', 'sandbox-r2')
      const load = startLoad(t.url, {
        concurrency: 4,
        maxSeconds: 20,
        maxRequests: 20_000,
        marker: versionMarker
      })
      await new Promise(r => setTimeout(r, 700))
      expect((await ssh(`kill -HUP "$(cat ${t.gunicornPidfile})" && ${t.nginxReloadCommand}`)).code).toBe(0)
      const deadline = Date.now() + 20_000
      while (versionMarker((await get(t.url)).body) !== 'sandbox-r2' && Date.now() < deadline) {
        await new Promise(r => setTimeout(r, 100))
      }
      await new Promise(r => setTimeout(r, 700))
      const res = await load.stop()
      console.log('load during switch', JSON.stringify({ ...res, failures: res.failures.slice(0, 5) }))
      expect(res.stoppedBy).toBe('stopped')
      expect(res.total).toBeGreaterThan(20)
      expect(res.non200).toBe(0)
      expect(res.errors).toBe(0)
      expect(res.bodies['sandbox-r1']).toBeGreaterThan(0)
      expect(res.bodies['sandbox-r2']).toBeGreaterThan(0)
      expect(Object.keys(res.bodies).sort()).toEqual(['sandbox-r1', 'sandbox-r2'])
    },
    TIMEOUT
  )

  test(
    'a USR2 re-exec serves a third release, and stopGunicorn() stops the new master from the pidfile',
    async () => {
      await putRelease(t, 'r3', 'sandbox-r3')
      const old = Number((await t.run(`cat ${t.gunicornPidfile}`)).stdout.trim())
      const waitFor = async (what: string, check: () => Promise<boolean>) => {
        const deadline = Date.now() + 30_000
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
          await new Promise(r => setTimeout(r, 100))
        }
      }
      expect((await t.run(`kill -USR2 ${old}`)).code).toBe(0)
      // gunicorn 20.1: the new master writes <pidfile>.2 while the old one lives, and renames it to
      // <pidfile> once the old master is gone.
      let fresh = 0
      await waitFor('the new master', async () => {
        fresh = Number((await t.run(`cat ${t.gunicornPidfile}.2 2>/dev/null`)).stdout.trim())
        return fresh > 0 && (await isAlive(fresh)) && (await t.run(`pgrep -P ${fresh}`)).stdout.trim() !== ''
      })
      expect(fresh).not.toBe(old)
      expect((await t.run(`kill -QUIT ${old}`)).code).toBe(0)
      await waitFor('the old master to exit', async () => !(await isAlive(old)))
      await waitFor('the new master to take the pidfile', async () => {
        return Number((await t.run(`cat ${t.gunicornPidfile} 2>/dev/null`)).stdout.trim()) === fresh
      })
      expect(versionMarker((await get(t.url)).body)).toBe('sandbox-r3')
      expect(await t.pids()).toMatchObject({ gunicorn: fresh })
      await t.stopGunicorn()
      expect(await isAlive(fresh)).toBe(false)
    },
    TIMEOUT
  )

  test(
    'the load generator counts 502s when gunicorn is down and stops by itself',
    async () => {
      await t.stopGunicorn()
      const res = await startLoad(t.url, { concurrency: 2, maxSeconds: 5, maxRequests: 30 }).done
      expect(res.stoppedBy).toBe('requests')
      expect(res.total).toBe(30)
      expect(res.byStatus).toEqual({ '502': 30 })
      expect(res.non200).toBe(30)
      const refused = await startLoad(`http://127.0.0.1:${t.gunicornPort}/`, {
        concurrency: 1,
        maxSeconds: 0.3
      }).done
      expect(refused.stoppedBy).toBe('time')
      expect(refused.errors).toBe(refused.total)
      expect(refused.errorCodes.ECONNREFUSED).toBe(refused.total)
      expect(() => startLoad('http://10.0.0.1/', { concurrency: 1, maxSeconds: 1 })).toThrow(/loopback/)
      await t.startGunicorn()
      expect((await get(t.url)).status).toBe(200)
    },
    TIMEOUT
  )

  test(
    'stop() stops exactly its processes and removes the user, sudoers file and dirs',
    async () => {
      const pids = await t.pids()
      expect(pids.sshd && pids.nginx && pids.gunicorn).toBeTruthy()
      const uid = Number((await execFile('id', ['-u', t.user])).stdout.trim())
      // an ssh session still open while stopping, and a stray process of the user
      const sleeper = ssh('sleep 60')
      await t.run('setsid sleep 120 </dev/null >/dev/null 2>&1 &')
      await new Promise(r => setTimeout(r, 300))
      const t0 = Date.now()
      await t.stop()
      console.log(`target stopped in ${Date.now() - t0} ms`)
      expect((await sleeper).code).not.toBe(0)
      for (const pid of [pids.sshd, pids.nginx, pids.gunicorn])
        expect(await isAlive(pid as number)).toBe(false)
      await expect(execFile('getent', ['passwd', t.user])).rejects.toThrow()
      await expect(execFile('getent', ['group', t.user])).rejects.toThrow()
      const ps = (await execFile('ps', ['-eo', 'uid=,stat='])).stdout
      const mine = ps
        .split('\n')
        .filter(l => l.trim().split(/\s+/)[0] === String(uid) && !l.trim().split(/\s+/)[1].startsWith('Z'))
      expect(mine).toEqual([])
      expect(await exists(t.root)).toBe(false)
      expect(await exists(`/etc/sudoers.d/django-deploy-${t.user}`)).toBe(false)
      await t.stop() // idempotent
    },
    TIMEOUT
  )

  test.each(['after-sshd', 'after-nginx', 'end'] as const)(
    'a start that fails %s leaves no user, process, sudoers file or dir behind',
    async failAt => {
      await expect(startTarget({ name: 'ddfail', failAt })).rejects.toThrow(`failAt: ${failAt}`)
      expect(await traces('ddfail')).toEqual([])
    },
    TIMEOUT
  )

  test(
    'two targets start and stop in parallel, on 127.0.0.1 and 127.0.0.2',
    async () => {
      const [a, b] = await Promise.all([
        startTarget({ name: 'ddpar' }),
        startTarget({ name: 'ddpar', bindIp: '127.0.0.2' })
      ])
      try {
        expect(a.user).not.toBe(b.user)
        expect(b.url).toMatch(/^http:\/\/127\.0\.0\.2:/)
        // nginx answers on both; with no gunicorn behind it, that is a 502
        expect((await get(a.url)).status).toBe(502)
        expect((await get(b.url)).status).toBe(502)
        expect((await b.run(b.nginxReloadCommand)).code).toBe(0)
        expect((await a.run(b.nginxReloadCommand)).code).not.toBe(0) // a user may only touch its own nginx
      } finally {
        await Promise.all([a.stop(), b.stop()])
      }
      expect(await traces('ddpar')).toEqual([])
    },
    TIMEOUT
  )

  test(
    'refuses a non-loopback bind address before starting anything',
    async () => {
      await expect(startTarget({ bindIp: '0.0.0.0' })).rejects.toThrow(/127\.0\.0\.0\/8/)
    },
    TIMEOUT
  )
})
