// The remote Python programs are Python files (src/remote/python/*.py), embedded into the bundle by
// scripts/embed-python.mjs: each one byte-compiles and passes pyflakes, the embedded text is what the files make,
// and the embedded text compiles too (it leaves out comment and blank lines).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PROGRAMS } from '../../src/remote/python/programs.js'

const dir = fileURLToPath(new URL('../../src/remote/python/', import.meta.url))
const embed = fileURLToPath(new URL('../../scripts/embed-python.mjs', import.meta.url))
const files = readdirSync(dir).filter(f => f.endsWith('.py'))
// The servers' Python (Debian's), not whichever python3 comes first on PATH.
const python = '/usr/bin/python3'

let tmp: string
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'dd-remote-python-'))
})
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

test('there are programs, and each is embedded under its name', () => {
  expect(files.length).toBeGreaterThan(5)
  expect(Object.keys(PROGRAMS).sort()).toEqual([...files].sort())
})

test.each(files)('%s byte-compiles', file => {
  execFileSync(python, ['-m', 'py_compile', join(dir, file)], {
    env: { ...process.env, PYTHONPYCACHEPREFIX: tmp }
  })
})

test('pyflakes finds nothing in any program', () => {
  // pyflakes3 comes with the Debian package of that name (scripts/setup.sh installs it).
  const out = execFileSync('pyflakes3', files, { cwd: dir, encoding: 'utf8' })
  expect(out).toBe('')
})

test('the embedded programs are what the .py files make (run `node scripts/embed-python.mjs` after an edit)', () => {
  execFileSync('node', [embed, '--check'])
})

test.each(Object.entries(PROGRAMS))('%s, as embedded, compiles', (name, text) => {
  const file = join(tmp, `${name}.py`)
  writeFileSync(file, text)
  execFileSync(python, ['-m', 'py_compile', file], { env: { ...process.env, PYTHONPYCACHEPREFIX: tmp } })
})
