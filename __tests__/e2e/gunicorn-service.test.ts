/**
 * The `gunicorn-service` reload against a real Gunicorn (Debian's), with a `systemctl` stand-in on PATH: there is
 * no running systemd on these machines. The stand-in answers `show -p MainPID --value UNIT` from Gunicorn's
 * pidfile and turns `reload` into the unit's ExecReload (HUP to the master); `restart` is only recorded (what a
 * restart does is systemd's). What is tested is ours: the choice of reload or restart from what the master runs,
 * and the wait for new workers that have loaded the application.
 */
import { jest } from '@jest/globals'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'

jest.setTimeout(60_000)

const base = mkdtempSync(join(tmpdir(), 'dd-gsvc-'))
const l = cmd.layout(join(base, 'app'))
const pidfile = join(base, 'gunicorn.pid')
const calls = join(base, 'calls')
/** While this file exists the stand-in says the unit is not active (the first deploy after mode: setup). */
const inactive = join(base, 'inactive')
const bin = join(base, 'bin')
let gunicorn: ChildProcess | undefined

const workers = (master: string): string[] =>
  spawnSync('/bin/sh', ['-c', `grep -ls "^PPid:[[:space:]]*${master}$" /proc/[0-9]*/status | cut -d/ -f3`])
    .stdout.toString()
    .split('\n')
    .filter(Boolean)
    .sort()

beforeAll(async () => {
  mkdirSync(join(l.releases, 'r1'), { recursive: true })
  mkdirSync(join(l.venvs, 'k1'), { recursive: true })
  symlinkSync(join(l.venvs, 'k1'), join(l.releases, 'r1/.venv'))
  writeFileSync(
    join(base, 'app.py'),
    "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
  )
  mkdirSync(bin)
  writeFileSync(
    join(bin, 'systemctl'),
    [
      '#!/bin/sh',
      `echo "$*" >> ${calls}`,
      `case "$1" in show) cat ${pidfile} ;; reload) kill -HUP "$(cat ${pidfile})" ;; is-active) [ ! -e ${inactive} ] ;; esac`
    ].join('\n')
  )
  writeFileSync(join(bin, 'sudo'), '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
  chmodSync(join(bin, 'systemctl'), 0o755)
  chmodSync(join(bin, 'sudo'), 0o755)
  gunicorn = spawn(
    '/usr/bin/gunicorn',
    ['--chdir', base, '--pid', pidfile, '--bind', '127.0.0.1:0', '--workers', '2', 'app:app'],
    { stdio: 'ignore' }
  )
  for (let i = 0; i < 100 && workers(String(gunicorn.pid)).length < 2; i++)
    await new Promise(r => setTimeout(r, 100))
})

afterAll(async () => {
  if (gunicorn?.pid && gunicorn.exitCode === null) {
    const exited = new Promise(r => gunicorn!.once('exit', r))
    gunicorn.kill('SIGTERM')
    await exited
  }
  rmSync(base, { recursive: true, force: true })
})

const run = (script: string) =>
  spawnSync('/bin/sh', ['-c', script], {
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    encoding: 'utf8'
  })

test('same virtualenv: systemctl reload, and the step ends when the new workers have loaded the app', () => {
  const master = readFileSync(pidfile, 'utf8').trim()
  const before = workers(master)
  expect(before).toHaveLength(2)
  writeFileSync(calls, '')
  writeFileSync(join(l.root, '.gunicorn-master'), `${master} ${join(l.venvs, 'k1')}\n`)
  const r = run(cmd.reloadService(l, 'mysite', 'r1'))
  expect(r.stderr).toBe('')
  expect(r.stdout).toContain(`mysite reloaded: new workers of ${master} ready`)
  expect(readFileSync(calls, 'utf8')).toBe(
    'show -p MainPID --value mysite\nis-active -q mysite\nreload mysite\n'
  )
  const after = workers(master)
  expect(after).toHaveLength(2)
  expect(after.filter(w => before.includes(w))).toEqual([])
})

test('the master runs another virtualenv than the release links: systemctl restart, not reload', () => {
  const master = readFileSync(pidfile, 'utf8').trim()
  writeFileSync(calls, '')
  writeFileSync(join(l.root, '.gunicorn-master'), `${master} ${join(l.venvs, 'k0')}\n`)
  const r = run(cmd.reloadService(l, 'mysite', 'r1'))
  expect(r.stdout).toContain(`mysite runs ${join(l.venvs, 'k0')}; the release needs ${join(l.venvs, 'k1')}`)
  expect(readFileSync(calls, 'utf8')).toMatch(
    /^show -p MainPID --value mysite\nis-active -q mysite\nrestart mysite\n/
  )
})

test('a unit that is not active (first deploy after setup): systemctl start, then its workers are waited for', () => {
  const master = readFileSync(pidfile, 'utf8').trim()
  writeFileSync(calls, '')
  writeFileSync(inactive, '')
  try {
    const r = run(cmd.reloadService(l, 'mysite', 'r1'))
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('mysite is not active: systemctl start')
    expect(r.stdout).toContain(`mysite started: new workers of ${master} ready`)
    expect(readFileSync(calls, 'utf8')).toBe(
      'show -p MainPID --value mysite\nis-active -q mysite\nstart mysite\nshow -p MainPID --value mysite\n'
    )
  } finally {
    rmSync(inactive, { force: true })
  }
})

test('the probe before the switch records which virtualenv the master runs, from /proc', () => {
  const master = readFileSync(pidfile, 'utf8').trim()
  const r = run(cmd.probeGunicorn(l, { service: 'mysite' }))
  expect(r.status).toBe(0)
  // Debian's /usr/bin/gunicorn runs /usr/bin/python3: "the virtualenv" of that master is /usr
  expect(readFileSync(join(l.root, '.gunicorn-master'), 'utf8')).toBe(`${master} /usr\n`)
})
