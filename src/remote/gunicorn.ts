/**
 * Gunicorn: which virtualenv the running master runs (read before the switch), and a reload that ends when the
 * new workers have loaded the application, through a pidfile (HUP or a USR2 re-exec) or a systemd unit.
 */
import { IN_RELEASE, type Layout, releaseDir } from './layout.js'
import { q } from './quote.js'
import { WARN, script } from './shell.js'

/**
 * Process helpers from /proc (procps may be missing on small servers); a zombie counts as gone.
 * - `venv_of PID`: the virtualenv a Python process runs, from the interpreter it was started with (the first word
 *   of its command line, relative to its working directory), resolved through links now; `?` when unknown
 *   (e.g. setproctitle rewrote the command line).
 * - `ready PID`: a Gunicorn worker has loaded the application and entered its request loop: its heartbeat file
 *   (a deleted `wgunicorn-*` the master watches) was touched after it was made (gunicorn's notify() flips the
 *   mode from 600, or, since gunicorn 21, sets its mtime to a monotonic clock reading).
 * - `workers_ready PID`: a master has workers and every one of them is ready.
 */
const PROC = [
  `children() { grep -ls "^PPid:[[:space:]]*$1$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3; }`,
  `alive() { [ -r "/proc/$1/status" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }`,
  `venv_of() { exe=$(tr '\\000' '\\n' < "/proc/$1/cmdline" 2>/dev/null | head -n 1); case "$exe" in /*) ;; ?*) exe="/proc/$1/cwd/$exe" ;; esac; case "$exe" in */bin/python*) readlink -f "\${exe%/bin/*}" || echo '?' ;; *) echo '?' ;; esac; }`,
  `ready() { for f in /proc/$1/fd/*; do case "$(readlink "$f" 2>/dev/null)" in *wgunicorn-*) set -- $(stat -Lc '%a %Y %Z' "$f" 2>/dev/null); [ $# -eq 3 ] || return 1; [ "$1" != 600 ] || [ "$2" != "$3" ]; return ;; esac; done; return 1; }`,
  `workers_ready() { ws=$(children "$1"); [ -n "$ws" ] || return 1; for w in $ws; do ready "$w" || return 1; done; }`,
  // Stops a master that must not stay (TERM, then KILL with its workers after 10 s).
  `stop_master() { ws=$(children "$1"); kill -TERM "$1" 2>/dev/null || true; i=0; while alive "$1" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; alive "$1" && kill -KILL "$1" $ws 2>/dev/null; return 0; }`
]

/**
 * Before `current` moves: which virtualenv the running Gunicorn master runs, read from /proc while its
 * interpreter path still resolves as it did when the master started (`current/.venv/bin/python` resolves to
 * the new release's virtualenv once `current` has moved).
 */
export function probeGunicorn(l: Layout, master: { pidfile: string } | { service: string }): string {
  return script(
    ...PROC,
    'pidfile' in master
      ? `pid=$(cat ${q(master.pidfile)} 2>/dev/null || true)`
      : `pid=$(systemctl show -p MainPID --value ${q(master.service)} 2>/dev/null || true)`,
    `rm -f ${q(l.gunicornMaster)}`,
    'if [ -n "$pid" ] && [ "$pid" != 0 ] && alive "$pid"; then',
    `  printf '%s %s\\n' "$pid" "$(venv_of "$pid")" > ${q(l.gunicornMaster)}`,
    '  echo "gunicorn master $pid runs $(venv_of "$pid")"',
    'fi'
  )
}

/**
 * Reloads Gunicorn through its pidfile. HUP re-forks workers from the same master (new code, same interpreter),
 * when the master already runs the release's virtualenv; else USR2 starts a new master that re-executes the
 * master's interpreter. Either way the step ends when the new workers have loaded the application. After USR2
 * the new master must run the release's virtualenv and have its workers ready before the old one is stopped;
 * if not, the new master is stopped and the old one keeps serving. No running master is a warning on a first
 * deploy only: with a release live, a pidfile that names no master is a mistake that would keep the old release
 * serving for ever.
 */
export function reloadGunicorn(l: Layout, pidfile: string, release: string, previous?: string): string {
  const newVenv = `${releaseDir(l, release)}/${IN_RELEASE.venv}`
  const oldVenv = previous ? `${releaseDir(l, previous)}/${IN_RELEASE.venv}` : newVenv
  const start = `${l.current}/.venv/bin/python ${l.current}/.venv/bin/gunicorn --chdir ${l.current} --pid ${pidfile} …`
  return script(
    ...PROC,
    `pidfile=${q(pidfile)}`,
    'pid=$(cat "$pidfile" 2>/dev/null || true)',
    'if [ -z "$pid" ] || ! alive "$pid"; then',
    ...(previous
      ? [
          `  echo ${q(`gunicorn-pidfile ${pidfile} names no running Gunicorn master while release ${previous} is live: check the path, or start Gunicorn (see README)`)} >&2`,
          '  exit 1'
        ]
      : [
          `  echo ${q(`${WARN} no running Gunicorn in ${pidfile}: nothing to reload. Start Gunicorn from ${l.current} (see README).`)}`,
          '  exit 0'
        ]),
    'fi',
    `want=$(readlink -f ${q(newVenv)})`,
    // What the master runs, as read before the switch; without it, what the previous release linked.
    `running=$(sed -n "s/^$pid //p" ${q(l.gunicornMaster)} 2>/dev/null || true)`,
    `[ -n "$running" ] && [ "$running" != '?' ] || running=$(readlink -f ${q(oldVenv)})`,
    'if [ "$running" = "$want" ]; then',
    '  old=$(children "$pid")',
    '  kill -HUP "$pid"',
    '  i=0',
    '  while [ $i -lt 600 ]; do',
    '    left=""; for c in $old; do alive "$c" && left="$left $c"; done',
    '    if [ -z "$left" ] && workers_ready "$pid"; then echo "gunicorn $pid reloaded (HUP): new workers ready"; exit 0; fi',
    '    sleep 0.1; i=$((i+1))',
    '  done',
    '  echo "gunicorn $pid did not have new workers ready within 60 s after HUP (old still running:$left)" >&2; exit 1',
    'fi',
    'echo "gunicorn master $pid runs $running; the release needs $want: USR2"',
    'kill -USR2 "$pid"',
    // The new master writes <pidfile>.2 while the old one lives (it takes <pidfile> once the old one is gone).
    'i=0; new=""',
    'while [ $i -lt 600 ]; do',
    '  if [ -z "$new" ]; then',
    '    for f in "$pidfile.2" "$pidfile"; do',
    '      n=$(cat "$f" 2>/dev/null || true)',
    '      if [ -n "$n" ] && [ "$n" != "$pid" ] && alive "$n"; then new=$n; break; fi',
    '    done',
    '  fi',
    '  alive "$pid" || { [ -z "$new" ] || stop_master "$new"; echo "gunicorn master $pid died during USR2" >&2; exit 1; }',
    '  if [ -n "$new" ]; then',
    '    alive "$new" || { echo "new gunicorn master $new exited while starting (see Gunicorn\'s log); the old one keeps serving" >&2; exit 1; }',
    '    workers_ready "$new" && break',
    '  fi',
    '  sleep 0.1; i=$((i+1))',
    'done',
    'if [ -z "$new" ]; then echo "no new gunicorn master within 60 s after USR2; the old one keeps serving" >&2; exit 1; fi',
    'if ! workers_ready "$new"; then',
    '  stop_master "$new"',
    '  echo "new gunicorn master $new had no ready workers within 60 s after USR2: stopped it; the old one keeps serving" >&2; exit 1',
    'fi',
    'got=$(venv_of "$new")',
    'if [ "$got" != "$want" ]; then',
    '  stop_master "$new"',
    // deploy-path and the pidfile are the user's: they reach the shell through q() only.
    `  echo "a USR2 re-exec of gunicorn runs $got, not the release's virtualenv $want: stopped the new master; the old one keeps serving." ${q(`Start Gunicorn through ${l.current}/.venv, e.g. ${start}`)} >&2`,
    '  exit 1',
    'fi',
    'kill -TERM "$pid"',
    // The old master finishes its requests (graceful_timeout, 30 s by default); the new one then takes the pidfile.
    // Gunicorn's master notices it was orphaned on its loop's next wake-up (up to 1 s); a CHLD wakes it at once.
    'i=0; while [ $i -lt 600 ] && { alive "$pid" || [ "$(cat "$pidfile" 2>/dev/null)" != "$new" ]; }; do alive "$pid" || kill -CHLD "$new" 2>/dev/null; sleep 0.1; i=$((i+1)); done',
    `[ "$(cat "$pidfile" 2>/dev/null)" = "$new" ] || echo ${q(`${WARN} the old gunicorn master is still stopping; ${pidfile} names the new one once it has gone`)}`,
    'echo "gunicorn re-executed (USR2): new master $new with workers ready in $want, old master $pid stopped"'
  )
}

/**
 * Reloads a systemd unit and waits for its new workers. systemd tracks the master it started, so a USR2
 * re-exec (whose old master exits) would make it stop the whole unit (gunicorn issue 2856): when the release
 * needs another virtualenv than the master runs, the unit is restarted instead (with a socket unit holding the
 * listening socket, requests wait instead of failing; see README). A unit that is not active (the first deploy
 * after `mode: setup`, whose units wait for a release) is started.
 */
export function reloadService(l: Layout, service: string, release: string): string {
  const newVenv = `${releaseDir(l, release)}/${IN_RELEASE.venv}`
  return script(
    ...PROC,
    `unit=${q(service)}`,
    'pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true)',
    '[ "$pid" != 0 ] || pid=""',
    `want=$(readlink -f ${q(newVenv)})`,
    `running=$(sed -n "s/^$pid //p" ${q(l.gunicornMaster)} 2>/dev/null || true)`,
    // Not active (the first deploy after setup: its units wait for a release): started, not reloaded.
    'if ! systemctl is-active -q "$unit"; then',
    '  echo "$unit is not active: systemctl start"',
    '  sudo -n systemctl start "$unit"; how=started',
    '  pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true); old=""',
    'elif [ -n "$pid" ] && [ -n "$running" ] && [ "$running" != \'?\' ] && [ "$running" != "$want" ]; then',
    '  echo "$unit runs $running; the release needs $want: systemctl restart"',
    '  sudo -n systemctl restart "$unit"; how=restarted',
    '  pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true); old=""',
    'else',
    '  old=$([ -z "$pid" ] || children "$pid")',
    '  sudo -n systemctl reload "$unit"; how=reloaded',
    'fi',
    'if [ -z "$pid" ] || [ "$pid" = 0 ]; then echo "$unit has no main process to wait for"; exit 0; fi',
    'i=0',
    'while [ $i -lt 600 ]; do',
    '  left=""; for c in $old; do alive "$c" && left="$left $c"; done',
    '  if [ -z "$left" ] && workers_ready "$pid"; then echo "$unit $how: new workers of $pid ready"; exit 0; fi',
    '  sleep 0.1; i=$((i+1))',
    'done',
    'echo "$unit: no new workers ready within 60 s" >&2; exit 1'
  )
}
