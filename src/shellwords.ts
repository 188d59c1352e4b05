/**
 * Splits an input such as `pip-args` into words the way a POSIX shell does, without running anything:
 * blanks separate words, '…' keeps everything literally, "…" keeps everything but \" \\ \$ \`, and a backslash
 * outside quotes escapes the next character. So `--no-binary a,b` stays one value and `"wheels dir"` one word.
 * Expansions and operators ($VAR, `cmd`, ;, |, &, <, >, (, )) are refused rather than passed on literally: the
 * words reach the server quoted, so what looks like an expansion would silently not be one.
 */
export class WordsError extends Error {}

const OPERATORS = new Set([';', '|', '&', '<', '>', '(', ')'])

export function splitWords(text: string): string[] {
  const out: string[] = []
  let word = ''
  let inWord = false
  let i = 0
  const refuse = (what: string): never => {
    throw new WordsError(
      `${what} at position ${i + 1} is not supported; write the value itself, or quote it ('…') to keep it literally`
    )
  }
  while (i < text.length) {
    const ch = text[i]
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      if (inWord) out.push(word)
      word = ''
      inWord = false
      i++
    } else if (ch === "'") {
      const end = text.indexOf("'", i + 1)
      if (end < 0) throw new WordsError(`unterminated ' starting at position ${i + 1}`)
      word += text.slice(i + 1, end)
      inWord = true
      i = end + 1
    } else if (ch === '"') {
      const start = i
      i++
      for (;;) {
        if (i >= text.length) throw new WordsError(`unterminated " starting at position ${start + 1}`)
        const c = text[i]
        if (c === '"') break
        if (c === '\\' && i + 1 < text.length && '"\\$`\n'.includes(text[i + 1])) {
          if (text[i + 1] !== '\n') word += text[i + 1]
          i += 2
          continue
        }
        if (c === '$' || c === '`') refuse(`${c} (an expansion)`)
        word += c
        i++
      }
      inWord = true
      i++
    } else if (ch === '\\') {
      if (i + 1 >= text.length) throw new WordsError('a \\ at the end escapes nothing')
      if (text[i + 1] !== '\n') {
        word += text[i + 1]
        inWord = true
      }
      i += 2
    } else if (ch === '$' || ch === '`') {
      refuse(`${ch} (an expansion)`)
    } else if (OPERATORS.has(ch)) {
      refuse(`${ch} (a shell operator)`)
    } else {
      word += ch
      inWord = true
      i++
    }
  }
  if (inWord) out.push(word)
  return out
}
