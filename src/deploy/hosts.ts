/**
 * The hosts of a deploy: connecting (through the `Connect` the runner was given), the deploy lock and its
 * lease, reading what each host holds, reconnecting after a lost connection, and closing.
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import * as cmd from '../remote/commands.js'
import { Remote, type Connect } from '../remote/ssh.js'
import type { Settings } from '../settings.js'
import { forRoles } from './plan.js'
import type { Executor } from './step.js'
import { eachAtMost, HostLog, StepError, type Log, type Target } from './target.js'

/** Tries to reach a host again after a lost connection, host key verified each time. */
const RECONNECT_TRIES = 3
/** Seconds the lock command may take beyond lock-timeout (its own wait) before the runner gives up on it. */
const LOCK_MARGIN = 15

type LockError = Error & { code?: number; output?: string; timedOut?: boolean }

export class Hosts {
  constructor(
    private readonly settings: Settings,
    private readonly log: Log,
    private readonly x: Executor,
    private readonly connect: Connect
  ) {}

  /** Runs `f` on every host at once (at most max-parallel), then writes their logs; throws the first failure. */
  async every(targets: Target[], f: (t: Target) => Promise<void>): Promise<void> {
    try {
      await eachAtMost(targets, this.settings.deploy.maxParallel, f)
    } finally {
      for (const t of targets) t.log.flush()
    }
  }

  /**
   * Connects to every host (host keys verified, at most max-parallel at once), takes the locks unless only
   * reading, one host after another in one sorted order (two fleets listed differently never deadlock), and
   * reads what each host holds. Each host connected joins `targets` at once (closed whatever happens next).
   */
  async open(lock: boolean, targets: Target[]): Promise<void> {
    const s = this.settings
    const many = s.ssh.hosts.length > 1
    const slots = s.ssh.hosts.map(() => undefined as Target | undefined)
    await eachAtMost(
      s.ssh.hosts.map((host, i) => ({ host, i })),
      s.deploy.maxParallel,
      async ({ host, i }) => {
        const log = new HostLog(this.log, many)
        const t0 = Date.now()
        log.startGroup(`${Remote.label(host)}: connect`)
        try {
          const remote = await this.connect(host, s.ssh)
          const layout = cmd.layout(host.deployPath ?? s.deploy.path)
          slots[i] = { host, remote, state: { releases: [] }, log, layout, d: forRoles(s.deploy, host.roles) }
          log.info(`${remote.name}: connected as ${host.user ?? s.ssh.user}, host key verified`)
          this.x.record(remote.name, 'connect', 'ok', t0)
        } finally {
          log.endGroup()
          log.flush()
        }
      }
    ).finally(() => targets.push(...slots.filter((t): t is Target => t !== undefined)))
    if (lock) {
      const order = [...targets].sort((a, b) =>
        a.remote.name < b.remote.name ? -1 : a.remote.name > b.remote.name ? 1 : 0
      )
      for (const t of order) await this.lock(t)
    }
    await this.every(targets, async t => void (t.state = await this.inspect(t, false)))
  }

  /** What the host holds now. */
  async inspect(t: Target, evenIfCancelled: boolean): Promise<cmd.HostState> {
    const out = await this.x.exec(
      t,
      { name: 'inspect', script: cmd.inspect(t.layout) },
      undefined,
      evenIfCancelled
    )
    return cmd.parseInspect(out)
  }

  private async lock(t: Target): Promise<void> {
    const s = this.settings
    const holder = `${s.context.runUrl ?? `run on ${hostname()}`} (release ${s.deploy.releaseName ?? '?'}, since ${new Date().toISOString()})`
    const token = randomBytes(12).toString('hex')
    const t0 = Date.now()
    t.log.startGroup(`${t.remote.name}: lock`)
    try {
      t.log.info(`waiting up to ${s.deploy.lockTimeout} s for the deploy lock on ${t.layout.root}`)
      t.lock = await t.remote.hold(
        cmd.holdLock(t.layout, s.deploy.lockTimeout, holder, token),
        'locked',
        (s.deploy.lockTimeout + LOCK_MARGIN) * 1000
      )
      t.token = token
      // The lease ends on the server when these stop for LEASE_SECONDS (a frozen or vanished runner).
      const lock = t.lock
      t.renewal = setInterval(() => lock.send('renew'), cmd.RENEW_SECONDS * 1000)
      t.renewal.unref()
      t.log.info(
        `lock taken (a lease: renewed every ${cmd.RENEW_SECONDS} s, ended by the server after ${cmd.LEASE_SECONDS} s without renewal)`
      )
    } catch (e) {
      const { code, text } = this.lockFailure(t, e as LockError)
      this.x.record(t.remote.name, 'lock', 'failed', t0, text)
      throw new StepError(t.remote.name, 'lock', code, text)
    } finally {
      t.log.endGroup()
      t.log.flush()
    }
    this.x.record(t.remote.name, 'lock', 'ok', t0)
  }

  /** Why the lock was not taken: the holder's own words, or (it did not answer) the stage that hung. */
  private lockFailure(t: Target, err: LockError): { code: number; text: string } {
    const lines = (err.output ?? '').split('\n')
    const text = lines
      .filter(l => !l.startsWith(cmd.LOCK_STAGE))
      .join('\n')
      .trim()
    if (!err.timedOut) return { code: err.code ?? 1, text: text || err.message }
    const stage = lines
      .filter(l => l.startsWith(cmd.LOCK_STAGE))
      .pop()
      ?.slice(cmd.LOCK_STAGE.length)
    const l = t.layout
    const what =
      stage === 'mkdir'
        ? `\`mkdir -p ${l.root}\` hung (a hung file system under the deploy path, e.g. NFS?)`
        : stage === 'open'
          ? `opening the lock file ${l.lock} hung (a FIFO, or a hung file system?)`
          : stage === 'flock'
            ? `flock on ${l.lock} did not give up after lock-timeout (a hung file system?)`
            : stage === 'take'
              ? `taking over the lock (killing an earlier deploy's steps) hung`
              : `the lock command never started: the login shell (or a file it reads, like ~/.bashrc) did not return`
    const seconds = this.settings.deploy.lockTimeout + LOCK_MARGIN
    return { code: 124, text: `no lock after ${seconds} s (lock-timeout + ${LOCK_MARGIN} s): ${what}` }
  }

  /** Lets the lock go (or just forgets it when the connection is gone: the server ends the lease). */
  private async unlock(t: Target): Promise<void> {
    clearInterval(t.renewal)
    t.renewal = undefined
    const lock = t.lock
    t.lock = undefined
    await lock?.release('release').catch(() => undefined)
  }

  async close(targets: Target[]): Promise<void> {
    await Promise.all(
      targets.map(async t => {
        await this.unlock(t)
        t.remote.dispose()
      })
    )
    for (const t of targets) t.log.flush()
  }

  /**
   * After a lost connection: connects again (host key verified again, at most RECONNECT_TRIES times), takes
   * the lock again and reads what the host serves now. Returns the live release.
   */
  async reconnect(t: Target): Promise<string | undefined> {
    const why = t.remote.lost ?? 'connection lost'
    clearInterval(t.renewal)
    t.lock = undefined
    t.token = undefined
    t.remote.dispose()
    let last: Error | undefined
    for (let i = 1; i <= RECONNECT_TRIES; i++) {
      t.log.warning(`${t.remote.name}: ${why}; reconnecting (${i}/${RECONNECT_TRIES})`)
      try {
        t.remote = await this.connect(t.host, this.settings.ssh)
        t.log.info(`${t.remote.name}: connected again, host key verified`)
        await this.lock(t)
        const now = await this.inspect(t, true)
        t.log.info(`${t.remote.name}: live release now: ${now.current ?? 'none'}`)
        return now.current
      } catch (e) {
        last = e as Error
        await this.unlock(t)
        t.remote.dispose()
        await new Promise(r => setTimeout(r, 1000 * i))
      }
    }
    throw new Error(
      `host ${t.remote.name}: ${why}, and ${RECONNECT_TRIES} attempts to reconnect failed (last: ${last?.message}); what it serves is unknown`
    )
  }
}
