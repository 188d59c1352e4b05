import { MANIFEST, parseTree, reusable, REUSE } from '../../src/release/incremental.js'

const sha = (c: string): string => c.repeat(40)
const rec = (mode: string, s: string, path: string): string => `${mode} blob ${s}\t${path}\0`

describe('parseTree', () => {
  test('reads git ls-tree -r -z records: files, executables, symlinks; not submodules', () => {
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
  })
})

describe('reusable', () => {
  const live = parseTree(
    rec('100644', sha('a'), 'same.py') +
      rec('100644', sha('a'), 'other-content.py') +
      rec('100644', sha('a'), 'now-executable.sh') +
      rec('100644', sha('a'), 'lossy-\uFFFD.txt') +
      rec('100644', sha('a'), MANIFEST) +
      rec('100644', sha('a'), REUSE)
  )
  const next = parseTree(
    rec('100644', sha('a'), 'same.py') +
      rec('100644', sha('b'), 'other-content.py') +
      rec('100755', sha('a'), 'now-executable.sh') +
      rec('100644', sha('a'), 'lossy-\uFFFD.txt') +
      rec('100644', sha('a'), 'new.py') +
      rec('100644', sha('a'), MANIFEST) +
      rec('100644', sha('a'), REUSE)
  )
  test('only the same path with the same mode and content; never a lossy name or our own files', () => {
    expect(reusable(live, next)).toEqual(['same.py'])
  })
  test('nothing from an empty or missing manifest', () => {
    expect(reusable([], next)).toEqual([])
  })
})
