/**
 * The one place where values become shell words. Every value a user, the repository or the event controls
 * (release names, paths, URLs, hosts) reaches a remote shell only through `q`.
 */

/** POSIX single-quoting: safe for any byte string but NUL. */
export function q(value: string): string {
  if (value.includes('\0')) throw new Error('a shell word cannot contain a NUL byte')
  // `NAME=value` as the first word of a command is a variable assignment, not a word: always quote it.
  if (/^[A-Za-z0-9_./=:@%+,-]+$/.test(value) && !/^[A-Za-z_][A-Za-z0-9_]*=/.test(value)) return value
  return `'${value.replace(/'/g, `'\\''`)}'`
}

/** Quotes each word and joins them into one command line. */
export function words(...parts: string[]): string {
  return parts.map(q).join(' ')
}

/** The line actually sent over SSH: the script run by /bin/sh, whatever the login shell is. */
export function shellLine(script: string): string {
  return `/bin/sh -c ${q(script)}`
}
