import { execFileSync } from 'node:child_process'
import { splitWords, WordsError } from '../../src/shellwords.js'

/** What /bin/sh itself makes of the same text: the oracle for the splitter. */
function shWords(text: string): string[] {
  // A new line would end the `for` line in a script; between words it is a blank like any other.
  const line = text.replace(/\n/g, ' ')
  const out = execFileSync('/bin/sh', [
    '-c',
    `set -f; for w in ${line}; do printf '%s\\0' "$w"; done`
  ]).toString()
  return out === '' ? [] : out.slice(0, -1).split('\0')
}

describe('splitWords', () => {
  test.each([
    ['--no-binary a,b --quiet', ['--no-binary', 'a,b', '--quiet']],
    ['--find-links "wheels dir" -q', ['--find-links', 'wheels dir', '-q']],
    ["--index-url 'https://h/simple?a=1&b=2'", ['--index-url', 'https://h/simple?a=1&b=2']],
    ['  a\tb\n c  ', ['a', 'b', 'c']],
    ['x\\ y', ['x y']],
    ['"say \\"hi\\"" \'it\'"s"', ['say "hi"', 'its']],
    ['"a\\b"', ['a\\b']],
    ['""', ['']],
    ['', []],
    ['--system-site-packages', ['--system-site-packages']]
  ])('%j splits as /bin/sh splits it', (text, expected) => {
    expect(splitWords(text)).toEqual(expected)
    expect(shWords(text)).toEqual(expected)
  })

  test.each([
    ['"open', /unterminated " starting at position 1/],
    ["a 'open", /unterminated ' starting at position 3/],
    ['a\\', /escapes nothing/],
    ['--index-url $PIP_URL', /\$ \(an expansion\) at position 13/],
    ['"`id`"', /` \(an expansion\)/],
    ['a; rm -rf /', /; \(a shell operator\)/],
    ['a | b', /\| \(a shell operator\)/]
  ])('%j is refused: %s', (text, message) => {
    expect(() => splitWords(text)).toThrow(WordsError)
    expect(() => splitWords(text)).toThrow(message)
  })

  test('quoted operators and dollars are plain text', () => {
    expect(splitWords('\'$HOME;|&<>()\' "a;b"')).toEqual(['$HOME;|&<>()', 'a;b'])
  })
})
