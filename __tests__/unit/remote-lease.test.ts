/**
 * The deploy lock's lease and its fencing, run with the real /bin/sh against a hostile temporary deploy path.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { q } from '../../src/remote/quote.js'

const base = mkdtempSync(join(tmpdir(), 'dd-cmd-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

function sh(script: string, input?: Buffer | string): { code: number; out: string; err: string } {
  const r = spawnSync('/bin/sh', ['-c', script], { input, cwd: base })
  return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() }
}

describe('the lock is a lease with fencing (real /bin/sh)', () => {
  const MARK = 'django-deploy-lease-test-mark'
  const root = mkdtempSync(join(base, 'lease-'))
  // A hostile deploy path: every command below would create PWNED in `base` if it reached the shell unquoted.
  const l = cmd.layout(join(root, `app $(touch PWNED) it's`))
  const started: ReturnType<typeof spawn>[] = []
  afterAll(() => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  const alive = (pid: number): boolean => {
    try {
      return !/^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
    } catch {
      return false
    }
  }
  const until = async (what: () => boolean, ms: number): Promise<boolean> => {
    const end = Date.now() + ms
    while (Date.now() < end) {
      if (what()) return true
      await new Promise(r => setTimeout(r, 100))
    }
    return what()
  }
  /** A holder whose stdin the test writes (renewals) and whose exit it can await. */
  async function holder(token: string, leaseSeconds: number) {
    const child = spawn('/bin/sh', ['-c', cmd.holdLock(l, 5, `holder ${token}`, token, leaseSeconds)], {
      cwd: base
    })
    started.push(child)
    let err = ''
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
    const exited = new Promise<number>(r => child.on('close', c => r(c ?? -1)))
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => c.toString().includes('locked') && resolve())
      void exited.then(c => reject(new Error(`holder exited ${c}: ${err}`)))
    })
    return { child, exited, stderr: () => err }
  }
  /** A fenced step that starts a sleep in its group and waits: returns the sleep's PID and the step's exit. */
  async function sleeper(token: string) {
    const step = spawn('/bin/sh', ['-c', cmd.fenced(l, token, 'sleep 60 & echo "$! $$"; wait', MARK)], {
      cwd: base
    })
    started.push(step)
    const exited = new Promise<number>(r => step.on('close', c => r(c ?? -1)))
    const [sleep, pgid] = await new Promise<number[]>(r =>
      step.stdout!.once('data', (c: Buffer) => r(c.toString().trim().split(' ').map(Number)))
    )
    return { sleep, pgid, exited }
  }

  it('runs a step only while its deploy holds the lease, in a process group of its own', async () => {
    const h = await holder('t1', 30)
    const own = sh(
      cmd.fenced(l, 't1', `echo "$$ $(cut -d' ' -f5 /proc/$$/stat)"; cat`, MARK),
      'stdin reaches it'
    )
    expect(own.code).toBe(0)
    const [pid, pgid, ...rest] = own.out.trim().split(/\s+/)
    expect(pgid).toBe(pid)
    expect(rest.join(' ')).toBe('stdin reaches it')
    // A deploy whose lease was taken over: its directory may still be there, the lease file names another token.
    mkdirSync(join(l.leases, 'someone-else'), { recursive: true })
    const refused = sh(cmd.fenced(l, 'someone-else', `touch ${q(join(root, 'CHANGED'))}`, MARK))
    expect(refused.code).toBe(cmd.LEASE_LOST)
    expect(refused.err).toContain('this deploy no longer holds the deploy lock')
    expect(refused.err.split('\n')).toContain(MARK)
    expect(existsSync(join(root, 'CHANGED'))).toBe(false)
    h.child.stdin!.end('release\n')
    expect(await h.exited).toBe(0)
    expect(existsSync(l.lease)).toBe(false)
  })

  it("release frees the lock at once, not at the holder loop's next tick", async () => {
    const h = await holder('t9', 30)
    // The loop's first 1 s sleep starts right after "locked": a holder that only looked each tick would exit
    // about 1 s from here.
    await new Promise(r => setTimeout(r, 50))
    const t0 = Date.now()
    h.child.stdin!.end('release\n')
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(600)
    expect(existsSync(l.lease)).toBe(false)
  })

  it('killSteps kills a running step with everything it started', async () => {
    const h = await holder('t2', 30)
    const s = await sleeper('t2')
    expect(alive(s.sleep)).toBe(true)
    expect(sh(cmd.killSteps(l, 't2')).code).toBe(0)
    expect(await s.exited).toBe(137)
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    h.child.stdin!.end('release\n')
    await h.exited
  })

  it('renewals keep the lease; when they stop it ends, kills the steps and frees the lock', async () => {
    const h = await holder('t3', 5)
    const renew = setInterval(() => h.child.stdin!.write('renew\n'), 250)
    const s = await sleeper('t3')
    await new Promise(r => setTimeout(r, 6000))
    clearInterval(renew)
    expect([h.child.exitCode, h.stderr()]).toEqual([null, ''])
    expect(alive(s.sleep)).toBe(true)
    // the runner froze: stdin stays open, nothing more comes
    const t0 = Date.now()
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(8000)
    expect(h.stderr()).toContain('deploy lease ended (no renewal for 5 s)')
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    expect(existsSync(l.lease)).toBe(false)
    expect(sh(cmd.fenced(l, 't3', 'true', MARK)).code).toBe(cmd.LEASE_LOST)
    const next = await holder('t4', 30)
    next.child.stdin!.end('release\n')
    await next.exited
    h.child.kill('SIGKILL')
  }, 30_000)

  it('stdin ending without release (the connection dropped) ends the lease at once', async () => {
    const h = await holder('t5', 30)
    const s = await sleeper('t5')
    const t0 = Date.now()
    h.child.stdin!.end()
    expect(await h.exited).toBe(0)
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(h.stderr()).toContain('deploy lease ended (connection closed)')
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
  })

  it.each([
    ['withdrawing its token', '-f', () => l.lease],
    ['removing its lease directory (its steps killed)', '-rf', () => join(l.leases, 't10')]
  ])(
    'a step registering while the holder is %s is killed or refuses: never runs unfenced',
    async (_, flag, path) => {
      // Real /bin/sh, with `touch` (the step registering) and `rm` (the holder withdrawing its token) made to wait
      // for the test, so the two interleave exactly: the step passed its lease check and is about to register
      // while the holder ends the lease.
      const gate = mkdtempSync(join(base, 'gate-'))
      const bin = join(gate, 'bin')
      mkdirSync(bin)
      const wait = (name: string) =>
        `: > "$GATE/${name}-waiting"; while [ ! -e "$GATE/${name}-go" ]; do sleep 0.05; done`
      writeFileSync(
        join(bin, 'touch'),
        `#!/bin/sh\ncase "$1" in */step-*) ${wait('touch')};; esac\nexec /usr/bin/touch "$@"\n`,
        { mode: 0o755 }
      )
      writeFileSync(
        join(bin, 'rm'),
        `#!/bin/sh\nif [ -e "$GATE/arm" ] && [ "$1" = "$RM_FLAG" ] && [ "$2" = "$RM_PATH" ]; then ${wait('rm')}; fi\nexec /bin/rm "$@"\n`,
        { mode: 0o755 }
      )
      const env = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH}`,
        GATE: gate,
        RM_FLAG: flag,
        RM_PATH: path()
      }
      const seen = (name: string) => until(() => existsSync(join(gate, name)), 5000)
      const h = spawn('/bin/sh', ['-c', cmd.holdLock(l, 5, 'holder t10', 't10')], { cwd: base, env })
      started.push(h)
      const hExited = new Promise<number>(r => h.on('close', c => r(c ?? -1)))
      await new Promise<void>(r =>
        h.stdout!.on('data', (c: Buffer) => c.toString().includes('locked') && r())
      )
      writeFileSync(join(gate, 'arm'), '')
      const ran = join(gate, 'ran')
      const step = spawn('/bin/sh', ['-c', cmd.fenced(l, 't10', `sleep 2; echo ran > ${q(ran)}`, MARK)], {
        cwd: base,
        env
      })
      started.push(step)
      let stepErr = ''
      step.stderr!.on('data', (c: Buffer) => (stepErr += c.toString()))
      const stepExited = new Promise<number>(r => step.on('close', c => r(c ?? -1)))
      expect(await seen('touch-waiting')).toBe(true) // the lease check passed; not registered yet
      h.stdin!.end() // the connection drops: the lease ends
      expect(await seen('rm-waiting')).toBe(true) // the holder is ending the lease
      writeFileSync(join(gate, 'touch-go'), '') // the step registers now
      await new Promise(r => setTimeout(r, 400))
      writeFileSync(join(gate, 'rm-go'), '')
      expect(await hExited).toBe(0)
      const code = await stepExited
      await new Promise(r => setTimeout(r, 2500))
      expect({ code: code === 0 ? 0 : 'stopped', ran: existsSync(ran) }).toEqual({
        code: 'stopped',
        ran: false
      })
      if (code === cmd.LEASE_LOST) expect(stepErr.split('\n')).toContain(MARK)
    },
    20_000
  )

  it('a new holder kills steps a killed holder left behind', async () => {
    const h = await holder('t6', 30)
    const s = await sleeper('t6')
    h.child.kill('SIGKILL')
    await h.exited
    expect(alive(s.sleep)).toBe(true)
    const next = await holder('t7', 30)
    expect(await until(() => !alive(s.sleep), 3000)).toBe(true)
    next.child.stdin!.end('release\n')
    await next.exited
  })
})
