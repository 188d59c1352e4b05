/**
 * Remote commands as data: small pure functions returning POSIX sh scripts. Nothing here runs anything;
 * the runner sends these over SSH and the dry run prints them. Every variable part goes through `q`.
 */
import { q, words } from './quote.js'

/** Lines starting with this marker in a step's output become warnings in the job log. */
export const WARN = 'django-deploy-warning:'

/** Where things live under deploy-path on the server. */
export interface Layout {
  root: string
  releases: string
  shared: string
  current: string
  venvs: string
  lock: string
}

export function layout(root: string): Layout {
  return {
    root,
    releases: `${root}/releases`,
    shared: `${root}/shared`,
    current: `${root}/current`,
    venvs: `${root}/venvs`,
    lock: `${root}/.deploy.lock`
  }
}

const releaseDir = (l: Layout, release: string): string => `${l.releases}/${release}`

/** Strict mode and a umask that keeps release files world-readable, so nginx can serve static files. */
function script(...lines: string[]): string {
  return ['set -eu', 'umask 022', ...lines].join('\n')
}

/**
 * Reads what the deploy needs to know, changing nothing: the live release and the releases present in the
 * order they were uploaded (their REVISION file is written once, at upload).
 */
export function inspect(l: Layout): string {
  return script(
    `for tool in tar flock; do command -v "$tool" >/dev/null 2>&1 || { echo "the server has no $tool; install it (apt-get install $tool)" >&2; exit 127; }; done`,
    `if [ -L ${q(l.current)} ]; then echo "current=$(basename "$(readlink ${q(l.current)})")"; fi`,
    `if [ -d ${q(l.releases)} ]; then cd ${q(l.releases)} && ls -1tr -- */REVISION 2>/dev/null | sed 's|/REVISION$||; s/^/release=/'; fi`
  )
}

export interface HostState {
  current?: string
  /** Oldest upload first. */
  releases: string[]
}

export function parseInspect(stdout: string): HostState {
  const state: HostState = { releases: [] }
  for (const line of stdout.split('\n')) {
    const [k, ...rest] = line.split('=')
    const v = rest.join('=').trim()
    if (!v) continue
    if (k === 'current') state.current = v
    else if (k === 'release') state.releases.push(v)
  }
  return state
}

/**
 * Takes the deploy lock and holds it for as long as this command runs. The lock is a kernel `flock` held by
 * this SSH session: when the runner is cancelled or the connection drops, sshd ends the session, the kernel
 * releases the lock, and nothing stale is left for a person to remove.
 */
export function holdLock(l: Layout, timeoutSeconds: number, holder: string): string {
  return script(
    `mkdir -p ${q(l.root)}`,
    `exec 9>>${q(l.lock)}`,
    `if ! flock -w ${Math.floor(timeoutSeconds)} 9; then`,
    `  echo ${q(`deploy lock on ${l.root} still held after ${timeoutSeconds} s by:`)} "$(cat ${q(l.lock + '.holder')} 2>/dev/null || echo unknown)" >&2`,
    '  exit 75',
    'fi',
    `printf '%s\\n' ${q(holder)} > ${q(l.lock + '.holder')}`,
    'echo locked',
    // Holds the lock until the runner closes stdin (end of deploy) or the session dies.
    'cat >/dev/null'
  )
}

/** Makes the directories and clears a half-made release left by an earlier failed attempt (never the live one). */
export function prepare(l: Layout, release: string): string {
  const dir = releaseDir(l, release)
  return script(
    `mkdir -p ${words(l.releases, l.shared, l.venvs)}`,
    `if [ -L ${q(l.current)} ] && [ "$(basename "$(readlink ${q(l.current)})")" = ${q(release)} ]; then`,
    `  echo ${q(`release ${release} is the live release; deploy another release name (or use mode: rollback)`)} >&2`,
    '  exit 65',
    'fi',
    `rm -rf ${q(dir)}`,
    `mkdir -p ${q(dir)}`
  )
}

/** Unpacks the release archive read from stdin and records the commit it came from. */
export function unpack(l: Layout, release: string, revision: string): string {
  const dir = releaseDir(l, release)
  return script(
    `tar -xzf - -C ${q(dir)} --no-same-owner --no-same-permissions`,
    `chmod -R a+rX ${q(dir)}`,
    `printf '%s\\n' ${q(revision)} > ${q(dir + '/REVISION')}`
  )
}

/** A shared path that looks like a file (has a dot) is a file, else a directory. */
export function sharedKind(path: string): 'file' | 'dir' {
  const base = path.split('/').pop() ?? path
  return base.includes('.') ? 'file' : 'dir'
}

/**
 * Links each shared path into the release. A missing shared path is created: from the release's own copy
 * when it ships one, else empty; a missing `.env` is reported as a warning.
 */
export function linkShared(l: Layout, release: string, paths: string[]): string {
  const dir = releaseDir(l, release)
  const lines: string[] = []
  // A directory on the way to a shared path that the release ships as a symlink (committed to the repository)
  // would make mkdir and ln work wherever it points, outside the release: refused before anything changes.
  for (const p of paths) {
    const segments = p.split('/')
    for (let i = 1; i < segments.length; i++) {
      const via = `${dir}/${segments.slice(0, i).join('/')}`
      lines.push(
        `if [ -L ${q(via)} ]; then`,
        `  echo ${q(`shared path ${p}: ${segments.slice(0, i).join('/')} is a symlink in the release (committed to the repository); a shared path cannot go through a symlink. Commit it as a real directory, or share the path it points to.`)} >&2`,
        '  exit 65',
        'fi'
      )
    }
  }
  for (const p of paths) {
    const shared = `${l.shared}/${p}`
    const inRelease = `${dir}/${p}`
    const parent = shared.slice(0, shared.lastIndexOf('/'))
    const relParent = inRelease.slice(0, inRelease.lastIndexOf('/'))
    lines.push(`mkdir -p ${words(parent, relParent)}`)
    if (sharedKind(p) === 'file') {
      lines.push(
        `if [ ! -e ${q(shared)} ]; then`,
        `  if [ -f ${q(inRelease)} ] && [ ! -L ${q(inRelease)} ]; then cp ${words(inRelease, shared)}; else`,
        `    : > ${q(shared)}; chmod 600 ${q(shared)}`,
        `    echo ${q(`${WARN} ${shared} did not exist; created it empty. Put the server's settings there.`)}`,
        '  fi',
        'fi'
      )
    } else {
      lines.push(
        `if [ ! -e ${q(shared)} ]; then`,
        `  if [ -d ${q(inRelease)} ] && [ ! -L ${q(inRelease)} ]; then cp -R ${words(inRelease, shared)}; else mkdir -p ${q(shared)}; fi`,
        'fi'
      )
    }
    lines.push(`rm -rf ${q(inRelease)}`, `ln -s ${words(shared, inRelease)}`)
  }
  return script(...lines)
}

export interface VenvOptions {
  /** Content hash of what the virtualenv is made from; equal keys share one virtualenv. */
  key: string
  python: string
  venvOptions: string[]
  pipArgs: string[]
  hasRequirements: boolean
}

/**
 * Makes (or reuses) the virtualenv for the release's dependencies under venvs/<key> and links it as
 * <release>/.venv. A virtualenv is built in place (its scripts carry absolute paths) and marked complete only
 * at the end, so a half-built one from a killed deploy is rebuilt, never used.
 */
export function venv(l: Layout, release: string, o: VenvOptions): string {
  const target = `${l.venvs}/${o.key}`
  const done = `${target}/.django-deploy-complete`
  return script(
    `if [ -f ${q(done)} ]; then`,
    `  echo ${q(`reusing virtualenv ${o.key} (requirements unchanged)`)}`,
    'else',
    `  rm -rf ${q(target)}`,
    `  ${words(o.python, '-m', 'venv', ...o.venvOptions, target)}`,
    ...(o.hasRequirements
      ? [
          `  cd ${q(releaseDir(l, release))}`,
          `  ${words(`${target}/bin/python`, '-m', 'pip', 'install', '--disable-pip-version-check', ...o.pipArgs, '-r', 'requirements.txt')}`
        ]
      : []),
    `  : > ${q(done)}`,
    'fi',
    `rm -rf ${q(releaseDir(l, release) + '/.venv')}`,
    `ln -s ${words(target, releaseDir(l, release) + '/.venv')}`
  )
}

/** Runs manage.py of the release with its virtualenv. */
export function manage(l: Layout, release: string, args: string[]): string {
  return script(`cd ${q(releaseDir(l, release))}`, words('.venv/bin/python', 'manage.py', ...args))
}

/**
 * Runs several manage.py commands in ONE interpreter (Django is set up once, not once per command), printing
 * `<mark> <name> <exit code>` after each and stopping at the first that fails.
 */
export function manageMany(
  l: Layout,
  release: string,
  mark: string,
  commands: { name: string; args: string[] }[]
): string {
  const py = [
    'import json, runpy, sys, traceback',
    'mark, commands = sys.argv[1], json.loads(sys.argv[2])',
    'for name, args in commands:',
    "    sys.argv = ['manage.py', *args]",
    '    code = 0',
    '    try:',
    "        runpy.run_path('manage.py', run_name='__main__')",
    '    except SystemExit as e:',
    '        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)',
    '    except BaseException:',
    '        traceback.print_exc()',
    '        code = 1',
    '    sys.stderr.flush()',
    "    print(f'{mark} {name} {code}', flush=True)",
    '    if code:',
    '        sys.exit(code)'
  ].join('\n')
  return script(
    `cd ${q(releaseDir(l, release))}`,
    `PYTHONUNBUFFERED=1 ${words('.venv/bin/python', '-c', py, mark, JSON.stringify(commands.map(c => [c.name, c.args])))}`
  )
}

/** Points `current` at a release with one rename(2): there is no moment without a `current`. */
export function switchTo(l: Layout, release: string): string {
  const tmp = `${l.current}.tmp-${release}`
  return script(
    `rm -f ${q(tmp)}`,
    `ln -s ${words(`releases/${release}`, tmp)}`,
    `mv -T ${words(tmp, l.current)}`
  )
}

/** Puts the server back to having no live release (undo of a failed first deploy). */
export function removeCurrent(l: Layout): string {
  return script(`rm -f ${q(l.current)}`)
}

/** Process helpers from /proc (procps may be missing on small servers); a zombie counts as gone. */
const PROC = [
  `children() { grep -ls "^PPid:[[:space:]]*$1$" /proc/[0-9]*/status | cut -d/ -f3; }`,
  `alive() { [ -r "/proc/$1/status" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }`
]

/**
 * Reloads Gunicorn through its pidfile. HUP re-forks workers from the same master (new code, same
 * interpreter); when the release's virtualenv differs from the one the master runs, USR2 starts a new master
 * from `current`, and the old one is stopped only once the new one has workers.
 */
export function reloadGunicorn(l: Layout, pidfile: string, release: string, previous?: string): string {
  const newVenv = `${releaseDir(l, release)}/.venv`
  const oldVenv = previous ? `${releaseDir(l, previous)}/.venv` : newVenv
  return script(
    ...PROC,
    `pidfile=${q(pidfile)}`,
    'pid=$(cat "$pidfile" 2>/dev/null || true)',
    'if [ -z "$pid" ] || ! alive "$pid"; then',
    `  echo ${q(`${WARN} no running Gunicorn in ${pidfile}: nothing to reload. Start Gunicorn from ${l.current} (see README).`)}`,
    '  exit 0',
    'fi',
    `if [ "$(readlink -f ${q(newVenv)})" = "$(readlink -f ${q(oldVenv)})" ]; then`,
    '  old=$(children "$pid")',
    '  kill -HUP "$pid"',
    '  i=0',
    '  while [ $i -lt 600 ]; do',
    '    left=""; for c in $old; do alive "$c" && left="$left $c"; done',
    '    if [ -z "$left" ] && [ -n "$(children "$pid")" ]; then echo "gunicorn $pid reloaded (HUP): workers replaced"; exit 0; fi',
    '    sleep 0.1; i=$((i+1))',
    '  done',
    '  echo "gunicorn $pid did not replace its workers within 60 s after HUP (still running:$left)" >&2; exit 1',
    'fi',
    'kill -USR2 "$pid"',
    // The new master writes <pidfile>.2 while the old one lives (it takes <pidfile> once the old one is gone).
    'i=0; new=""',
    'while [ $i -lt 600 ] && [ -z "$new" ]; do',
    '  for f in "$pidfile.2" "$pidfile"; do',
    '    n=$(cat "$f" 2>/dev/null || true)',
    '    if [ -n "$n" ] && [ "$n" != "$pid" ] && alive "$n" && [ -n "$(children "$n")" ]; then new=$n; break; fi',
    '  done',
    '  alive "$pid" || { echo "gunicorn master $pid died during USR2" >&2; exit 1; }',
    '  [ -n "$new" ] || sleep 0.1',
    '  i=$((i+1))',
    'done',
    '[ -n "$new" ] || { echo "new gunicorn master did not come up within 60 s after USR2; the old one keeps serving" >&2; exit 1; }',
    // The new workers need a moment to load the application before the old master stops accepting.
    'sleep 1',
    'alive "$new" || { echo "new gunicorn master $new exited while starting; the old one keeps serving" >&2; exit 1; }',
    'kill -TERM "$pid"',
    'echo "gunicorn re-executed (USR2): new master $new, old master $pid stopping gracefully"'
  )
}

export function reloadService(service: string): string {
  return script(words('sudo', '-n', 'systemctl', 'reload', service))
}

/** The user's own command line, run as written (it is theirs to quote) in `dir`. */
export function userCommand(dir: string, command: string): string {
  return script(`cd ${q(dir)}`, command)
}

export function releasePath(l: Layout, release: string): string {
  return releaseDir(l, release)
}

/**
 * Fetches the health-check URL from the server (so it reaches what only the server can see) until it answers
 * 2xx or the timeout passes. Uses the release's Python: curl is not on every server.
 */
export function healthCheck(l: Layout, release: string, url: string, timeoutSeconds: number): string {
  // Both paths follow the same rules: up to 10 redirects, 2xx is healthy, anything else is reported with its
  // status and the first 300 bytes of the body; credentials in the URL are sent (basic auth), never printed.
  const shown = url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#@]*@/, '$1***@')
  const py = [
    'import base64, sys, time, urllib.error, urllib.parse, urllib.request',
    'url, shown, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])',
    'parts = urllib.parse.urlsplit(url)',
    'headers = {}',
    'if parts.username is not None:',
    "    cred = urllib.parse.unquote(parts.username) + ':' + urllib.parse.unquote(parts.password or '')",
    "    headers['Authorization'] = 'Basic ' + base64.b64encode(cred.encode()).decode()",
    "    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit('@', 1)[1]))",
    'def first(body):',
    "    return ' '.join(body[:300].decode('utf-8', 'replace').split())",
    'deadline = time.time() + limit',
    "last = 'no answer'",
    'while True:',
    '    try:',
    '        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:',
    '            if 200 <= r.status < 300:',
    "                print(f'{shown} answered {r.status}')",
    '                sys.exit(0)',
    "            last = f'HTTP {r.status}: ' + first(r.read(300))",
    '    except urllib.error.HTTPError as e:',
    "        last = f'HTTP {e.code}: ' + first(e.read(300))",
    '    except Exception as e:',
    "        last = str(getattr(e, 'reason', e))",
    '    if time.time() >= deadline:',
    "        print(f'{shown} not healthy after {limit:g} s: {last}', file=sys.stderr)",
    '        sys.exit(1)',
    '    time.sleep(0.5)'
  ].join('\n')
  // curl answers in milliseconds where Python needs a few hundred to start; not every server has it.
  // `date +%s` counts whole seconds: one more keeps the wait at least the timeout.
  const curl = [
    `url=${q(url)}; shown=${q(shown)}; deadline=$(( $(date +%s) + ${Math.ceil(timeoutSeconds)} + 1 ))`,
    'body=$(mktemp); trap \'rm -f "$body"\' EXIT',
    'while :; do',
    `  out=$(curl -sS -L --max-redirs 10 -o "$body" -w '\\n%{http_code}' --max-time 5 "$url" 2>&1) || true`,
    '  code=$(printf "%s" "$out" | tail -n 1); last=$(printf "%s" "$out" | head -n 1)',
    '  case "$code" in',
    '    2??) echo "$shown answered $code"; exit 0 ;;',
    '    000) ;;',
    "    *) last=\"HTTP $code: $(head -c 300 \"$body\" | tr -s ' \\t\\r\\n' ' ' | sed 's/^ //; s/ $//')\" ;;",
    '  esac',
    `  if [ "$(date +%s)" -ge "$deadline" ]; then echo "$shown not healthy after ${timeoutSeconds} s: $last" >&2; exit 1; fi`,
    '  sleep 0.5',
    'done'
  ]
  return script(
    `cd ${q(releaseDir(l, release))}`,
    'if command -v curl >/dev/null 2>&1; then',
    ...curl.map(line => `  ${line}`),
    'fi',
    words('.venv/bin/python', '-c', py, url, shown, String(timeoutSeconds))
  )
}

/**
 * Removes old releases beyond `keep`, never the live or the previous one, then the virtualenvs no kept
 * release links to.
 */
export function cleanup(l: Layout, keep: string[], remove: string[]): string {
  const lines = remove.map(r => `rm -rf ${q(releaseDir(l, r))}`)
  const kept = keep.map(r => q(`${releaseDir(l, r)}/.venv`)).join(' ')
  lines.push(
    `if [ -d ${q(l.venvs)} ]; then`,
    `  used=$(for v in ${kept || '/nonexistent'}; do readlink -f "$v" 2>/dev/null || true; done)`,
    `  for v in ${q(l.venvs)}/*; do`,
    '    [ -e "$v" ] || continue',
    '    echo "$used" | grep -qxF "$(readlink -f "$v")" || rm -rf "$v"',
    '  done',
    'fi'
  )
  return script(...lines)
}
