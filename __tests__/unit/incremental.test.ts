import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { MANIFEST, parseRanges, parseTree, pathsAt, treeRecords } from '../../src/release/incremental.js'
import { REUSABLE_PY, WARN } from '../../src/remote/commands.js'

const sha = (c: string): string => c.repeat(40)
const rec = (mode: string, s: string, path: string): string => `${mode} blob ${s}\t${path}\0`
const blob = (data: string | Buffer): string =>
  createHash('sha1')
    .update(Buffer.concat([Buffer.from(`blob ${Buffer.byteLength(data)}\0`), Buffer.from(data)]))
    .digest('hex')

describe('the manifest', () => {
  test('parseTree reads git ls-tree -r -z records: files, executables, symlinks; not submodules', () => {
    const text =
      rec('100644', sha('a'), 'manage.py') +
      rec('100755', sha('b'), 'bin/run me.sh') +
      rec('120000', sha('c'), 'link') +
      `160000 commit ${sha('d')}\tvendor/sub\0` +
      rec('100644', sha('e'), 'new\nline.txt')
    expect(parseTree(text)).toEqual([
      { mode: '100644', sha: sha('a'), path: 'manage.py' },
      { mode: '100755', sha: sha('b'), path: 'bin/run me.sh' },
      { mode: '120000', sha: sha('c'), path: 'link' },
      { mode: '100644', sha: sha('e'), path: 'new\nline.txt' }
    ])
    expect(treeRecords(text)).toHaveLength(5)
    expect(pathsAt(text, [1, 4])).toEqual(['bin/run me.sh', 'new\nline.txt'])
  })

  test('index ranges are read strictly', () => {
    expect(parseRanges('', 3)).toEqual([])
    expect(parseRanges('0-2,4,6-7', 8)).toEqual([0, 1, 2, 4, 6, 7])
    for (const bad of ['0-8', '3-1', 'x', '1,', '-1', '0;rm'])
      expect(() => parseRanges(bad, 8)).toThrow(/bad index/)
  })
})

describe('REUSABLE_PY, run by the server Python on a live release', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dd-reusable-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  test('reuses what is unchanged in both and on disk; names files edited on the server; keeps both lists', () => {
    const live = join(dir, 'live')
    execFileSync('mkdir', ['-p', join(live, 'sub')])
    const files: Record<string, string> = {
      'same.py': 'same\n',
      'sub/also same.txt': 'also\n',
      'edited.py': 'as deployed\n',
      'changed-in-git.py': 'old\n',
      'run.sh': '#!/bin/sh\n',
      'was-exec.sh': '#!/bin/sh\n'
    }
    for (const [p, c] of Object.entries(files)) writeFileSync(join(live, p), c)
    chmodSync(join(live, 'run.sh'), 0o755)
    chmodSync(join(live, 'was-exec.sh'), 0o644)
    symlinkSync('same.py', join(live, 'link'))
    const liveManifest =
      rec('100644', blob('same\n'), 'same.py') +
      rec('100644', blob('also\n'), 'sub/also same.txt') +
      rec('100644', blob('as deployed\n'), 'edited.py') +
      rec('100644', blob('old\n'), 'changed-in-git.py') +
      rec('100755', blob('#!/bin/sh\n'), 'run.sh') +
      rec('100755', blob('#!/bin/sh\n'), 'was-exec.sh') +
      rec('120000', blob('same.py'), 'link')
    writeFileSync(join(live, MANIFEST), liveManifest)
    writeFileSync(join(live, 'edited.py'), 'hot fix on the server\n')
    const next =
      rec('100644', blob('same\n'), 'same.py') +
      rec('100644', blob('new\n'), 'changed-in-git.py') +
      rec('100644', blob('as deployed\n'), 'edited.py') +
      rec('100755', blob('#!/bin/sh\n'), 'run.sh') +
      rec('100755', blob('#!/bin/sh\n'), 'was-exec.sh') +
      rec('120000', blob('same.py'), 'link') +
      rec('100644', blob('also\n'), 'sub/also same.txt') +
      rec('100644', blob('x'), 'brand-new.py')
    const out = execFileSync(
      'python3',
      ['-c', REUSABLE_PY, WARN, MANIFEST, live, join(dir, 'keep.manifest'), join(dir, 'keep.reuse')],
      { input: gzipSync(next) }
    ).toString()
    // was-exec.sh lost its executable bit on the server: sent again, like edited.py.
    expect(out).toMatch(
      /^django-deploy-warning: 2 file\(s\) of the live release differ .*: edited\.py, was-exec\.sh/m
    )
    expect(out).toMatch(/^reuse=0,3,5-6$/m)
    expect(pathsAt(next, parseRanges('0,3,5-6', treeRecords(next).length))).toEqual([
      'same.py',
      'run.sh',
      'link',
      'sub/also same.txt'
    ])
    expect(readFileSync(join(dir, 'keep.manifest'), 'utf8')).toBe(next)
    expect(readFileSync(join(dir, 'keep.reuse'), 'utf8')).toBe('same.py\0run.sh\0link\0sub/also same.txt\0')
  })

  test('a live release without a manifest (deployed before it existed) reuses nothing', () => {
    execFileSync('mkdir', ['-p', join(dir, 'live')])
    writeFileSync(join(dir, 'live', 'a.py'), 'a\n')
    const out = execFileSync(
      'python3',
      ['-c', REUSABLE_PY, WARN, MANIFEST, join(dir, 'live'), join(dir, 'm'), join(dir, 'r')],
      { input: gzipSync(rec('100644', blob('a\n'), 'a.py')) }
    ).toString()
    expect(out.trim()).toBe('reuse=')
  })
})
