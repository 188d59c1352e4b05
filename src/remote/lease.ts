/**
 * The deploy lock and its lease: one deploy at a time per deploy-path, and no step of a deploy that lost its
 * lease ever runs (fencing).
 */
import { type Layout, leaseDir } from './layout.js'
import { q, words } from './quote.js'
import { script } from './shell.js'

/** Seconds without a renewal after which the lease ends: the holder kills the deploy's steps and frees the lock. */
export const LEASE_SECONDS = 30
/** Seconds between renewals the runner sends (a line on the holder's stdin). */
export const RENEW_SECONDS = 5
/** Exit code of a step refused because its deploy no longer holds the lease. */
export const LEASE_LOST = 76

/** Starts the lines `holdLock` prints as it goes, so a lock that hangs can say where. */
export const LOCK_STAGE = 'django-deploy-lock-stage:'

/** Kills the process group of every step file in directory `$1` (a zombie-only group is harmless). */
const KILL_STEPS = `kill_steps() { for s in "$1"/step-*; do [ -f "$s" ] || continue; kill -9 -"\${s##*/step-}" 2>/dev/null || true; rm -f "$s"; done; }`

/**
 * Takes the deploy lock (a kernel `flock` on `.deploy.lock`, as before) and holds it as a lease: the runner
 * writes a line to this command's stdin every RENEW_SECONDS; `release` ends it. When renewals stop for
 * `leaseSeconds` (a frozen or vanished runner whose TCP connection stays open) or stdin ends without `release`
 * (the connection dropped), the holder kills the process groups of that deploy's running steps, withdraws its
 * token from `.deploy.lock.lease` (so none of its later commands runs: see `fenced`) and exits, which frees the
 * lock. Steps left by a holder that was itself killed are killed by the next holder before it starts.
 */
export function holdLock(
  l: Layout,
  timeoutSeconds: number,
  holder: string,
  token: string,
  leaseSeconds = LEASE_SECONDS
): string {
  const dir = leaseDir(l, token)
  return script(
    KILL_STEPS,
    `echo ${LOCK_STAGE}mkdir`,
    `mkdir -p ${q(l.root)}`,
    `echo ${LOCK_STAGE}open`,
    `exec 9>>${q(l.lock)}`,
    `echo ${LOCK_STAGE}flock`,
    `if ! flock -w ${Math.floor(timeoutSeconds)} 9; then`,
    `  echo ${q(`deploy lock on ${l.root} still held after ${timeoutSeconds} s by:`)} "$(cat ${q(l.holder)} 2>/dev/null || echo unknown)" >&2`,
    '  exit 75',
    'fi',
    `echo ${LOCK_STAGE}take`,
    `printf '%s\\n' ${q(holder)} > ${q(l.holder)}`,
    // The old lease is withdrawn before its steps are killed: a step of it registering meanwhile sees it gone.
    `rm -f ${q(l.lease)}`,
    `if [ -d ${q(l.leases)} ]; then for old in ${q(l.leases)}/*; do kill_steps "$old"; done; rm -rf ${q(l.leases)}; fi`,
    `dir=${q(dir)}`,
    'mkdir -p "$dir"',
    'date +%s > "$dir/renewed"',
    `printf '%s\\n' ${q(token)} > ${q(l.lease + '.tmp')}`,
    `mv -f ${q(l.lease + '.tmp')} ${q(l.lease)}`,
    // From here on nothing may end the holder early: a closed stdout (the session is gone) must not kill it.
    'set +e',
    "trap '' PIPE HUP",
    'exec 3<&0',
    // The reader wakes the loop below (USR1 ends its `wait`) as soon as the lease ends: a released lock is free
    // at once, not at the next tick.
    'main=$$',
    "trap ':' USR1",
    // A renewal replaces the file in one rename: the check below never reads a half-written (empty) one.
    '( exec 9>&-; trap - USR1; while IFS= read -r line; do if [ "$line" = release ]; then echo released > "$dir/ended"; kill -USR1 "$main"; exit 0; fi; date +%s > "$dir/renewed.tmp" && mv -f "$dir/renewed.tmp" "$dir/renewed"; done; echo "connection closed" > "$dir/ended"; kill -USR1 "$main" ) <&3 &',
    'reader=$!',
    'exec 3<&-',
    'echo locked',
    'why=""',
    'while [ -z "$why" ]; do',
    '  sleep 1 & tick=$!',
    '  wait "$tick"; kill "$tick" 2>/dev/null',
    '  if [ -f "$dir/ended" ]; then why=$(cat "$dir/ended"); break; fi',
    '  last=$(cat "$dir/renewed" 2>/dev/null)',
    `  [ $(( $(date +%s) - \${last:-0} )) -lt ${Math.floor(leaseSeconds)} ] || why="no renewal for ${Math.floor(leaseSeconds)} s"`,
    'done',
    // The token is withdrawn before the steps are killed: a step registering meanwhile either is seen by
    // kill_steps or sees the token gone when it checks again (see `fenced`), never neither.
    `[ "$(cat ${q(l.lease)} 2>/dev/null)" != ${q(token)} ] || rm -f ${q(l.lease)}`,
    'if [ "$why" != released ]; then',
    '  kill -9 "$reader" 2>/dev/null',
    '  kill_steps "$dir"',
    `  echo "deploy lease ended ($why): killed the deploy's steps, lock freed" >&2`,
    'fi',
    'rm -rf "$dir"',
    'exit 0'
  )
}

/**
 * Runs one step command under the lease: refused unless `token` still holds it, and run in its own session and
 * process group (setsid), registered under the lease so a timeout, a cancel or the end of the lease kills the
 * whole group (pip, migrate and whatever they started). A refusal prints `mark` (a line only the runner knows,
 * per deploy) on stderr: the runner tells a lost lease by it, never by an exit code a project command may use.
 */
export function fenced(l: Layout, token: string, body: string, mark: string): string {
  const dir = leaseDir(l, token)
  const refuse = `{ echo ${q(`this deploy no longer holds the deploy lock on ${l.root} (its lease ended or another deploy took it): refusing to change anything`)} >&2; echo ${q(mark)} >&2; exit ${LEASE_LOST}; }`
  // The step registers itself, in its own group, then checks the lease again before its body runs: the holder
  // withdraws the token before it kills the registered steps, so a step registering just as the lease ends
  // either is killed or refuses.
  const start = `touch "$1/step-$$" 2>/dev/null && [ "$(cat "$2" 2>/dev/null)" = "$3" ] || { rm -f "$1/step-$$"; ${refuse} }; exec /bin/sh -c "$4"`
  return [
    `if [ "$(cat ${q(l.lease)} 2>/dev/null)" != ${q(token)} ] || [ ! -d ${q(dir)} ]; then ${refuse}; fi`,
    'exec 3<&0',
    `setsid /bin/sh -c ${q(start)} fenced ${words(dir, l.lease, token, body)} <&3 3<&- &`,
    'pid=$!',
    'exec 3<&-',
    'wait "$pid"; rc=$?',
    `rm -f ${q(dir)}/step-$pid`,
    'exit $rc'
  ].join('\n')
}

/** Kills the process groups of the deploy's running steps (a timed-out or cancelled step). */
export function killSteps(l: Layout, token: string): string {
  return [KILL_STEPS, `kill_steps ${q(leaseDir(l, token))}`].join('\n')
}
