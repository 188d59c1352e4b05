/**
 * What pip reads when it installs `-r requirements.txt`: the file and every requirement and constraint file it
 * includes (`-r`, `-c`, `--requirement`, `--constraint`, at any depth), resolved as pip does, so the
 * virtualenv key changes when any of them does. Pure functions over a reader of the release's files.
 */
import { posix } from 'node:path'

/** One file of the closure: its path in the release and its text. */
export interface RequirementFile {
  path: string
  text: string
  /** Read as constraints (`-c`): its lines limit versions, they install nothing by themselves. */
  constraint: boolean
}

export interface RequirementClosure {
  /** Every file, requirements.txt first, each once, in the order pip meets them. */
  files: RequirementFile[]
  /** Includes whose content the runner cannot know (a URL, an absolute path on the server). */
  external: string[]
}

/**
 * The logical lines of a requirements file as pip's preprocess() makes them: continued lines joined, comments
 * (a `#` at the start or after whitespace) removed, blank lines dropped, whitespace runs made one space.
 */
export function logicalLines(text: string): string[] {
  const joined: string[] = []
  let held: string[] = []
  for (let raw of text.split(/\r?\n/)) {
    const comment = /^\s*#/.test(raw)
    if (raw.endsWith('\\') && !comment) {
      held.push(raw.replace(/^\\+|\\+$/g, ''))
      continue
    }
    if (comment) raw = ` ${raw}`
    joined.push([...held, raw].join(''))
    held = []
  }
  if (held.length) joined.push(held.join(''))
  return joined
    .map(l =>
      l
        .replace(/(^|\s+)#.*$/, '')
        .trim()
        .replace(/\s+/g, ' ')
    )
    .filter(Boolean)
}

/** pip's long options in a requirements file; optparse takes any unambiguous prefix of them. */
const LONG = [
  'index-url',
  'extra-index-url',
  'no-index',
  'constraint',
  'requirement',
  'editable',
  'find-links',
  'no-binary',
  'only-binary',
  'prefer-binary',
  'require-hashes',
  'pre',
  'trusted-host',
  'use-feature',
  'install-option',
  'global-option',
  'hash'
]

function longOption(word: string): string | undefined {
  if (LONG.includes(word)) return word
  const matches = LONG.filter(o => o.startsWith(word))
  return matches.length === 1 ? matches[0] : undefined
}

/** The files a logical line includes: `-r x`, `-rx`, `--requirement x`, `--requirement=x`, `-c` alike. */
export function includesOf(line: string): { path: string; constraint: boolean }[] {
  const words = line.split(' ')
  const out: { path: string; constraint: boolean }[] = []
  for (let i = 0; i < words.length; i++) {
    const w = words[i]
    let kind: string | undefined
    let value: string | undefined
    const short = /^-([rc])(.*)$/.exec(w)
    const long = /^--([\w-]+)(?:=(.*))?$/.exec(w)
    if (short) {
      kind = short[1] === 'r' ? 'requirement' : 'constraint'
      value = short[2] || undefined
    } else if (long) {
      kind = longOption(long[1])
      value = long[2]
    }
    if (kind !== 'requirement' && kind !== 'constraint') continue
    if (value === undefined) value = words[++i]
    if (value) out.push({ path: value, constraint: kind === 'constraint' })
  }
  return out
}

const SCHEME = /^[A-Za-z][\w+.-]*:/

/**
 * Follows every include from `root` (paths relative to the release), each relative to the directory of the
 * file that names it (pip's rule); `args` are pip-args, whose `-r`/`-c` are relative to the release. `read`
 * returns a file's text, or undefined when the release has no such file. Throws, naming the file, on a
 * missing file, an include that leaves the release, or a cycle (pip would recurse without end).
 */
export async function requirementClosure(
  read: (path: string) => Promise<string | undefined>,
  root: string,
  args: string[] = []
): Promise<RequirementClosure> {
  const files: RequirementFile[] = []
  const external: string[] = []
  const seen = new Set<string>()
  const visit = async (path: string, constraint: boolean, chain: string[]): Promise<void> => {
    if (chain.includes(path))
      throw new Error(
        `requirements include themselves: ${[...chain, path].join(' → ')} (pip would recurse without end); remove one of these -r/-c lines`
      )
    const key = `${constraint ? 'c' : 'r'} ${path}`
    if (seen.has(key)) return
    seen.add(key)
    const text = await read(path)
    if (text === undefined) {
      const by = chain.length ? `${chain[chain.length - 1]} includes ${path}` : `${path} is named by pip-args`
      throw new Error(
        `${by}, which is not a file git tracks in the release: pip on the server would fail; commit it or fix the -r/-c line`
      )
    }
    files.push({ path, text, constraint })
    for (const line of logicalLines(text))
      for (const inc of includesOf(line)) await follow(inc, posix.dirname(path), [...chain, path])
  }
  const follow = async (
    inc: { path: string; constraint: boolean },
    dir: string,
    chain: string[]
  ): Promise<void> => {
    if (SCHEME.test(inc.path) || inc.path.startsWith('/')) {
      external.push(inc.path)
      return
    }
    const path = posix.normalize(posix.join(dir, inc.path))
    if (path === '..' || path.startsWith('../'))
      throw new Error(
        `${chain[chain.length - 1] ?? 'pip-args'} includes ${inc.path}, which is outside the release (working-directory): pip on the server would not find it`
      )
    await visit(path, inc.constraint, chain)
  }
  await visit(root, false, [])
  for (const inc of includesOf(args.join(' '))) await follow(inc, '.', [])
  return { files, external }
}

/**
 * The words of a requirements file that may name a path (a wheel, a --find-links directory, an editable
 * project): each requirement word and each option's value (`--find-links=x`, `-fx`, `-e ./pkg`).
 */
export function pathWords(text: string): string[] {
  const out: string[] = []
  for (const line of logicalLines(text))
    for (const w of line.split(' ')) {
      const long = /^--[\w-]+=(.+)$/.exec(w)
      const short = /^-[a-zA-Z](.+)$/.exec(w)
      if (long) out.push(long[1])
      else if (short && !w.startsWith('--')) out.push(short[1])
      else if (!w.startsWith('-')) out.push(w)
    }
  return out
}
