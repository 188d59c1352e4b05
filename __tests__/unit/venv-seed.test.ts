/**
 * The virtualenv step run with the real /bin/sh and the system's Python (`python3 -m venv`, real pip) against a
 * temporary deploy path: a changed requirements file makes a new virtualenv seeded with the previous one's pip
 * instead of paying ensurepip's bootstrap, and the result is the same virtualenv a normal build makes.
 */
import { jest } from '@jest/globals'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import * as cmd from '../../src/remote/commands.js'
import { depsOf } from '../../src/release/source.js'
import { buildWheel } from '../helpers/wheel.js'

jest.setTimeout(120_000)

const base = mkdtempSync(join(tmpdir(), 'dd-venv-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

function sh(script: string): { code: number; out: string; err: string } {
  const r = spawnSync('/bin/sh', ['-c', script], { cwd: base })
  return { code: r.status ?? -1, out: r.stdout.toString(), err: r.stderr.toString() }
}

function tree(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      out.push(relative(dir, p))
      if (e.isDirectory() && !e.isSymbolicLink()) walk(p)
    }
  }
  walk(dir)
  return out.sort()
}

const opts = (key: string, extra: Partial<cmd.VenvOptions> = {}): cmd.VenvOptions => ({
  key,
  python: '/usr/bin/python3',
  venvOptions: ['--system-site-packages'],
  pipArgs: [],
  hasRequirements: false,
  ...extra
})

/** A deploy path with one release `r1` live on a complete virtualenv `k1`, built the normal way. */
function server(root: string): cmd.Layout {
  const l = cmd.layout(root)
  for (const r of ['r1', 'r2', 'r3']) mkdirSync(join(l.releases, r), { recursive: true })
  mkdirSync(l.venvs, { recursive: true })
  const first = sh(cmd.venv(l, 'r1', opts('k1')))
  expect(first).toMatchObject({ code: 0 })
  expect(first.out).not.toMatch(/seeded/)
  symlinkSync('releases/r1', l.current)
  return l
}

describe('a changed requirements file on a server with a live virtualenv', () => {
  let l: cmd.Layout
  beforeAll(() => {
    l = server(join(base, 'srv'))
  })

  it('seeds the new virtualenv with the live one’s pip: same files, working pip and pip scripts', () => {
    const r = sh(cmd.venv(l, 'r2', opts('k2')))
    expect(r).toMatchObject({ code: 0, err: '' })
    expect(r.out).toContain(`virtualenv seeded with pip from ${l.venvs}/k1 (no pip bootstrap)`)
    // exactly what ensurepip makes, down to the compiled files and the three pip scripts
    expect(tree(join(l.venvs, 'k2'))).toEqual(tree(join(l.venvs, 'k1')))
    const pip = join(l.venvs, 'k2/bin/pip')
    expect(readFileSync(pip, 'utf8').split('\n')[0]).toBe(`#!${l.venvs}/k2/bin/python3`)
    const v = spawnSync(pip, ['--version'])
    expect(v.status).toBe(0)
    expect(v.stdout.toString()).toContain(`from ${l.venvs}/k2/lib/`)
    expect(existsSync(join(l.releases, 'r2/.venv/bin/python'))).toBe(true)
  })

  it('installs the new requirements with the seeded pip', () => {
    const dir = join(l.releases, 'r3')
    const wheel = buildWheel(dir, 'seeddep', '1.0', 'X = 42\n')
    sh(`printf '%s\\n' --no-index '--find-links .' seeddep==1.0 > ${dir}/requirements.txt`)
    const r = sh(cmd.venv(l, 'r3', opts('k3', { hasRequirements: true })))
    expect(r.code).toBe(0)
    expect(r.out).toContain('seeded with pip from')
    expect(r.out).toMatch(/Successfully installed seeddep-1\.0/)
    const x = spawnSync(join(dir, '.venv/bin/python'), ['-c', 'import seeddep; print(seeddep.X)'])
    expect(x.stdout.toString()).toBe('42\n')
    expect(wheel).toMatch(/seeddep/)
  })

  it('unchanged requirements run no pip at all', () => {
    const r = sh(cmd.venv(l, 'r2', opts('k2', { pipArgs: ['--this-would-fail'], hasRequirements: true })))
    expect(r).toMatchObject({ code: 0, err: '' })
    expect(r.out).toBe('reusing virtualenv k2 (requirements unchanged)\n')
  })

  it('builds the normal way when the donor is another Python version, or venv-options ask for pip’s own setup', () => {
    // a live virtualenv of another Python (its site-packages is lib/python3.0/…): not a donor
    const other = join(base, 'other')
    const lo = cmd.layout(other)
    mkdirSync(join(lo.venvs, 'old/lib/python3.0/site-packages/pip'), { recursive: true })
    sh(
      `: > ${lo.venvs}/old/.django-deploy-complete; : > ${lo.venvs}/old/lib/python3.0/site-packages/pip/__init__.py`
    )
    mkdirSync(join(lo.releases, 'r1'), { recursive: true })
    const r = sh(cmd.venv(lo, 'r1', opts('k1')))
    expect(r.code).toBe(0)
    expect(r.out).not.toMatch(/seeded/)
    expect(spawnSync(join(lo.venvs, 'k1/bin/pip'), ['--version']).status).toBe(0)
    for (const o of ['--upgrade-deps', '--without-pip']) {
      const s = cmd.venv(l, 'r9', opts('k9', { venvOptions: [o] }))
      expect(s).not.toContain('seeded')
      expect(s).toContain(`/usr/bin/python3 -m venv ${o} ${l.venvs}/k9`)
    }
  })
})

describe('hostile deploy paths stay inert', () => {
  it('seeds through q(): no command runs from the path, pip works', () => {
    const root = join(base, `it's $(touch PWNED) \`touch PWNED\` "x"; touch PWNED`)
    const l = server(root)
    const r = sh(cmd.venv(l, 'r2', opts('k2')))
    expect(r.code).toBe(0)
    expect(r.out).toContain('seeded with pip from')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
    const v = spawnSync(join(l.venvs, 'k2/bin/python'), ['-m', 'pip', '--version'])
    expect(v.stdout.toString()).toContain(`from ${l.venvs}/k2/lib/`)
  })
})

describe('requirements that only add lines to the live virtualenv’s', () => {
  const deps = (...lines: string[]) => ({ basis: 'b1', lines: lines.map(r => `r ${r}`) })
  /** Files and contents of a directory tree (links by their target), to see that nothing in it changed. */
  const snapshot = (dir: string): string[] =>
    tree(dir).map(p => {
      const f = join(dir, p)
      const r = spawnSync('/bin/sh', [
        '-c',
        'if [ -L "$1" ]; then readlink "$1"; elif [ -f "$1" ]; then sha256sum < "$1"; fi',
        'x',
        f
      ])
      return `${p} ${r.stdout.toString().trim()}`
    })
  /** Root with releases r1..r3 whose requirements name wheels in ./wheels, r1 live on k1 (seeddep only). */
  function grown(root: string) {
    const l = cmd.layout(root)
    mkdirSync(l.venvs, { recursive: true })
    for (const r of ['r1', 'r2', 'r3']) {
      const dir = join(l.releases, r)
      mkdirSync(join(dir, 'wheels'), { recursive: true })
      buildWheel(join(dir, 'wheels'), 'seeddep', '1.0', 'X = 1\n')
      buildWheel(join(dir, 'wheels'), 'growdep', '1.0', 'Y = 2\n')
    }
    const req = (r: string, ...lines: string[]) =>
      sh(
        `printf '%s\\n' --no-index '--find-links wheels' ${lines.join(' ')} > ${q(join(l.releases, r, 'requirements.txt'))}`
      )
    req('r1', 'seeddep==1.0')
    const first = sh(cmd.venv(l, 'r1', opts('k1', { hasRequirements: true, deps: deps('seeddep==1.0') })))
    expect(first.code).toBe(0)
    expect(first.out).not.toMatch(/copied/)
    symlinkSync('releases/r1', l.current)
    return { l, req }
  }
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

  it('copies the live virtualenv and pip installs only what is new; the live one is left as it was', () => {
    const { l, req } = grown(join(base, 'grow'))
    const before = snapshot(join(l.venvs, 'k1'))
    req('r2', 'seeddep==1.0', 'growdep==1.0')
    const r = sh(
      cmd.venv(l, 'r2', opts('k2', { hasRequirements: true, deps: deps('seeddep==1.0', 'growdep==1.0') }))
    )
    expect(r.code).toBe(0)
    expect(r.out).toContain(`virtualenv copied from the live one (${l.venvs}/k1)`)
    expect(r.out).toMatch(/Successfully installed growdep-1\.0/)
    expect(r.out).not.toMatch(/installed.*seeddep/)
    const py = (v: string, code: string) => spawnSync(join(l.venvs, v, 'bin/python'), ['-c', code])
    expect(
      py('k2', 'import seeddep, growdep, sys; print(seeddep.X, growdep.Y, sys.prefix)').stdout.toString()
    ).toBe(`1 2 ${l.venvs}/k2\n`)
    // its scripts and pyvenv.cfg name the copy, and pip runs from it
    expect(readFileSync(join(l.venvs, 'k2/bin/pip'), 'utf8').split('\n')[0]).toBe(
      `#!${l.venvs}/k2/bin/python3`
    )
    expect(readFileSync(join(l.venvs, 'k2/bin/activate'), 'utf8')).not.toContain(`${l.venvs}/k1`)
    expect(readFileSync(join(l.venvs, 'k2/pyvenv.cfg'), 'utf8')).toContain(`${l.venvs}/k2`)
    expect(spawnSync(join(l.venvs, 'k2/bin/pip'), ['--version']).stdout.toString()).toContain(
      `from ${l.venvs}/k2/lib/`
    )
    // the live virtualenv: byte for byte what it was, without the new dependency
    expect(snapshot(join(l.venvs, 'k1'))).toEqual(before)
    expect(py('k1', 'import growdep').status).not.toBe(0)
  })

  it('builds a clean virtualenv when a line went away or the basis changed', () => {
    const { l, req } = grown(join(base, 'shrink'))
    req('r2', 'growdep==1.0')
    const removed = sh(cmd.venv(l, 'r2', opts('k2', { hasRequirements: true, deps: deps('growdep==1.0') })))
    expect(removed.code).toBe(0)
    expect(removed.out).not.toMatch(/copied/)
    expect(removed.out).toContain('seeded with pip from')
    expect(spawnSync(join(l.venvs, 'k2/bin/python'), ['-c', 'import seeddep']).status).not.toBe(0)
    req('r3', 'seeddep==1.0', 'growdep==1.0')
    const other = { basis: 'b2', lines: ['r seeddep==1.0', 'r growdep==1.0'] }
    const basis = sh(cmd.venv(l, 'r3', opts('k3', { hasRequirements: true, deps: other })))
    expect(basis.code).toBe(0)
    expect(basis.out).not.toMatch(/copied/)
  })

  it('builds a new virtualenv when the copy fails (hard links refused)', () => {
    const { l, req } = grown(join(base, 'refused'))
    const bin = join(base, 'refused-bin')
    mkdirSync(bin)
    // A cp that refuses -al, as the kernel does for a file someone else owns (fs.protected_hardlinks).
    sh(
      `printf '%s\\n' '#!/bin/sh' 'case "$1" in -al) echo "cp: cannot create hard link" >&2; exit 1;; esac' 'exec /bin/cp "$@"' > ${q(join(bin, 'cp'))}; chmod 755 ${q(join(bin, 'cp'))}`
    )
    req('r2', 'seeddep==1.0', 'growdep==1.0')
    const script = cmd.venv(
      l,
      'r2',
      opts('k2', { hasRequirements: true, deps: deps('seeddep==1.0', 'growdep==1.0') })
    )
    const r = spawnSync('/bin/sh', ['-c', script], {
      cwd: base,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }
    })
    expect(r.status).toBe(0)
    expect(r.stdout.toString()).toContain(
      `could not copy the live virtualenv (${l.venvs}/k1): building a new one`
    )
    expect(r.stdout.toString()).toContain('seeded with pip from')
    const v = spawnSync(join(l.venvs, 'k2/bin/python'), [
      '-c',
      'import seeddep, growdep, sys; print(sys.prefix)'
    ])
    expect(v.stdout.toString()).toBe(`${l.venvs}/k2\n`)
  })

  it('copies through q(): a hostile deploy path runs nothing', () => {
    const { l, req } = grown(join(base, `grow it's $(touch PWNED) \`touch PWNED\` "x"; touch PWNED`))
    req('r2', 'seeddep==1.0', 'growdep==1.0')
    const r = sh(
      cmd.venv(l, 'r2', opts('k2', { hasRequirements: true, deps: deps('seeddep==1.0', 'growdep==1.0') }))
    )
    expect(r.code).toBe(0)
    expect(r.out).toContain('virtualenv copied from the live one')
    expect(existsSync(join(base, 'PWNED'))).toBe(false)
    const v = spawnSync(join(l.venvs, 'k2/bin/python'), ['-c', 'import growdep, sys; print(sys.prefix)'])
    expect(v.stdout.toString()).toBe(`${l.venvs}/k2\n`)
  })
})

describe('depsOf: what a virtualenv is made of, for growing a copy', () => {
  const venv = { python: '/usr/bin/python3', options: ['--system-site-packages'], pipArgs: [] }
  const local = '100644 blob aaaa\tvendor/a-1.0-py3-none-any.whl\n'
  it('keeps requirement lines and the named files as lines, option lines and settings in the basis', () => {
    const d = depsOf(
      venv,
      '# pinned\n--no-index\n--find-links vendor\nDjango==4.2.1  # LTS\n\na==1.0\n',
      local
    )!
    expect(d.lines).toEqual([
      'r Django==4.2.1',
      'r a==1.0',
      'l 100644 blob aaaa\tvendor/a-1.0-py3-none-any.whl'
    ])
    expect(depsOf(venv, '--no-index\n--find-links vendor\nDjango==4.2.1\na==1.0\nb==2\n', local)!.basis).toBe(
      d.basis
    )
    expect(depsOf(venv, '--find-links vendor\nDjango==4.2.1\n', local)!.basis).not.toBe(d.basis)
    expect(
      depsOf({ ...venv, pipArgs: ['--pre'] }, '--no-index\n--find-links vendor\n', local)!.basis
    ).not.toBe(d.basis)
  })
  it('joins continued lines: hashes belong to their requirement', () => {
    const d = depsOf(
      venv,
      'django==4.2.1 \\\n    --hash=sha256:abc \\\n    --hash=sha256:def\nb==2 ; python_version < "3.12"\n',
      ''
    )!
    expect(d.lines).toEqual([
      'r django==4.2.1 --hash=sha256:abc --hash=sha256:def',
      'r b==2 ; python_version < "3.12"'
    ])
  })
  it('none unless every requirement is an exact pin (looser lines, paths and editables come out otherwise)', () => {
    for (const r of [
      '-e .',
      '--editable ./pkg',
      './vendor/pkg',
      '/opt/pkg',
      'file:./x',
      'pkg @ https://h/p.whl'
    ])
      expect(depsOf(venv, `a==1\n${r}\n`, '')).toBeUndefined()
  })
})
