/**
 * A failed step's last lines, led by the cause when they end in a Python traceback: the exception's type and
 * message and the project's own file:line first, then the tail without the frames nobody can act on (Python's
 * frozen importlib frames, the ^^^^ markers under a line). Pure: used for the step's error and its summary.
 */

const TRACEBACK = 'Traceback (most recent call last):'
const FRAME = /^\s+File "(.+)", line (\d+)/
// A frame in Python's own frozen modules, and the carets Python 3.11+ draws under the failing expression.
const NOISE = /^\s+File "<frozen [^>]*>"|^\s*[~^]+\s*$/

/** `exception: message (at path:line)` for the last traceback in the lines, or undefined when there is none. */
export function causeOf(lines: string[]): string | undefined {
  const start = lines.map(l => l.trim()).lastIndexOf(TRACEBACK)
  if (start < 0) return undefined
  const frames: Array<{ file: string; line: string }> = []
  let cause: string | undefined
  for (const line of lines.slice(start + 1)) {
    const frame = FRAME.exec(line)
    if (frame) frames.push({ file: frame[1], line: frame[2] })
    else if (line.trim() && !/^\s/.test(line)) {
      cause = line.trim()
      break
    }
  }
  if (!cause) return undefined
  const own = frames
    .reverse()
    .map(f => ({ ...f, rel: projectPath(f.file) }))
    .find(f => f.rel)
  return own ? `${cause} (at ${own.rel}:${own.line})` : cause
}

/** The path inside the release (`releases/<name>/…`), unless it is the release's virtualenv. */
function projectPath(file: string): string | undefined {
  const rel = /\/releases\/[^/]+\/(.+)$/.exec(file)?.[1]
  return rel && !rel.startsWith('.venv/') ? rel : undefined
}

/** The step's last `tail` lines without Python's noise, with the cause (if any) on the first line. */
export function failureTail(lines: string[], tail: number): string {
  const cause = causeOf(lines)
  const rest = (cause ? lines.filter(l => !NOISE.test(l)) : lines).slice(-tail)
  return (cause ? [cause, ...rest] : rest).join('\n')
}
