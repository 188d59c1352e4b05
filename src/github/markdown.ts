/**
 * Markdown escaping for text that comes from users and tools (Django messages, test names, host names).
 * The summary goes to the job summary and to a PR comment, so a stray `|`, newline, backtick or `<details>`
 * in a message must not break the table or the page around it.
 */

/** Inline text: characters that would start emphasis, links, HTML, math, strike-through or end a table cell. */
export function text(value: string): string {
  return oneLine(value).replace(/[\\`*_[\]<>|~&$]/g, ch =>
    ch === '&' ? '&amp;' : ch === '<' ? '&lt;' : ch === '>' ? '&gt;' : `\\${ch}`
  )
}

/** Text for a table cell or list item: line breaks become `<br>` so the row stays one line. */
export function multiline(value: string): string {
  return value.replace(/\r\n?/g, '\n').replace(/\n+$/, '').split('\n').map(text).join('<br>')
}

/**
 * A code span. Its delimiter is longer than any backtick run inside, so backticks in the value cannot close it.
 * In a table a `|` still splits the cell even inside code (GFM splits cells first), hence `\|`, which GFM
 * turns back into `|` inside table code spans.
 */
export function code(value: string, inTable = true): string {
  const flat = oneLine(value)
  if (flat === '') return ''
  const fence = '`'.repeat(longestRun(flat, '`') + 1)
  const pad =
    flat.startsWith('`') || flat.endsWith('`') || (flat.startsWith(' ') && flat.endsWith(' ')) ? ' ' : ''
  const body = inTable ? flat.replace(/\|/g, '\\|') : flat
  return `${fence}${pad}${body}${pad}${fence}`
}

/** A fenced code block that the content cannot close early. */
export function codeBlock(content: string, lang = ''): string {
  const fence = '`'.repeat(Math.max(3, longestRun(content, '`') + 1))
  return `${fence}${lang}\n${content.replace(/\r\n?/g, '\n').replace(/\n+$/, '')}\n${fence}`
}

/** Text inside raw HTML (e.g. `<summary>`), where Markdown is not parsed but tags are. */
export function html(value: string): string {
  return oneLine(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
}

/** Shortens to at most `max` characters, marking the cut. */
export function clip(value: string, max: number): string {
  return value.length <= max ? value : `${value.slice(0, Math.max(0, max - 1))}…`
}

/** Keeps the last `maxLines` lines and at most `maxChars` characters (the end of output is what explains a failure). */
export function tailOf(value: string, maxLines: number, maxChars: number): string {
  let lines = value.replace(/\r\n?/g, '\n').replace(/\n+$/, '').split('\n')
  let cut = false
  if (lines.length > maxLines) {
    lines = lines.slice(-maxLines)
    cut = true
  }
  let out = lines.join('\n')
  if (out.length > maxChars) {
    out = out.slice(-maxChars)
    const nl = out.indexOf('\n')
    if (nl >= 0 && nl < out.length - 1) out = out.slice(nl + 1)
    cut = true
  }
  return cut ? `…\n${out}` : out
}

/** The leading rows whose rendered length fits the budget. */
export function fitting(rows: string[], budget: number): string[] {
  let used = 0
  let n = 0
  while (n < rows.length && used + rows[n].length + 1 <= budget) used += rows[n++].length + 1
  return rows.slice(0, n)
}

/** A collapsed block; `summary` is HTML already. */
export function details(summary: string, body: string): string {
  // The blank lines let GitHub parse the Markdown inside the HTML block.
  return `<details><summary>${summary}</summary>\n\n${body}\n\n</details>`
}

function oneLine(value: string): string {
  return value.replace(/\s*[\r\n]+\s*/g, ' ')
}

function longestRun(value: string, ch: string): number {
  let best = 0
  let run = 0
  for (const c of value) {
    run = c === ch ? run + 1 : 0
    if (run > best) best = run
  }
  return best
}
