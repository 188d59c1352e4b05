/**
 * The virtualenv key covers every requirement and constraint file pip reads (issue 15, item 2): the closure of
 * `-r`/`-c` includes in all their spellings, resolved as pip does, and the key of a real git checkout changes
 * when a pin two levels down does.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { depsOf, describeRelease } from '../../src/release/source.js'
import { includesOf, logicalLines, pathWords, requirementClosure } from '../../src/release/requirements.js'

const reader =
  (files: Record<string, string>) =>
  async (path: string): Promise<string | undefined> =>
    files[path]
const paths = async (files: Record<string, string>, args: string[] = []): Promise<string[]> =>
  (await requirementClosure(reader(files), 'requirements.txt', args)).files.map(
    f => `${f.constraint ? 'c' : 'r'} ${f.path}`
  )

describe('requirements files as pip reads them', () => {
  test('logical lines: continuations joined, comments and blank lines dropped', () => {
    expect(
      logicalLines('# top\n-r base.txt  # shared\n\ndjango==4.2 \\\n  --hash=sha256:ab\n  #x \\\nb==1\n')
    ).toEqual(['-r base.txt', 'django==4.2 --hash=sha256:ab', 'b==1'])
    expect(logicalLines('a==1#not-a-comment\n')).toEqual(['a==1#not-a-comment'])
  })

  test('every spelling of -r and -c, long options by unambiguous prefix', () => {
    const cases: [string, { path: string; constraint: boolean }[]][] = [
      ['-r a.txt', [{ path: 'a.txt', constraint: false }]],
      ['-ra.txt', [{ path: 'a.txt', constraint: false }]],
      ['--requirement=a.txt', [{ path: 'a.txt', constraint: false }]],
      ['--requirement a.txt', [{ path: 'a.txt', constraint: false }]],
      ['--requirem=a.txt', [{ path: 'a.txt', constraint: false }]],
      ['-c c.txt', [{ path: 'c.txt', constraint: true }]],
      ['-cc.txt', [{ path: 'c.txt', constraint: true }]],
      ['--constraint=c.txt', [{ path: 'c.txt', constraint: true }]],
      ['--const c.txt', [{ path: 'c.txt', constraint: true }]],
      ['--require-hashes', []],
      ['--requi=a.txt', []], // ambiguous (--requirement, --require-hashes): pip refuses it too
      ['django==4.2', []],
      ['--find-links vendor', []]
    ]
    for (const [line, want] of cases) expect([line, includesOf(line)]).toEqual([line, want])
  })

  test('nested includes are resolved against the including file, at any depth, each file once', async () => {
    const files = {
      'requirements.txt': '-r requirements/production.txt\n-c constraints.txt\n',
      'requirements/production.txt': '-r base.txt\ngunicorn==23.0\n',
      'requirements/base.txt': '--requirement=../common/shared.txt\nDjango==4.2.1\n',
      'common/shared.txt': '-rmore.txt\n',
      'common/more.txt': 'pkg==1.0\n-r ../requirements/base.txt\n',
      'constraints.txt': 'idna==3.4\n'
    }
    // base.txt is met twice (the second time from more.txt): a cycle, which pip would follow forever
    await expect(paths(files)).rejects.toThrow(
      'requirements include themselves: requirements.txt → requirements/production.txt → requirements/base.txt → common/shared.txt → common/more.txt → requirements/base.txt'
    )
    files['common/more.txt'] = 'pkg==1.0\n'
    expect(
      await paths({ ...files, 'requirements.txt': files['requirements.txt'] + '-r common/more.txt\n' })
    ).toEqual([
      'r requirements.txt',
      'r requirements/production.txt',
      'r requirements/base.txt',
      'r common/shared.txt',
      'r common/more.txt',
      'c constraints.txt'
    ])
  })

  test('pip-args -r/-c join the closure; a missing file is an error naming it and its includer', async () => {
    const files = { 'requirements.txt': '-r base.txt\n', 'base.txt': 'a==1\n', 'c.txt': 'b==2\n' }
    expect(await paths(files, ['--no-index', '-c', 'c.txt'])).toEqual([
      'r requirements.txt',
      'r base.txt',
      'c c.txt'
    ])
    await expect(paths({ 'requirements.txt': '-r requirements/base.txt\n' })).rejects.toThrow(
      'requirements.txt includes requirements/base.txt, which is not a file git tracks in the release'
    )
    await expect(paths({ 'requirements.txt': 'a==1\n' }, ['-c=x.txt'])).rejects.toThrow(
      'x.txt is named by pip-args, which is not a file git tracks'
    )
  })

  test('an include outside the release is an error; URLs and absolute paths are marked external', async () => {
    await expect(paths({ 'requirements.txt': '-r ../../etc/reqs.txt\n' })).rejects.toThrow(
      'requirements.txt includes ../../etc/reqs.txt, which is outside the release'
    )
    const c = await requirementClosure(
      reader({
        'requirements.txt': '-r https://example.com/r.txt\n-c /etc/pip/c.txt\n-r a/../b.txt\n',
        'b.txt': ''
      }),
      'requirements.txt'
    )
    expect(c.external).toEqual(['https://example.com/r.txt', '/etc/pip/c.txt'])
    expect(c.files.map(f => f.path)).toEqual(['requirements.txt', 'b.txt'])
  })

  test('pathWords: requirement words and option values', () => {
    expect(pathWords('--find-links=wheels\n-fvendor\n-e ./pkg\n--no-index\nx==1\n')).toEqual([
      'wheels',
      'vendor',
      './pkg',
      'x==1'
    ])
  })

  test('depsOf sees nested pins as lines; constraints and external includes are not grown over', () => {
    const venv = { python: 'python3', options: [], pipArgs: [] }
    const closure = (base: string, constraints = 'idna==3.4\n') => ({
      files: [
        { path: 'requirements.txt', text: '-r requirements/base.txt\n-c c.txt\n', constraint: false },
        { path: 'requirements/base.txt', text: base, constraint: false },
        { path: 'c.txt', text: constraints, constraint: true }
      ],
      external: []
    })
    const d = depsOf(venv, closure('pkg==1.0\n'), '')!
    expect(d.lines).toEqual(['r pkg==1.0'])
    expect(depsOf(venv, closure('pkg==2.0\n'), '')!.basis).toBe(d.basis)
    expect(depsOf(venv, closure('pkg==1.0\n', 'idna==3.5\n'), '')!.basis).not.toBe(d.basis)
    expect(depsOf(venv, closure('pkg>=1.0\n'), '')).toBeUndefined()
    expect(depsOf(venv, { ...closure('pkg==1.0\n'), external: ['https://h/r.txt'] }, '')).toBeUndefined()
  })
})

describe('the virtualenv key of a real checkout (cookiecutter-django layout)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dd-reqs-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]).toString()
  const write = (path: string, text: string): void => {
    mkdirSync(dirname(join(dir, path)), { recursive: true })
    writeFileSync(join(dir, path), text)
  }
  const venv = { python: 'python3', options: ['--system-site-packages'], pipArgs: ['--no-index'] }
  const key = async (): Promise<string> => {
    git('add', '-A')
    git('commit', '-q', '--allow-empty', '-m', 'x')
    return (await describeRelease(dir, 'r', venv)).venvKey
  }
  beforeAll(() => git('init', '-q', '-b', 'main'))

  test('a pin changed two levels down, a constraint or a wheel beside a nested file changes the key', async () => {
    write('requirements.txt', '-r requirements/production.txt\n')
    write('requirements/production.txt', '-r base.txt\ngunicorn==23.0\n')
    write('requirements/base.txt', '--find-links ../wheels\n-c constraints.txt\npkg==1.0\n')
    write('requirements/constraints.txt', 'idna==3.4\n')
    write('wheels/pkg-1.0-py3-none-any.whl', 'one')
    const k1 = await key()
    expect(await key()).toBe(k1)
    write('requirements/base.txt', '--find-links ../wheels\n-c constraints.txt\npkg==2.0\n')
    const k2 = await key()
    expect(k2).not.toBe(k1)
    write('requirements/constraints.txt', 'idna==3.5\n')
    const k3 = await key()
    expect(k3).not.toBe(k2)
    write('wheels/pkg-1.0-py3-none-any.whl', 'rebuilt')
    expect(await key()).not.toBe(k3)
    const d = (await describeRelease(dir, 'r', venv)).deps!
    expect(d.lines).toEqual(expect.arrayContaining(['r gunicorn==23.0', 'r pkg==2.0']))
    expect(d.lines.some(l => l.startsWith('l ') && l.endsWith('\twheels/pkg-1.0-py3-none-any.whl'))).toBe(
      true
    )
    // the requirement files are represented by their lines, not by their blobs (adding a pin may grow a copy)
    expect(d.lines.filter(l => l.startsWith('l ')).map(l => l.split('\t')[1])).toEqual([
      'wheels/pkg-1.0-py3-none-any.whl'
    ])
  })

  test('a symlinked requirements file is read where it points; a missing include fails naming it', async () => {
    write('common/base.txt', '-c ../requirements/constraints.txt\npkg==3.0\n')
    rmSync(join(dir, 'requirements/base.txt'))
    symlinkSync('../common/base.txt', join(dir, 'requirements/base.txt'))
    const k = await key()
    expect((await describeRelease(dir, 'r', venv)).deps!.lines).toContain('r pkg==3.0')
    write('common/base.txt', '-c ../requirements/constraints.txt\npkg==3.1\n')
    expect(await key()).not.toBe(k)
    write('requirements/production.txt', '-r base.txt\n-r local.txt\n')
    await expect(key()).rejects.toThrow(
      'requirements/production.txt includes requirements/local.txt, which is not a file git tracks in the release'
    )
  })

  test('an include by URL makes a new key at each deploy, with a warning', async () => {
    write('requirements/production.txt', '-r base.txt\n-r https://example.com/extra.txt\n')
    const a = await key()
    const r = await describeRelease(dir, 'r', venv)
    expect(r.venvKey).not.toBe(a)
    expect(r.deps).toBeUndefined()
    expect(r.warnings).toEqual([expect.stringContaining('https://example.com/extra.txt')])
  })
})

describe('pip itself as the oracle', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dd-pipreq-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  beforeAll(() => {
    execFileSync('/usr/bin/python3', ['-m', 'venv', join(dir, 'venv')])
  }, 60_000)

  /** The files pip's own parser reads, in order, and the requirement lines it yields (constraint or not). */
  function pipReads(root: string): { files: string[]; lines: string[] } {
    const py = [
      'import json, os, sys',
      'import pip._internal.req.req_file as rf',
      'from pip._internal.network.session import PipSession',
      'root = sys.argv[1]',
      'seen = []',
      'get = rf.get_file_content',
      'def spy(url, session):',
      '    seen.append(os.path.relpath(os.path.normpath(url), root))',
      '    return get(url, session)',
      'rf.get_file_content = spy',
      'os.chdir(root)',
      "reqs = rf.parse_requirements(os.path.join(root, 'requirements.txt'), session=PipSession())",
      "lines = [('c ' if r.constraint else 'r ') + r.requirement for r in reqs]",
      "print(json.dumps({'files': seen, 'lines': lines}))"
    ].join('\n')
    return JSON.parse(execFileSync(join(dir, 'venv/bin/python'), ['-c', py, root]).toString())
  }

  test('the same files in the same order, the same requirement and constraint lines', async () => {
    const files: Record<string, string> = {
      'requirements.txt': '-r requirements/production.txt\r\n--constraint=constraints.txt\r\n',
      'requirements/production.txt':
        '# production\n-rbase.txt  # shared\ngunicorn==23.0 \\\n  ; python_version > "3"\n',
      'requirements/base.txt': '--requirement=../common/shared.txt\n--const ../c2.txt\nDjango==4.2.1\n',
      'common/shared.txt': '--requirement more.txt\n',
      'common/more.txt': 'pkg==1.0\n-c ../constraints.txt\n',
      'constraints.txt': 'idna==3.4\n-r common/in-constraints.txt\n',
      'common/in-constraints.txt': 'extra==2\n',
      'c2.txt': 'x==1\n'
    }
    const root = join(dir, 'project')
    for (const [p, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, p)), { recursive: true })
      writeFileSync(join(root, p), text)
    }
    const pip = pipReads(root)
    const ours = await requirementClosure(reader(files), 'requirements.txt')
    // pip reads a file each time it is named; the closure holds each (path, kind) once
    expect(ours.files.map(f => f.path)).toEqual([...new Set(pip.files)])
    const lines = ours.files.flatMap(f =>
      logicalLines(f.text)
        .filter(l => !l.startsWith('-'))
        .map(l => `${f.constraint ? 'c' : 'r'} ${l}`)
    )
    const norm = (l: string): string => l.replace(/\s+/g, '').replace(/"/g, "'")
    expect(new Set(lines.map(norm))).toEqual(new Set(pip.lines.map(norm)))
  })
})
