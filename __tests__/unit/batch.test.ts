/** The batch protocol: the script made from steps and the parser that reads its output back line by line. */
import { batch, BatchParser, newMark } from '../../src/deploy/batch.js'
import { layout } from '../../src/remote/commands.js'

const mark = newMark()

test('a batch reports each step as it ends, in order; a marker out of turn is not an end', () => {
  const p = new BatchParser(mark, ['prepare', 'upload', 'shared'])
  expect(p.feed('making directories')).toEqual({ output: 'making directories' })
  expect(p.feed(`${mark} upload 0`)).toEqual({ output: undefined })
  expect(p.current).toBe('prepare')
  expect(p.feed(`${mark} prepare 0`)).toEqual({ output: undefined, ended: 'prepare' })
  // Output without a final new line runs into the marker: it is the step's output.
  expect(p.feed(`no newline${mark} upload 0`)).toEqual({ output: 'no newline', ended: 'upload' })
  expect(p.current).toBe('shared')
})

test('a failed step stays the current one: what it prints after its marker joins its last lines', () => {
  const p = new BatchParser(mark, ['preflight', 'migrate'])
  expect(p.feed(`${mark} preflight 3`)).toEqual({ output: undefined })
  expect(p.failedCode).toBe(3)
  expect(p.feed('Traceback (most recent call last):')).toEqual({
    output: 'Traceback (most recent call last):'
  })
  expect(p.feed(`${mark} migrate 0`)).toEqual({ output: undefined })
  // Nothing after the failure ends it again (the command's end closes it, with its exit code).
  expect(p.feed(`${mark} preflight 0`)).toEqual({ output: undefined })
  expect(p.current).toBe('preflight')
})

test('a marker with another mark (printed by the project) is output, not an end', () => {
  const p = new BatchParser(mark, ['collectstatic'])
  const fake = `${newMark()} collectstatic 0`
  expect(p.feed(fake)).toEqual({ output: fake })
  expect(p.part).toBe(0)
})

test('the script names every step with the mark, and refuses two steps reading stdin', () => {
  const l = layout('/srv/app')
  const b = batch(
    [
      { name: 'a', script: 'true' },
      { name: 'b', script: 'false' }
    ],
    l,
    mark
  )
  expect(b.parts).toEqual(['a', 'b'])
  expect(b.script).toContain(`echo "${mark} b $rc"`)
  expect(() =>
    batch(
      [
        { name: 'manifest', script: 'x', stdin: 'tree' },
        { name: 'upload', script: 'y', stdin: 'archive' }
      ],
      l,
      mark
    )
  ).toThrow(/more than one reads stdin/)
})
