/**
 * What must never go wrong: an unpinned host key, two deploys at once, a deploy killed midway, a dry run.
 * Real OpenSSH on loopback, the built action.
 */
import { jest } from '@jest/globals'
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { execFileSync, spawn } from 'node:child_process'
import { deployInputs } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, node24, Repo, runAction } from '../helpers/action.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo

const inputs = (extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(t, { mode: 'deploy', checks: 'none', ...extra })
const sshdLog = (): string => readFileSync(t.logs.sshd, 'utf8')

beforeAll(async () => {
  t = await startTarget({ name: 'ddsafe' })
  repo = new Repo()
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a host key that is not the pinned one is refused before authentication', async () => {
  const other = t.knownHosts.replace(
    /ssh-ed25519 \S+/,
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm8Lb1YzFq1TVTY1QuJgXEZ4N6Q2kzWb0xwq1Zm1Yv3'
  )
  const before = sshdLog().length
  const r = await runAction(inputs({ 'known-hosts': other, 'release-name': 'r-wrongkey' }), {
    workspace: repo.dir
  })
  expect(r.code).not.toBe(0)
  expect(r.log).toMatch(
    /host key SHA256:\S+ \(ssh-ed25519\) does NOT match the key pinned for \[127\.0\.0\.1\]:\d+/
  )
  expect(r.outputs.deployed).toBe('false')
  // sshd saw the connection but no authentication attempt for the user, and nothing was created.
  const log = sshdLog().slice(before)
  expect(log).not.toMatch(/Accepted publickey|Failed publickey|Postponed publickey/)
  expect(existsSync(join(t.deployPath, 'releases'))).toBe(false)
  // the private key never reaches the log
  // the private key never reaches the log (the runner consumes ::add-mask:: commands; it shows none of them)
  const shown = r.log
    .split('\n')
    .filter(l => !l.startsWith('::add-mask::'))
    .join('\n')
  for (const line of t.privateKey.split('\n').filter(l => l.length > 20)) expect(shown).not.toContain(line)
})

test('a second deploy waits for the lock, or fails naming who holds it', async () => {
  // Someone else holds the lock: a session on the server keeps it for 4 s.
  const holder = spawn('setpriv', [
    `--reuid=${t.user}`,
    `--regid=${t.user}`,
    '--init-groups',
    'sh',
    '-c',
    `mkdir -p ${t.deployPath} && exec 9>>${t.deployPath}/.deploy.lock && flock 9 && echo 'https://ci.example/run/1 (release other)' > ${t.deployPath}/.deploy.lock.holder && echo held && sleep 4`
  ])
  const holderClosed = new Promise(r => holder.on('close', r))
  let holderErr = ''
  holder.stderr.on('data', (c: Buffer) => (holderErr += c.toString()))
  await new Promise<void>((resolve, reject) => {
    holder.stdout.on('data', () => resolve())
    holder.on('close', code => reject(new Error(`the lock holder exited ${code}: ${holderErr}`)))
  })
  const failed = await runAction(inputs({ 'lock-timeout': '1', 'release-name': 'r-lock1' }), {
    workspace: repo.dir
  })
  expect(failed.code).not.toBe(0)
  expect(failed.log).toContain('still held after 1 s by: https://ci.example/run/1 (release other)')
  expect(existsSync(join(t.deployPath, 'releases/r-lock1'))).toBe(false)

  const waited = await runAction(
    inputs({
      'lock-timeout': '60',
      'release-name': 'r-lock2',
      'reload-command': 'printf reloaded-without-newline'
    }),
    {
      workspace: repo.dir
    }
  )
  expectOk(waited)
  // a step whose output has no final new line is still reported as its own step
  // (server output is data: the line that resumes workflow commands may come between)
  expect(waited.log).toMatch(/reloaded-without-newline\n(::[0-9a-f]{32}::\n)?✓ reload \(/)
  expect(readlinkSync(join(t.deployPath, 'current'))).toBe('releases/r-lock2')
  await holderClosed
})

test('a deploy killed midway leaves no stale lock, and the next deploy succeeds', async () => {
  repo.write('VERSION', 'killed\n').commit('killed')
  const killed = await runAction(inputs({ 'release-name': 'r-killed' }), {
    workspace: repo.dir,
    killWhen: log => /virtualenv/.test(log)
  })
  expect(killed.code).toBe(137)
  expect(readlinkSync(join(t.deployPath, 'current'))).toBe('releases/r-lock2')
  const t0 = Date.now()
  const next = await runAction(inputs({ 'release-name': 'r-after', 'lock-timeout': '30' }), {
    workspace: repo.dir
  })
  expectOk(next)
  // the lock was free at once (the killed session ended with its connection), not after a timeout
  expect(Date.now() - t0).toBeLessThan(25_000)
  expect(readlinkSync(join(t.deployPath, 'current'))).toBe('releases/r-after')
})

test('a dry run prints every step and command and changes nothing', async () => {
  const before = readdirSync(join(t.deployPath, 'releases')).sort()
  const r = await runAction(
    inputs({ 'dry-run': 'true', 'release-name': 'r-dry', 'health-check-url': `${t.url}/health/` }),
    {
      workspace: repo.dir
    }
  )
  expectOk(r)
  for (const step of [
    'prepare',
    'upload',
    'shared',
    'virtualenv',
    'preflight',
    'migrate',
    'collectstatic',
    'switch',
    'health',
    'cleanup'
  ]) {
    expect(r.log).toContain(`# ${step}`)
  }
  expect(r.log).toContain(`mv -T ${t.deployPath}/current.tmp-r-dry ${t.deployPath}/current`)
  expect(r.outputs.deployed).toBe('false')
  expect(readdirSync(join(t.deployPath, 'releases')).sort()).toEqual(before)
  expect(readlinkSync(join(t.deployPath, 'current'))).toBe('releases/r-after')
})

test('servers are reached through a jump host, with its host key pinned too (on Node 24, as GitHub runs it)', async () => {
  const jump = `${t.user}@127.0.0.1:${t.sshPort}`
  const node = node24()
  const r = await runAction(inputs({ 'dry-run': 'true', 'release-name': 'r-jump', 'jump-host': jump }), {
    workspace: repo.dir,
    node
  })
  expectOk(r)
  expect(execFileSync(node, ['--version']).toString()).toMatch(/^v24\./)
  expect(r.log).toContain('connected as')
  expect(r.log).toContain('# switch')
  const before = sshdLog().length
  const wrong = t.knownHosts.replace(
    /ssh-ed25519 \S+/,
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm8Lb1YzFq1TVTY1QuJgXEZ4N6Q2kzWb0xwq1Zm1Yv3'
  )
  const refused = await runAction(inputs({ 'dry-run': 'true', 'jump-host': jump, 'known-hosts': wrong }), {
    workspace: repo.dir
  })
  expect(refused.code).not.toBe(0)
  expect(refused.log).toMatch(/jump host 127\.0\.0\.1: host key \S+ \(ssh-ed25519\) does NOT match/)
  expect(sshdLog().slice(before)).not.toMatch(/Accepted publickey/)
})
