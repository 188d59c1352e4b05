/**
 * The deploy survives what goes wrong around it: a remote command that ends before reading its upload, a step
 * that hangs, a cancelled job, a connection cut right after the switch, a runner frozen while it holds the lock.
 * Real OpenSSH, Gunicorn, nginx and Django on loopback; the built action; the stand-in GitHub API.
 */
import { jest } from '@jest/globals'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startLoad, versionMarker } from '../../sandbox/load.js'
import { deployInputs, liveInputs } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction, type ActionRun } from '../helpers/action.js'
import { startFakeGitHub } from '../helpers/fake-github.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(300_000)

let t: Target
let repo: Repo

const inputs = (extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(t, { mode: 'deploy', checks: 'none', ...extra })
const full = (extra: Record<string, string> = {}): Record<string, string> =>
  liveInputs(t, { mode: 'deploy', checks: 'none', 'health-check-timeout': '15', ...extra })
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
const releases = (): string[] => readdirSync(join(t.deployPath, 'releases')).sort()
const served = async (): Promise<string> => versionMarker((await httpGet(`${t.url}/`)).body)
const TAG = { GITHUB_REF: 'refs/tags/r-cut' }
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** True while the process runs (a zombie, or a process of another user reusing the PID, counts as gone). */
function running(pid: number, user = t.user): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1]
    const mine = readFileSync('/etc/passwd', 'utf8').includes(`${user}:x:${uid}:`)
    return mine && !/^State:\s*Z/m.test(status)
  } catch {
    return false
  }
}
async function until(what: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await what()) return true
    await sleep(100)
  }
  return what()
}
/** The deploy lock is free: the deploy user can take it at once. */
async function lockFree(): Promise<boolean> {
  return (await t.run(`flock -n ${t.deployPath}/.deploy.lock true`)).code === 0
}
/** PIDs of sshd's processes serving the deploy user's sessions (`sshd: USER [priv]`, `sshd: USER@notty`). */
function sshdSessions(): number[] {
  return readdirSync('/proc')
    .filter(p => /^\d+$/.test(p))
    .filter(p => {
      try {
        const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8')
        return cmdline.startsWith(`sshd: ${t.user} `) || cmdline.startsWith(`sshd: ${t.user}@`)
      } catch {
        return false
      }
    })
    .map(Number)
}

/**
 * A migration that starts a child (`sleep 300`) and then sleeps itself: a step that never ends by itself.
 * Both PIDs go to slow.pids in the release, for the test to look for on the server afterwards.
 */
const SLOW_MIGRATION = `import os, subprocess, time
from django.db import migrations


def slow(apps, schema_editor):
    child = subprocess.Popen(['sleep', '300'])
    with open('slow.pids', 'w') as f:
        f.write(f'{os.getpid()} {child.pid}\\n')
    time.sleep(300)


class Migration(migrations.Migration):
    dependencies = [('pages', '0002_first_greeting')]
    operations = [migrations.RunPython(slow, migrations.RunPython.noop)]
`

function slowPids(release: string): number[] {
  const file = join(t.deployPath, 'releases', release, 'slow.pids')
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).map(Number) : []
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddres' })
  repo = new Repo()
  const env = `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`
  expect(
    (await t.run(`mkdir -p ${t.deployPath}/shared && printf '%s' '${env}' > ${t.deployPath}/shared/.env`))
      .code
  ).toBe(0)
  expectOk(await runAction(inputs({ 'release-name': 'r1' }), { workspace: repo.dir }))
  await t.startGunicorn()
  expect(await served()).toBe('v1')
}, 180_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('re-deploying the live release name of a 40 MB project fails in seconds, clearly', async () => {
  // Incompressible: the archive is ≈ 40 MB, far more than any pipe or SSH window holds.
  writeFileSync(join(repo.dir, 'big.bin'), randomBytes(40 * 1024 * 1024))
  repo.commit('40 MB of data')
  try {
    const t0 = Date.now()
    const r = await runAction(inputs({ 'release-name': 'r1' }), { workspace: repo.dir, timeoutMs: 90_000 })
    const seconds = (Date.now() - t0) / 1000
    expect(r.code).toBe(1)
    expect(r.log).toContain(
      'release r1 is the live release; deploy another release name (or use mode: rollback)'
    )
    expect(r.outputs.deployed).toBe('false')
    expect(seconds).toBeLessThan(20)
    console.log(`re-deploy of the live name with a 40 MB archive failed after ${seconds.toFixed(1)} s`)
    expect(live()).toBe('releases/r1')
    expect(await lockFree()).toBe(true)
  } finally {
    repo.git('rm', '-q', 'big.bin')
    repo.commit('drop the 40 MB file')
  }
})

test('a step that runs past command-timeout is killed with its process group', async () => {
  repo.write('pages/migrations/0003_slow.py', SLOW_MIGRATION).commit('slow migration')
  try {
    const t0 = Date.now()
    const r = await runAction(inputs({ 'release-name': 'r-slow', 'command-timeout': '10' }), {
      workspace: repo.dir
    })
    const seconds = (Date.now() - t0) / 1000
    expect(r.code).toBe(1)
    expect(r.log).toMatch(
      /✗ migrate failed after \d+\.\d s \(exit 124\) timed out after 10 s \(command-timeout\): its processes on the server were killed/
    )
    expect(r.outputs.deployed).toBe('false')
    expect(seconds).toBeLessThan(60)
    // The migration and the child it started ran on the server, and are gone now.
    const pids = slowPids('r-slow')
    expect(pids).toHaveLength(2)
    expect(await until(() => pids.every(p => !running(p)), 5000)).toBe(true)
    expect(live()).toBe('releases/r1')
    expect(await served()).toBe('v1')
    expect(await lockFree()).toBe(true)
  } finally {
    repo.git('rm', '-q', 'pages/migrations/0003_slow.py')
    repo.commit('no slow migration')
  }
})

test('a cancelled deploy (runner killed with SIGTERM) kills its step on the server, leaves the old release live and the lock free', async () => {
  repo.write('pages/migrations/0003_slow.py', SLOW_MIGRATION).commit('slow migration')
  try {
    let cancelledAt = 0
    let action: ChildProcess | undefined
    // Once the migration runs on the server (its PIDs file is there), the runner gets SIGTERM, as on a cancel.
    const poll = setInterval(() => {
      if (!cancelledAt && action && slowPids('r-cancel').length === 2) {
        cancelledAt = Date.now()
        action.kill('SIGTERM')
      }
    }, 50)
    const r = await runAction(inputs({ 'release-name': 'r-cancel' }), {
      workspace: repo.dir,
      watch: (_log, child) => (action = child),
      timeoutMs: 120_000
    }).finally(() => clearInterval(poll))
    expect(cancelledAt).toBeGreaterThan(0)
    const seconds = (Date.now() - cancelledAt) / 1000
    expect(r.code).toBe(1)
    expect(seconds).toBeLessThan(20)
    expect(r.log).toMatch(/cancelled \(SIGTERM\): its processes on the server were killed/)
    expect(r.outputs.deployed).toBe('false')
    expect(r.summary).toContain('r-cancel')
    const pids = slowPids('r-cancel')
    expect(await until(() => pids.every(p => !running(p)), 5000)).toBe(true)
    expect(live()).toBe('releases/r1')
    expect(await served()).toBe('v1')
    expect(await lockFree()).toBe(true)
  } finally {
    repo.git('rm', '-q', 'pages/migrations/0003_slow.py')
    repo.commit('no slow migration')
  }
})

test('a connection cut right after the switch, under load: the run ends on its own, and says what is live', async () => {
  repo.write('VERSION', 'v-cut\n').commit('v-cut')
  const before = live()
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  await sleep(500)
  const gh = await startFakeGitHub()
  let cutAt = 0
  let killed: number[] = []
  // Watches `current` on the server; the moment it changes, sshd's processes of the deploy user's session die.
  const watcher = setInterval(() => {
    if (cutAt || live() === before) return
    cutAt = Date.now()
    killed = sshdSessions()
    for (const pid of killed) process.kill(pid, 'SIGKILL')
  }, 5)
  const r: ActionRun = await runAction(
    full({ 'release-name': 'r-cut', 'github-token': 'ghs_deploy_token' }),
    { workspace: repo.dir, env: { ...TAG, GITHUB_API_URL: gh.url }, timeoutMs: 150_000 }
  ).finally(() => {
    clearInterval(watcher)
    gh.close()
  })
  const ended = Date.now()
  await sleep(500)
  const result = await load.stop()
  expect(cutAt).toBeGreaterThan(0)
  expect(killed.length).toBeGreaterThan(0)
  // it ended by itself (not the helper's SIGKILL after 150 s), within a minute of the cut
  expect(r.code).toBe(1)
  expect((ended - cutAt) / 1000).toBeLessThan(60)
  console.log(
    `cut after the switch: the run ended ${((ended - cutAt) / 1000).toFixed(1)} s later; load ${result.total} requests, ${result.non200} non-200, ${result.errors} errors; deployed=${r.outputs.deployed} rolled-back=${r.outputs['rolled-back']}`
  )
  // Outputs and summary were written, and they say what the server really serves.
  expect(r.outputs.deployed).toMatch(/^(true|false)$/)
  expect(r.summary).toContain('r-cut')
  const nowLive = live()
  const nowServed = await served()
  if (r.outputs.deployed === 'true') {
    expect(nowLive).toBe('releases/r-cut')
    expect(nowServed).toBe('v-cut')
  } else {
    expect(nowLive).toBe(before)
    expect(nowServed).toBe('v1')
    expect(r.outputs['rolled-back']).toBe('true')
  }
  // The GitHub deployment's last status is final.
  const statuses = gh.deployments[0].statuses
  expect(['success', 'failure', 'error', 'inactive']).toContain(statuses[statuses.length - 1].state)
  expect(statuses[statuses.length - 1].state).toBe(r.outputs.deployed === 'true' ? 'success' : 'failure')
  expect(await lockFree()).toBe(true)
  expect(result.total).toBeGreaterThan(20)
  // how it got there: the step failed on the lost connection, the action reached the host again
  expect(r.log).toMatch(/connection lost/)
  expect(r.log).toMatch(/reconnecting \(1\/3\)/)
})

test('a runner frozen while it holds the lock loses it within the lease; resumed, it changes nothing', async () => {
  repo.write('VERSION', 'v-frozen\n').commit('v-frozen')
  let frozen: ChildProcess | undefined
  let frozenAt = 0
  const first = runAction(inputs({ 'release-name': 'r-frozen' }), {
    workspace: repo.dir,
    watch: (log, child) => {
      if (!frozen && /✓ upload/.test(log)) {
        frozen = child
        frozenAt = Date.now()
        child.kill('SIGSTOP')
      }
    },
    timeoutMs: 240_000
  })
  expect(await until(() => frozen !== undefined, 60_000)).toBe(true)
  try {
    repo.write('VERSION', 'v-second\n').commit('v-second')
    let lockedAt = 0
    const second = await runAction(inputs({ 'release-name': 'r-second', 'lock-timeout': '90' }), {
      workspace: repo.dir,
      watch: log => {
        if (!lockedAt && /lock taken/.test(log)) lockedAt = Date.now()
      }
    })
    expectOk(second)
    const lockWait = (lockedAt - frozenAt) / 1000
    console.log(`the second deploy took the frozen deploy's lock ${lockWait.toFixed(1)} s after the freeze`)
    expect(lockedAt).toBeGreaterThan(0)
    expect(lockWait).toBeLessThan(60)
    expect(second.outputs.deployed).toBe('true')
    expect(live()).toBe('releases/r-second')
  } finally {
    frozen?.kill('SIGCONT')
  }
  const afterSecond = { releases: releases(), live: live() }
  const history = readFileSync(join(t.deployPath, '.deploy-history'), 'utf8')
  const r = await first
  expect(r.code).toBe(1)
  expect({ releases: releases(), live: live() }).toEqual(afterSecond)
  expect(readFileSync(join(t.deployPath, '.deploy-history'), 'utf8')).toBe(history)
  expect(r.outputs.deployed).toBe('false')
  expect(r.log).toMatch(/this deploy no longer holds the deploy lock|deploy lease ended|exit 137/)
  expect(await served()).toBe('v1')
  expect(await lockFree()).toBe(true)
})

test('re-deploying an older release name: a connection cut after it took the old one’s place, before the switch, puts the old one back', async () => {
  repo.write('VERSION', 'v-old\n').commit('v-old')
  expectOk(await runAction(inputs({ 'release-name': 'r-old' }), { workspace: repo.dir }))
  repo.write('VERSION', 'v-newer\n').commit('v-newer')
  expectOk(await runAction(inputs({ 'release-name': 'r-newer' }), { workspace: repo.dir }))
  const oldVersion = join(t.deployPath, 'releases/r-old/VERSION')
  expect(readFileSync(oldVersion, 'utf8')).toBe('v-old\n')
  // The Gunicorn probe between `place` and the switch reads this FIFO: it waits there until the cut.
  const fifo = `${t.deployPath}/gunicorn.fifo`
  expect((await t.run(`mkfifo ${fifo}`)).code).toBe(0)
  const replaced = join(t.deployPath, 'releases/.replaced-r-old')
  repo.write('VERSION', 'v-rebuilt\n').commit('v-rebuilt')
  let killed: number[] = []
  const watcher = setInterval(() => {
    if (killed.length || !existsSync(replaced)) return
    killed = sshdSessions()
    for (const pid of killed) process.kill(pid, 'SIGKILL')
  }, 20)
  const r = await runAction(inputs({ 'release-name': 'r-old', 'gunicorn-pidfile': fifo }), {
    workspace: repo.dir,
    timeoutMs: 150_000
  }).finally(() => clearInterval(watcher))
  await t.run(`rm -f ${fifo}`)
  expect(killed.length).toBeGreaterThan(0)
  expect(r.code).toBe(1)
  expect(r.outputs.deployed).toBe('false')
  expect(r.log).toMatch(/connection lost/)
  expect(r.log).toMatch(/r-old did not go live here/)
  // The old r-old, the rollback target, is back in its place; nothing of the rebuild is left beside it.
  expect(live()).toBe('releases/r-newer')
  expect(readFileSync(oldVersion, 'utf8')).toBe('v-old\n')
  expect(releases().filter(n => n.startsWith('.'))).toEqual([])
  expect(await lockFree()).toBe(true)
})
