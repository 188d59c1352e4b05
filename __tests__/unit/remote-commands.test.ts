/**
 * The remote commands are run here with the real /bin/sh against a temporary deploy path: what they do is
 * asserted on the file system, and hostile values must stay inert.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { q, shellLine } from '../../src/remote/quote.js'
import { batch } from '../../src/deploy/batch.js'
import type { Step } from '../../src/deploy/plan.js'

const base = mkdtempSync(join(tmpdir(), 'dd-cmd-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

function sh(script: string, input?: Buffer | string): { code: number; out: string; err: string } {
  const r = spawnSync('/bin/sh', ['-c', script], { input, cwd: base })
  return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() }
}

const HOSTILE = [
  `it's`,
  'a b',
  '$(touch PWNED)',
  '`touch PWNED`',
  '"; touch PWNED; "',
  'x\ny',
  '*',
  '-rf',
  '~root',
  '$HOME',
  '\\'
]

describe('q', () => {
  it.each(HOSTILE)('keeps %j one inert word', value => {
    const r = sh(`printf '%s' ${q(value)}`)
    expect(r.out).toBe(value)
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })
  it('survives the /bin/sh -c wrapper too', () => {
    for (const value of HOSTILE) {
      const line = shellLine(`printf '%s' ${q(value)}`)
      expect(execFileSync('/bin/sh', ['-c', line], { cwd: base }).toString()).toBe(value)
    }
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })
  it('refuses NUL', () => expect(() => q('a\0b')).toThrow(/NUL/))
  it('keeps NAME=value a command word, not a variable assignment, as the first word', () => {
    // unquoted, `PWNED=1 touch x` would run touch with PWNED in its environment: quoted, sh looks for a
    // command literally named `PWNED=1` and fails.
    expect(q('PWNED=1')).toBe(`'PWNED=1'`)
    const r = sh(`${q('PWNED=1')} touch PWNED`)
    expect(r.code).toBe(127)
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
    expect(sh(`printf '%s' ${q('a=b')} ${q('--opt=v')}`).out).toBe('a=b--opt=v')
  })
})

describe('release layout on a hostile deploy path', () => {
  const root = join(base, `deploy $(touch PWNED) it's`)
  const l = cmd.layout(root)
  const tarball = (files: Record<string, string>): Buffer => {
    const src = mkdtempSync(join(base, 'src-'))
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(src, name, '..'), { recursive: true })
      writeFileSync(join(src, name), content)
    }
    return execFileSync('tar', ['-czf', '-', '-C', src, '.'])
  }

  it('prepares, unpacks, links shared paths, switches and reads state', () => {
    expect(sh(cmd.prepare(l, 'v1')).code).toBe(0)
    const up = sh(
      cmd.unpack(l, 'v1', 'abc123'),
      tarball({ 'manage.py': 'x', 'media/logo.png': 'img', 'static/a.css': 'a' })
    )
    expect(up).toMatchObject({ code: 0 })
    expect(readFileSync(join(l.releases, 'v1/REVISION'), 'utf8')).toBe('abc123\n')
    expect(lstatSync(join(l.releases, 'v1/manage.py')).mode & 0o044).toBe(0o044)

    const shared = sh(cmd.linkShared(l, 'v1', ['.env', 'media', 'odd $(touch PWNED)']))
    expect(shared.code).toBe(0)
    expect(shared.out).toContain(`${cmd.WARN} ${l.shared}/.env did not exist`)
    expect(readlinkSync(join(l.releases, 'v1/.env'))).toBe(`${l.shared}/.env`)
    expect(lstatSync(join(l.shared, '.env')).mode & 0o777).toBe(0o600)
    // a shared folder missing on the server is seeded from the release's own copy
    expect(readFileSync(join(l.shared, 'media/logo.png'), 'utf8')).toBe('img')
    expect(lstatSync(join(l.shared, 'odd $(touch PWNED)')).isDirectory()).toBe(true)

    expect(sh(cmd.switchTo(l, 'v1')).code).toBe(0)
    expect(readlinkSync(l.current)).toBe('releases/v1')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out)).toEqual({
      current: 'v1',
      currentLink: 'releases/v1',
      releases: ['v1']
    })
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('refuses to prepare over the live release', () => {
    const r = sh(cmd.prepare(l, 'v1'))
    expect(r.code).toBe(65)
    expect(r.err).toContain('release v1 is the live release')
    expect(existsSync(join(l.releases, 'v1/manage.py'))).toBe(true)
  })

  it('switches atomically and lists releases in upload order', () => {
    for (const r of ['v2', 'v10']) {
      sh(cmd.prepare(l, r))
      sh(cmd.unpack(l, r, r), tarball({ 'manage.py': r }))
    }
    expect(sh(cmd.switchTo(l, 'v10')).code).toBe(0)
    expect(readlinkSync(l.current)).toBe('releases/v10')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out)).toEqual({
      current: 'v10',
      currentLink: 'releases/v10',
      releases: ['v1', 'v2', 'v10']
    })
    expect(sh(cmd.removeCurrent(l)).code).toBe(0)
    expect(existsSync(l.current)).toBe(false)
    sh(cmd.switchTo(l, 'v10'))
  })

  it('cleans up old releases and unused virtualenvs', () => {
    mkdirSync(join(l.venvs, 'old'), { recursive: true })
    mkdirSync(join(l.venvs, 'used'), { recursive: true })
    execFileSync('ln', ['-s', join(l.venvs, 'used'), join(l.releases, 'v10/.venv')])
    expect(sh(cmd.cleanup(l, ['v2', 'v10'], ['v1'])).code).toBe(0)
    expect(existsSync(join(l.releases, 'v1'))).toBe(false)
    expect(existsSync(join(l.releases, 'v2'))).toBe(true)
    expect(existsSync(join(l.venvs, 'used'))).toBe(true)
    expect(existsSync(join(l.venvs, 'old'))).toBe(false)
  })

  it('runs the user command in current and fails with its exit code', () => {
    expect(sh(cmd.userCommand(l.current, 'cat manage.py')).out).toBe('v10')
    expect(sh(cmd.userCommand(l.current, 'exit 3')).code).toBe(3)
  })

  it('holds the lock until stdin closes, and a second holder times out naming the first', () => {
    const holder = join(base, 'holder.sh')
    writeFileSync(holder, cmd.holdLock(l, 5, 'run 1 (release v3)', 't1'))
    // first holder: keep stdin open with a sleeping writer
    const first = spawnSync('/bin/sh', [
      '-c',
      `(sleep 3) | /bin/sh ${q(holder)} & sleep 0.5; /bin/sh -c ${q(cmd.holdLock(l, 1, 'run 2', 't2'))} </dev/null; echo "second=$?"; wait`
    ])
    const out = first.stdout.toString() + first.stderr.toString()
    expect(out).toContain('locked')
    expect(out).toContain('still held after 1 s by: run 1 (release v3)')
    expect(out).toContain('second=75')
    // once the first holder's stdin closed, the lock is free again
    const again = sh(cmd.holdLock(l, 1, 'run 3', 't3'), '')
    expect(again.code).toBe(0)
    // Only `locked`, after the stages it went through (they name what hung, should one hang).
    expect(again.out).toBe(
      ['mkdir', 'open', 'flock', 'take'].map(x => cmd.LOCK_STAGE + x).join('\n') + '\nlocked\n'
    )
  })
})

describe('commands are pure strings', () => {
  const l = cmd.layout('/srv/app')
  it('build the venv from requirements with quoted pip args', () => {
    const s = cmd.venv(l, 'v1', {
      key: 'k1',
      python: 'python3',
      venvOptions: ['--system-site-packages'],
      pipArgs: ['--find-links', 'wheels dir'],
      hasRequirements: true
    })
    expect(s).toContain(`python3 -m venv --system-site-packages /srv/app/venvs/k1`)
    expect(s).toContain(
      `/srv/app/venvs/k1/bin/python -m pip install --disable-pip-version-check --find-links 'wheels dir' -r requirements.txt`
    )
    expect(s).toContain('ln -s /srv/app/venvs/k1 /srv/app/releases/v1/.venv')
  })
  it('health check passes the URL as an argument, not code', () => {
    const s = cmd.healthCheck(l, 'v1', "http://127.0.0.1/'); import os; os.system('id", 5)
    expect(s).toContain(`'http://127.0.0.1/'\\''); import os; os.system('\\''id'`)
  })
})

describe('a batch of steps', () => {
  const l = cmd.layout(join(base, 'batch'))
  const step = (name: string, script: string): Step => ({ name, script })
  it('reports each step by its marker and stops at the first failure, with its exit code', () => {
    const b = batch(
      [step('one', 'echo a'), step('two', 'echo b; exit 7'), step('three', 'touch THREE')],
      l,
      'MK:'
    )
    expect(b.parts).toEqual(['one', 'two', 'three'])
    const r = sh(b.script)
    expect(r.code).toBe(7)
    expect(r.out).toBe('a\nMK: one 0\nb\nMK: two 7\n')
    expect(existsSync(join(base, 'THREE'))).toBe(false)
  })
  it('gives stdin only to the step that reads the archive', () => {
    const b = batch([step('first', 'cat'), { ...step('upload', 'cat'), stdin: 'archive' }], l, 'MK:')
    expect(b.stdin).toBe('archive')
    // output without a final new line runs into the marker: the runner finds the marker inside the line
    expect(sh(b.script, 'DATA').out).toBe('MK: first 0\nDATAMK: upload 0\n')
  })
})

describe('a release name deployed again is built beside the old one (issue 15)', () => {
  const l = cmd.layout(join(base, `again $(touch PWNED) it's`))
  const tarball = (files: Record<string, string>): Buffer => {
    const src = mkdtempSync(join(base, 'src-'))
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(src, name, '..'), { recursive: true })
      writeFileSync(join(src, name), content)
    }
    return execFileSync('tar', ['-czf', '-', '-C', src, '.'])
  }
  const build = cmd.buildName('v1')
  const file = (release: string, name = 'manage.py'): string =>
    readFileSync(join(l.releases, release, name), 'utf8')

  it('builds in a directory no inspect lists; the old release stays whole until place', () => {
    for (const r of ['v1', 'v2']) {
      expect(sh(cmd.prepare(l, r)).code).toBe(0)
      expect(sh(cmd.unpack(l, r, r), tarball({ 'manage.py': `${r} old` })).code).toBe(0)
    }
    expect(sh(cmd.switchTo(l, 'v2')).code).toBe(0)
    expect(sh(cmd.prepare(l, 'v1', build)).code).toBe(0)
    expect(sh(cmd.unpack(l, 'v1', 'new', undefined, build), tarball({ 'manage.py': 'v1 new' })).code).toBe(0)
    expect(file('v1')).toBe('v1 old')
    expect(file(build)).toBe('v1 new')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out).releases).toEqual(['v1', 'v2'])

    const placed = sh(cmd.place(l, 'v1'))
    expect(placed.code).toBe(0)
    expect(file('v1')).toBe('v1 new')
    expect(file('v1', 'REVISION')).toBe('new\n')
    expect(existsSync(join(l.releases, build))).toBe(false)
    expect(readlinkSync(l.current)).toBe('releases/v2')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('a failed publish puts the old one back; never under a live link', () => {
    expect(sh(cmd.switchTo(l, 'v1')).code).toBe(0)
    expect(sh(cmd.restoreReplaced(l, 'v1')).code).toBe(0)
    expect(file('v1')).toBe('v1 new')
    expect(sh(cmd.switchTo(l, 'v2')).code).toBe(0)
    expect(sh(cmd.restoreReplaced(l, 'v1')).code).toBe(0)
    expect(file('v1')).toBe('v1 old')
    expect(cmd.parseInspect(sh(cmd.inspect(l)).out).releases).toEqual(['v1', 'v2'])
  })

  it('the cleanup removes what builds and replacements left', () => {
    expect(sh(cmd.prepare(l, 'v1', build)).code).toBe(0)
    expect(sh(cmd.unpack(l, 'v1', 'new', undefined, build), tarball({ 'manage.py': 'v1 new' })).code).toBe(0)
    expect(sh(cmd.place(l, 'v1')).code).toBe(0)
    mkdirSync(join(l.releases, cmd.buildName('v9')))
    expect(sh(cmd.cleanup(l, ['v1', 'v2'], [])).code).toBe(0)
    expect(readdirSync(l.releases).sort()).toEqual(['v1', 'v2'])
  })

  it('release files are read-only; a shared .env copied from the release is 0600, another file writable', () => {
    expect(sh(cmd.prepare(l, 'v3')).code).toBe(0)
    const files = { 'manage.py': 'x', '.env': 'SECRET=1\n', 'conf/site.json': '{}', 'run.sh': 'echo' }
    expect(sh(cmd.unpack(l, 'v3', 'abc'), tarball(files)).code).toBe(0)
    for (const f of ['manage.py', '.env', 'conf/site.json', 'REVISION'])
      expect(lstatSync(join(l.releases, 'v3', f)).mode & 0o777).toBe(0o444)
    expect(lstatSync(join(l.releases, 'v3', 'conf')).mode & 0o777).toBe(0o755)
    expect(sh(cmd.linkShared(l, 'v3', ['.env', 'conf/site.json'])).code).toBe(0)
    const env = lstatSync(join(l.shared, '.env'))
    expect([env.mode & 0o777, env.uid]).toEqual([0o600, process.getuid?.()])
    expect(readFileSync(join(l.shared, '.env'), 'utf8')).toBe('SECRET=1\n')
    expect(lstatSync(join(l.shared, 'conf/site.json')).mode & 0o777).toBe(0o644)
  })
})

describe('a step with input', () => {
  const l = cmd.layout(join(base, 'batch-input'))
  it('gets stdin; the others of its batch do not', () => {
    const b = batch(
      [
        { name: 'first', script: 'cat' },
        { name: 'health', script: 'cat', input: 'SECRET\n' }
      ],
      l,
      'MK:'
    )
    expect(b.input).toBe('SECRET\n')
    expect(b.script).not.toContain('SECRET')
    expect(sh(b.script, b.input).out).toBe('MK: first 0\nSECRET\nMK: health 0\n')
  })
  it('refuses two readers of stdin in one batch', () => {
    const steps: Step[] = [
      { name: 'upload', script: 'cat', stdin: 'archive' },
      { name: 'health', script: 'cat', input: 'x' }
    ]
    expect(() => batch(steps, l, 'MK:')).toThrow(/more than one reads stdin/)
  })
})

describe('readRevision (the commit a rollback records)', () => {
  test("prints the release's REVISION; a hostile deploy path and release name stay inert", () => {
    const root = join(base, "rev $(touch pwned) 'x'")
    const release = 'r1;$(touch pwned2)'
    mkdirSync(join(root, 'releases', release), { recursive: true })
    writeFileSync(join(root, 'releases', release, 'REVISION'), `${'a'.repeat(40)}\n`)
    const r = sh(cmd.readRevision(cmd.layout(root), release))
    expect(r).toEqual({ code: 0, out: `${'a'.repeat(40)}\n`, err: '' })
    expect(existsSync(join(base, 'pwned')) || existsSync(join(base, 'pwned2'))).toBe(false)
    expect(sh(cmd.readRevision(cmd.layout(root), 'gone')).code).not.toBe(0)
  })
})

describe('static files outlive their release (real /bin/sh and python3)', () => {
  // A hostile deploy path and file names: nothing may reach the shell unquoted.
  const l = cmd.layout(join(mkdtempSync(join(base, 'static-')), `app $(touch PWNED) it's`))
  /** A release whose STATIC_ROOT (`staticfiles`, as recorded by the step after collectstatic) holds `files`. */
  function release(name: string, files: Record<string, string>): void {
    const dir = join(l.releases, name)
    mkdirSync(join(dir, '.venv/bin'), { recursive: true })
    execFileSync('ln', ['-sf', '/usr/bin/python3', join(dir, '.venv/bin/python')])
    writeFileSync(join(dir, '.django-deploy-static'), 'staticfiles')
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, 'staticfiles', path, '..'), { recursive: true })
      writeFileSync(join(dir, 'staticfiles', path), text)
    }
  }
  const read = (path: string): string | undefined =>
    existsSync(join(l.static, path)) ? readFileSync(join(l.static, path), 'utf8') : undefined

  it('the live release takes over the unhashed names; pruning keeps a file while any kept release has it', () => {
    release('r1', { 'css/styles.css': 'r1', 'css/styles.aaa.css': 'r1', 'only-r1/$(touch PWNED).js': 'r1' })
    release('r2', { 'css/styles.css': 'r2', 'css/styles.bbb.css': 'r2', "it's.css": 'r2' })
    release('r3', { 'css/styles.css': 'r3', 'css/styles.aaa.css': 'r1' })
    for (const r of ['r1', 'r2', 'r3']) expect(sh(cmd.liveStatic(l, r))).toMatchObject({ code: 0, err: '' })
    expect(read('css/styles.css')).toBe('r3')
    expect(read('css/styles.bbb.css')).toBe('r2')
    expect(read('only-r1/$(touch PWNED).js')).toBe('r1')
    // r1 removed: its hashed CSS stays (r3 has it too); what only r1 had goes, with its empty folder.
    const pruned = sh(cmd.pruneStatic(l, 'r3', ['r2', 'r3']))
    expect(pruned).toMatchObject({ code: 0, err: '' })
    expect(pruned.out).toContain('1 static file(s) no kept release has removed')
    expect(read('css/styles.aaa.css')).toBe('r1')
    expect(existsSync(join(l.static, 'only-r1'))).toBe(false)
    expect(read("it's.css")).toBe('r2')
    sh(cmd.pruneStatic(l, 'r3', ['r3']))
    expect(read('css/styles.bbb.css')).toBeUndefined()
    expect(read('css/styles.css')).toBe('r3')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })

  it('a static folder someone else filled (STATIC_ROOT outside the releases) is never written to nor pruned', () => {
    const other = cmd.layout(join(base, 'static-foreign'))
    mkdirSync(other.static, { recursive: true })
    writeFileSync(join(other.static, 'theirs.css'), 'theirs')
    const dir = join(other.releases, 'r1')
    mkdirSync(join(dir, '.venv/bin'), { recursive: true })
    mkdirSync(join(dir, 'staticfiles'))
    execFileSync('ln', ['-sf', '/usr/bin/python3', join(dir, '.venv/bin/python')])
    writeFileSync(join(dir, '.django-deploy-static'), 'staticfiles')
    writeFileSync(join(dir, 'staticfiles/ours.css'), 'ours')
    const linked = sh(cmd.liveStatic(other, 'r1'))
    expect(linked.code).toBe(0)
    expect(linked.out).toContain(`${cmd.WARN} ${other.static} holds files this action did not put there`)
    expect(sh(cmd.pruneStatic(other, 'r1', ['r1'])).code).toBe(0)
    expect(execFileSync('ls', ['-A', other.static]).toString()).toBe('theirs.css\n')
  })
  it('a release without a record (deployed before) links nothing; no shared folder: pruning does nothing', () => {
    const other = cmd.layout(join(base, 'static-none'))
    mkdirSync(join(other.releases, 'old'), { recursive: true })
    expect(sh(cmd.liveStatic(other, 'old'))).toMatchObject({ code: 0, out: '', err: '' })
    expect(sh(cmd.pruneStatic(other, 'old', ['old']))).toMatchObject({ code: 0, out: '', err: '' })
    expect(existsSync(other.static)).toBe(false)
  })
})

describe("the rollback schema check (real /bin/sh; the live release's Python a stub exiting as told)", () => {
  const l = cmd.layout(join(base, "schema $(touch PWNED) it's"))
  const python = join(l.releases, 'v2/.venv/bin/python')
  beforeAll(() => {
    mkdirSync(join(l.releases, 'v2/.venv/bin'), { recursive: true })
    mkdirSync(join(l.releases, 'v1'), { recursive: true })
  })
  const check = (code: number): { code: number; out: string; err: string } => {
    writeFileSync(python, `#!/bin/sh\necho "checked $3"\nexit ${code}\n`, { mode: 0o755 })
    return sh(cmd.rollbackSchema(l, 'v2', 'v1', false))
  }
  it('passes when the check passes, and refuses (its exit status) when it refuses', () => {
    expect(check(0)).toMatchObject({ code: 0, out: expect.stringContaining('checked rollback-schema-done:') })
    expect(check(cmd.ROLLBACK_REFUSED).code).toBe(cmd.ROLLBACK_REFUSED)
  })
  it('a live release whose Django cannot tell does not stop the rollback: a warning says the check was skipped', () => {
    const r = check(1)
    expect(r.code).toBe(0)
    expect(r.out).toMatch(
      new RegExp(
        `^${cmd.WARN} the live release's Django could not list the applied migrations the target lacks`,
        'm'
      )
    )
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
  })
})
