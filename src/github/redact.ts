/**
 * The last filter before text leaves the run for GitHub (job summary, PR comment, annotations, deployment
 * descriptions). The runner masks secrets in the log only; what goes through the API or the summary file is
 * published as given. So every secret the action knows is replaced by `***` here, each line of a multi-line
 * key on its own too, and `@name` gets a zero-width space after the `@` so a test name or a tool's message
 * cannot notify a person or a team.
 */

const ZWSP = '\u200b'
// Lines shorter than this (a PEM's last line `-----END…` aside) are too common to mask without mangling text.
const MIN_LINE = 8

/** What to mask of a secret: all of it and, for a multi-line one, each of its lines long enough to be one. */
export function secretParts(secret: string | undefined): string[] {
  if (!secret) return []
  const parts = new Set<string>()
  const trimmed = secret.trim()
  if (trimmed.length >= 1) parts.add(trimmed)
  for (const line of secret.split(/\r?\n/)) {
    const t = line.trim()
    if (t.length >= MIN_LINE) parts.add(t)
  }
  return [...parts]
}

export class Redactor {
  private readonly secrets = new Set<string>()

  /** Registers a secret and, for a multi-line one, each of its lines. */
  add(secret: string | undefined): void {
    for (const part of secretParts(secret)) this.secrets.add(part)
  }

  /** Text with every known secret replaced by `***` and every @mention defused. */
  text(value: string): string {
    let out = value
    // Longest first, so a whole key goes before the lines it is made of.
    for (const s of [...this.secrets].sort((a, b) => b.length - a.length)) out = out.split(s).join('***')
    // GitHub links a mention after anything but a letter, a digit or `_` (`**@a**`, `/@a`, `+@a`, `-@a`, `.@a`,
    // `***@a` included): only `a@b.c`, an e-mail address, stays as it is.
    return out.replace(/(^|[^A-Za-z0-9_])@(?=[A-Za-z0-9])/g, `$1@${ZWSP}`)
  }

  /** A deep copy with `text` applied to every string in it (keys stay as they are). */
  value<T>(v: T): T {
    if (typeof v === 'string') return this.text(v) as T
    if (Array.isArray(v)) return v.map(x => this.value(x)) as T
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.value(x)])) as T
    }
    return v
  }
}

/** The parts of a URL's user-info that are secret: the password, or a lone user name (often a token). */
export function urlCredentials(url: string | undefined): string[] {
  if (!url) return []
  let user: string
  let password: string
  try {
    const u = new URL(url)
    ;[user, password] = [u.username, u.password]
  } catch {
    // A URL that does not parse (a bad port, a space in the host) still carries its credentials as written.
    const info = userInfo(url)
    if (info === undefined) return []
    const colon = info.indexOf(':')
    ;[user, password] = colon < 0 ? [info, ''] : [info.slice(0, colon), info.slice(colon + 1)]
  }
  const found: string[] = []
  if (password) found.push(decoded(password), password)
  else if (user) found.push(decoded(user), user)
  if (user && password) found.push(`${user}:${password}`)
  return [...new Set(found)]
}

/** The URL with its user-info (whatever is between `scheme://` and the last `@` of it) replaced by `***`. */
export function withoutCredentials(url: string): string {
  const info = userInfo(url)
  return info === undefined ? url : url.replace(`${info}@`, '***@')
}

/**
 * The user-info as written, without a URL parser: up to the last `@` before the path, or the last `@` at all
 * when a malformed URL leaves no telling where its path starts (masking too much beats leaking a password).
 */
function userInfo(url: string): string | undefined {
  const rest = /^\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/(.*)$/s.exec(url)?.[1]
  const at = rest?.lastIndexOf('@') ?? -1
  return rest === undefined || at < 0 ? undefined : rest.slice(0, at)
}

function decoded(part: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}
