/**
 * The health check after the switch: the health-check URL fetched from the server (so it reaches what only the
 * server can see), by curl when it has one, else by health_check.py in the release's Python.
 */
import { IN_RELEASE, type Layout, releaseDir } from './layout.js'
import { HEALTH_CHECK_PY } from './python/programs.js'
import { q, words } from './quote.js'
import { script } from './shell.js'

/** Answers in a row with an application error (5xx but a proxy's 502/503/504) that end the wait early. */
export const HEALTH_FAST_FAIL = 3

/**
 * A health-check URL split for the server: the URL without its user-info (`bare`), what logs show (`shown`:
 * `***@` for the user-info) and, with credentials, the `Authorization` header's value (sent on the step's
 * stdin, never in a command line: see `healthCheck`).
 */
export function healthTarget(url: string): { bare: string; shown: string; authorization?: string } {
  const u = new URL(url)
  if (!u.username && !u.password) return { bare: url, shown: url }
  // As Python's unquote: a `%` that starts no escape stays as it is.
  const decode = (s: string): string =>
    s.replace(/(%[0-9A-Fa-f]{2})+/g, m => {
      try {
        return decodeURIComponent(m)
      } catch {
        return m
      }
    })
  const cred = `${decode(u.username)}:${decode(u.password)}`
  u.username = ''
  u.password = ''
  return {
    bare: u.href,
    shown: u.href.replace('://', '://***@'),
    authorization: `Basic ${Buffer.from(cred).toString('base64')}`
  }
}

/**
 * Fetches the health-check URL from the server (so it reaches what only the server can see) until it answers
 * 2xx or the timeout passes. Uses the release's Python: curl is not on every server. An application that
 * answers 500 several times in a row is not starting up, it is broken: that fails at once instead of serving
 * errors until the timeout. A proxy's 502/503/504 (the app not listening yet) keeps the wait going.
 * Credentials in the URL (basic auth) come on stdin (`healthTarget(url).authorization`, one line): a command
 * line is readable by every user of the server in /proc, so they reach neither sh's nor curl's nor Python's;
 * curl reads them from a 0600 config file, Python from its stdin.
 */
export function healthCheck(l: Layout, release: string, url: string, timeoutSeconds: number): string {
  // Both paths follow the same rules: up to 10 redirects, 2xx is healthy, anything else is reported with its
  // status and the first 300 bytes of the body; credentials are sent (basic auth) to the URL's own origin only.
  const { bare, shown, authorization } = healthTarget(url)
  // curl answers in milliseconds where Python needs a few hundred to start; not every server has it. curl
  // before 7.83 sends credentials on a redirect to another port or scheme of the same host: Python then.
  // `date +%s` counts whole seconds: one more keeps the wait at least the timeout.
  const curl = [
    `url=${q(bare)}; shown=${q(shown)}; deadline=$(( $(date +%s) + ${Math.ceil(timeoutSeconds)} + 1 )); bad=0`,
    'body=$(mktemp); cfg=$(mktemp); trap \'rm -f "$body" "$cfg"\' EXIT',
    // printf is the shell's own: the header goes to the 0600 file, through no command line.
    `[ -z "$auth" ] || printf 'header = "Authorization: %s"\\n' "$auth" > "$cfg"`,
    'while :; do',
    `  out=$(curl -K "$cfg" -sS -L --max-redirs 10 -o "$body" -w '\\n%{http_code}' --max-time 5 "$url" 2>&1) || true`,
    '  code=$(printf "%s" "$out" | tail -n 1); last=$(printf "%s" "$out" | head -n 1)',
    '  case "$code" in',
    '    2??) echo "$shown answered $code"; exit 0 ;;',
    '    000) bad=0 ;;',
    "    502|503|504) bad=0; last=\"HTTP $code: $(head -c 300 \"$body\" | tr -s ' \\t\\r\\n' ' ' | sed 's/^ //; s/ $//')\" ;;",
    "    5??) bad=$((bad + 1)); last=\"HTTP $code: $(head -c 300 \"$body\" | tr -s ' \\t\\r\\n' ' ' | sed 's/^ //; s/ $//')\" ;;",
    "    *) bad=0; last=\"HTTP $code: $(head -c 300 \"$body\" | tr -s ' \\t\\r\\n' ' ' | sed 's/^ //; s/ $//')\" ;;",
    '  esac',
    `  if [ "$bad" -ge ${HEALTH_FAST_FAIL} ]; then echo "$shown answered $last ($bad times in a row): the release is broken" >&2; exit 1; fi`,
    `  if [ "$(date +%s)" -ge "$deadline" ]; then echo "$shown not healthy after ${timeoutSeconds} s: $last" >&2; exit 1; fi`,
    '  sleep 0.5',
    'done'
  ]
  const run = words(
    `${IN_RELEASE.venv}/bin/python`,
    '-c',
    HEALTH_CHECK_PY,
    bare,
    shown,
    String(timeoutSeconds),
    String(HEALTH_FAST_FAIL)
  )
  return script(
    `cd ${q(releaseDir(l, release))}`,
    authorization ? 'IFS= read -r auth || true' : 'auth=""',
    `if command -v curl >/dev/null 2>&1 && { [ -z "$auth" ] || curl --version | awk 'NR == 1 { split($2, v, "."); exit !(v[1] > 7 || (v[1] == 7 && v[2] >= 83)) }'; }; then`,
    ...curl.map(line => `  ${line}`),
    'fi',
    authorization ? `printf '%s\\n' "$auth" | ${run} stdin` : run
  )
}
