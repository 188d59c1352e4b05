/**
 * Nothing crashes, nothing is left half-done (issue 15, item 3): a project command exiting 76, a command printing
 * a gigabyte, a lock that hangs on the server, a bug in the action after the switch, a cancel after the switch
 * with GitHub's real signal intervals under load. Real OpenSSH, Gunicorn, nginx and Django on loopback; the
 * built action.
 */
import { jest } from '@jest/globals'
import type { ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startLoad, versionMarker } from '../../sandbox/load.js'
import { deployInputs, liveInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { shq, startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction } from '../helpers/action.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(300_000)

let t: Target
let repo: Repo
let version = 1

const bare = (extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(t, { mode: 'deploy', checks: 'none', ...extra })
const full = (extra: Record<string, string> = {}): Record<string, string> =>
  liveInputs(t, { mode: 'deploy', checks: 'none', 'health-check-timeout': '15', ...extra })
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
const served = async (): Promise<string> => versionMarker((await httpGet(`${t.url}/`)).body)
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))
async function lockFree(): Promise<boolean> {
  return (await t.run(`flock -n ${shq(`${t.deployPath}/.deploy.lock`)} true`)).code === 0
}
/** A new commit whose VERSION the app serves. */
function next(): string {
  version += 1
  repo.write('VERSION', `v${version}\n`).commit(`v${version}`)
  return `v${version}`
}
/** Peak RSS (VmHWM, KiB) of a process, read until it ends. */
function peakRss(child: () => ChildProcess | undefined): { stop(): number } {
  let peak = 0
  const timer = setInterval(() => {
    const pid = child()?.pid
    if (!pid) return
    try {
      const m = /^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (m) peak = Math.max(peak, Number(m[1]))
    } catch {
      // ended
    }
  }, 50)
  return { stop: () => (clearInterval(timer), peak) }
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddi15r' })
  repo = new Repo()
  await writeServerEnv(t)
  expectOk(await runAction(bare({ 'release-name': 'r1' }), { workspace: repo.dir }))
  await t.startGunicorn()
  expect(await served()).toBe('v1')
}, 180_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
})

test('a reload command that exits 76 is an ordinary failure: the previous release is put back', async () => {
  const before = live()
  next()
  // Exits 76 (the old lease-lost code) in the new release only, so putting the old one back succeeds.
  const r = await runAction(
    bare({ 'release-name': 'r-76', 'reload-command': 'grep -qx v1 VERSION || exit 76' }),
    { workspace: repo.dir }
  )
  expect(r.code).toBe(1)
  expect(r.log).toMatch(/step reload failed \(exit 76\)/)
  expect(r.log).not.toMatch(/no longer holds the deploy lock/)
  expect(r.outputs['rolled-back']).toBe('true')
  expect(live()).toBe(before)
  expect(await lockFree()).toBe(true)
})

test('a reload command printing 1 GB (no new line) neither crashes the action nor grows its memory', async () => {
  next()
  let action: ChildProcess | undefined
  const rss = peakRss(() => action)
  const t0 = Date.now()
  const r = await runAction(
    bare({
      'release-name': 'r-1gb',
      'reload-command': "grep -qx v1 VERSION || head -c 1000000000 /dev/zero | tr '\\0' x",
      'command-timeout': '600'
    }),
    { workspace: repo.dir, watch: (_, c) => (action = c), timeoutMs: 280_000 }
  )
  const peak = rss.stop()
  console.log(
    `1 GB from a reload command: ${((Date.now() - t0) / 1000).toFixed(1)} s, action peak RSS ${(peak / 1024).toFixed(0)} MiB, log ${(r.log.length / 1e6).toFixed(1)} MB`
  )
  expectOk(r)
  expect(r.outputs.deployed).toBe('true')
  expect(live()).toBe('releases/r-1gb')
  expect(r.log).toMatch(/more lines of output not shown/)
  expect(r.log.length).toBeLessThan(10e6)
  expect(peak).toBeGreaterThan(0)
  expect(peak).toBeLessThan(400 * 1024)
})

test('a lock that hangs on the server (the lock file is a FIFO) fails within lock-timeout + 15 s, naming the host and what hung', async () => {
  const lock = `${t.deployPath}/.deploy.lock`
  const before = live()
  expect((await t.run(`rm -f ${shq(lock)} && mkfifo ${shq(lock)}`)).code).toBe(0)
  try {
    next()
    const t0 = Date.now()
    const r = await runAction(bare({ 'release-name': 'r-fifo', 'lock-timeout': '3' }), {
      workspace: repo.dir,
      timeoutMs: 120_000
    })
    const seconds = (Date.now() - t0) / 1000
    console.log(`hung lock: the action ended after ${seconds.toFixed(1)} s`)
    expect(r.code).toBe(1)
    expect(seconds).toBeLessThan(60)
    expect(r.log).toContain(`host 127.0.0.1:${t.sshPort}: step lock failed (exit 124)`)
    expect(r.log).toMatch(
      /no lock after 18 s \(lock-timeout \+ 15 s\): opening the lock file \S+\.deploy\.lock hung/
    )
    expect(r.summary).toMatch(/opening the lock file/)
    expect(live()).toBe(before)
  } finally {
    // The holder is still blocked opening the FIFO for writing: a reader lets it go (it then dies on its closed
    // channel), and the FIFO goes.
    await t.run(`timeout 3 cat ${shq(lock)} >/dev/null; rm -f ${shq(lock)}`)
  }
})

describe('an internal error after the switch', () => {
  // Gunicorn serves what is live (the tests above switched without reloading it).
  beforeAll(async () => {
    const v = next()
    expectOk(await runAction(full({ 'release-name': 'r-base' }), { workspace: repo.dir }))
    expect(await served()).toBe(v)
  })

  test.each([
    ['an unhandled rejection', 'rejection', 'r-rej'],
    ['an uncaught exception', 'exception', 'r-exc'],
    ['an unhandled rejection with a flow that never ends', 'stuck', 'r-stuck']
  ])('%s: what was switched is put back and the report is written', async (_, fault, release) => {
    const before = live()
    const old = await served()
    next()
    const r = await runAction(full({ 'release-name': release }), {
      workspace: repo.dir,
      env: { DJANGO_DEPLOY_TEST_FAULT: fault },
      timeoutMs: 150_000
    })
    expect(r.code).toBe(1)
    expect(r.log).toMatch(new RegExp(`internal error: Error: injected fault \\(${fault}\\)`))
    if (fault === 'stuck') expect(r.log).toMatch(/did not end 30 s after an internal error/)
    expect(r.outputs).toMatchObject({ release, deployed: 'false', 'rolled-back': 'true' })
    expect(r.summary).toContain(release)
    expect(r.summary).toMatch(/internal error \(injected fault/)
    expect(live()).toBe(before)
    expect(await served()).toBe(old)
    expect(await lockFree()).toBe(true)
  })
})

test("cancelled after the switch, with GitHub's intervals, under load: the old release serves and the report is written before SIGTERM", async () => {
  const before = live()
  const old = await served()
  next()
  const files = mkdtempSync(join(tmpdir(), 'dd-i15r-'))
  const summary = join(files, 'summary')
  const output = join(files, 'output')
  writeFileSync(summary, '')
  writeFileSync(output, '')
  // The health URL answers at once until the cancel, then not at all: a health check after the cancel would
  // take its whole timeout (15 s), past SIGTERM.
  let slow = false
  const health = createServer((_, res) => (slow ? undefined : res.end('ok')))
  await new Promise<void>(r => health.listen(0, '127.0.0.1', r))
  const healthUrl = `http://127.0.0.1:${(health.address() as AddressInfo).port}/`
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  await sleep(500)
  let action: ChildProcess | undefined
  let sigint = 0
  let atSigterm: { summary: string; output: string } | undefined
  const timers: NodeJS.Timeout[] = []
  // The moment `current` moves, the job is cancelled: SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after that.
  const watcher = setInterval(() => {
    if (sigint || !action || live() === before) return
    sigint = Date.now()
    slow = true
    action.kill('SIGINT')
    timers.push(
      setTimeout(() => {
        atSigterm = { summary: readFileSync(summary, 'utf8'), output: readFileSync(output, 'utf8') }
        action?.kill('SIGTERM')
      }, 7500),
      setTimeout(() => action?.kill('SIGKILL'), 10_000)
    )
  }, 5)
  const r = await runAction(full({ 'release-name': 'r-cancel', 'health-check-url': healthUrl }), {
    workspace: repo.dir,
    env: { GITHUB_STEP_SUMMARY: summary, GITHUB_OUTPUT: output },
    watch: (_, c) => (action = c),
    timeoutMs: 150_000
  }).finally(() => clearInterval(watcher))
  const ended = Date.now()
  await sleep(Math.max(1000, sigint + 10_500 - Date.now()))
  const result = await load.stop()
  for (const timer of timers) clearTimeout(timer)
  health.closeAllConnections()
  health.close()
  console.log(
    `cancel after the switch: the action ended ${((ended - sigint) / 1000).toFixed(1)} s after SIGINT (exit ${r.code}); load ${result.total} requests, ${result.non200} non-200, ${result.errors} errors; by body ${JSON.stringify(result.bodies)}`
  )
  rmSync(files, { recursive: true, force: true })
  expect(sigint).toBeGreaterThan(0)
  // The report was written before SIGTERM came.
  expect(atSigterm?.summary ?? readFileSync(summary, 'utf8')).toContain('r-cancel')
  expect(atSigterm?.summary ?? '').toMatch(/cancelled \(SIGINT\)/)
  expect(atSigterm?.output ?? '').toMatch(/rolled-back<<\S+\ntrue\n/)
  expect(live()).toBe(before)
  expect(await served()).toBe(old)
  expect(result.total).toBeGreaterThan(20)
  expect(result.non200 + result.errors).toBe(0)
  expect(await lockFree()).toBe(true)
})

test('cancelled during the checks (before any deploy): the report is written and the action ends at once', async () => {
  let action: ChildProcess | undefined
  let sentAt = 0
  const r = await runAction(
    { mode: 'check', checks: 'test', 'test-command': 'sleep 60', python: '/usr/bin/python3' },
    {
      workspace: repo.dir,
      watch: (log, c) => {
        action = c
        if (!sentAt && /mode: check/.test(log)) {
          sentAt = Date.now()
          setTimeout(() => action?.kill('SIGINT'), 1000)
        }
      },
      timeoutMs: 90_000
    }
  )
  const seconds = (Date.now() - sentAt) / 1000 - 1
  console.log(
    `cancelled during the checks: the action ended ${seconds.toFixed(1)} s after SIGINT (exit ${r.code})`
  )
  expect(r.code).toBe(130)
  expect(seconds).toBeLessThan(5)
  expect(r.summary).toMatch(/cancelled \(SIGINT\) before the deploy began/)
})
