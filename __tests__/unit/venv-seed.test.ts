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
