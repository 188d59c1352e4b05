/**
 * Remote commands as data: small pure functions returning POSIX sh scripts. Nothing here runs anything;
 * the runner sends these over SSH and the dry run prints them. Every variable part goes through `q`.
 */
import { MANIFEST } from '../release/incremental.js'
import type { Deps } from '../release/source.js'
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
  /** The token of the deploy that holds the lock's lease (fencing: a step runs only while it holds this). */
  lease: string
  /** Per lease token: its last renewal time and one `step-<pgid>` file per running step. */
  leases: string
  /** One line per release that went live (after its health check): `<time> live|rollback <release>`. */
  history: string
  /**
   * The static files of every kept release, at the same URLs (hard links into each release's STATIC_ROOT):
   * what nginx should serve as /static/, so a page of the previous release still finds its hashed files.
   */
  static: string
}

export function layout(root: string): Layout {
  return {
    root,
    releases: `${root}/releases`,
    shared: `${root}/shared`,
    current: `${root}/current`,
    venvs: `${root}/venvs`,
    lock: `${root}/.deploy.lock`,
    lease: `${root}/.deploy.lock.lease`,
    leases: `${root}/.deploy.lock.d`,
    history: `${root}/.deploy-history`,
    static: `${root}/static`
  }
}

const releaseDir = (l: Layout, release: string): string => `${l.releases}/${release}`

/** Strict mode and a umask that keeps release files world-readable, so nginx can serve static files. */
function script(...lines: string[]): string {
  return ['set -eu', 'umask 022', ...lines].join('\n')
}

/**
 * Reads what the deploy needs to know, changing nothing: the live release and its exact link, the releases
 * present in the order they were uploaded (their REVISION file is written once, at upload), and the history
 * of releases that went live (its last 500 lines).
 */
export function inspect(l: Layout): string {
  return script(
    `for tool in tar flock; do command -v "$tool" >/dev/null 2>&1 || { echo "the server has no $tool; install it (apt-get install $tool)" >&2; exit 127; }; done`,
    `if [ -L ${q(l.current)} ]; then echo "current=$(basename "$(readlink ${q(l.current)})")"; echo "current-link=$(readlink ${q(l.current)})"; fi`,
    `if [ -d ${q(l.releases)} ]; then cd ${q(l.releases)} && ls -1tr -- */REVISION 2>/dev/null | sed 's|/REVISION$||; s/^/release=/'; fi`,
    `if [ -f ${q(l.history)} ]; then echo history-file=yes; tail -n 500 ${q(l.history)} | sed 's/^/history=/'; fi`
  )
}

export interface HistoryEntry {
  event: 'live' | 'rollback'
  release: string
}

export interface HostState {
  current?: string
  /** What `current` points at, exactly as the link reads (a revert puts back this very link). */
  currentLink?: string
  /** Oldest upload first. */
  releases: string[]
  /** Releases that went live, oldest first; undefined on a server deployed before the history was kept. */
  history?: HistoryEntry[]
}

export function parseInspect(stdout: string): HostState {
  const state: HostState = { releases: [] }
  for (const line of stdout.split('\n')) {
    const [k, ...rest] = line.split('=')
    const v = rest.join('=').trim()
    if (!v) continue
    if (k === 'current') state.current = v
    else if (k === 'current-link') state.currentLink = v
    else if (k === 'release') state.releases.push(v)
    else if (k === 'history-file') state.history ??= []
    else if (k === 'history') {
      const [, event, release] = v.split(/\s+/)
      if ((event === 'live' || event === 'rollback') && release)
        (state.history ??= []).push({ event, release })
    }
  }
  return state
}

/** Prints the commit a release was built from (its REVISION file, written at upload), changing nothing. */
export function readRevision(l: Layout, release: string): string {
  return script(`cat -- ${q(`${releaseDir(l, release)}/REVISION`)}`)
}

/** Appends to the history: `release` went live (a deploy) or was made live again (a rollback). */
export function recordLive(l: Layout, release: string, event: HistoryEntry['event']): string {
  return script(
    `printf '%s %s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" ${words(event, release)} >> ${q(l.history)}`
  )
}

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
  const dir = `${l.leases}/${token}`
  return script(
    KILL_STEPS,
    `echo ${LOCK_STAGE}mkdir`,
    `mkdir -p ${q(l.root)}`,
    `echo ${LOCK_STAGE}open`,
    `exec 9>>${q(l.lock)}`,
    `echo ${LOCK_STAGE}flock`,
    `if ! flock -w ${Math.floor(timeoutSeconds)} 9; then`,
    `  echo ${q(`deploy lock on ${l.root} still held after ${timeoutSeconds} s by:`)} "$(cat ${q(l.lock + '.holder')} 2>/dev/null || echo unknown)" >&2`,
    '  exit 75',
    'fi',
    `echo ${LOCK_STAGE}take`,
    `printf '%s\\n' ${q(holder)} > ${q(l.lock + '.holder')}`,
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
  const dir = `${l.leases}/${token}`
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
  return [KILL_STEPS, `kill_steps ${q(`${l.leases}/${token}`)}`].join('\n')
}

/**
 * Where a release whose name is already on the server (a re-deploy of an older name) is built: beside it in
 * releases/ (one file system, so `place` is a rename), under a name no release can have (release names start
 * with a letter or digit) and that `inspect` never lists. The old release stays whole until `place`.
 */
export function buildName(release: string): string {
  return `.build-${release}`
}

/** Where `place` keeps the release it replaced until the deploy succeeded (a revert puts it back). */
const replacedName = (release: string): string => `.replaced-${release}`

/**
 * Makes the directories and clears what an earlier failed attempt left in the build directory (`build`: the
 * release's own directory for a new name, `buildName(release)` for a name already on the server; never the live
 * release).
 */
export function prepare(l: Layout, release: string, build = release): string {
  const dir = releaseDir(l, build)
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

/**
 * Puts a release built in `buildName(release)` in place of the release of the same name, once every step
 * before the switch passed: two renames in releases/, while `current` points at another release (`prepare`
 * refused the live name). The old one is kept as `.replaced-<release>` until the cleanup, so a failed publish
 * puts it back (`restoreReplaced`).
 */
export function place(l: Layout, release: string): string {
  const [build, replaced] = [buildName(release), replacedName(release)]
  return script(
    `cd ${q(l.releases)}`,
    `rm -rf ${q(replaced)}`,
    `if [ -e ${q(release)} ] || [ -L ${q(release)} ]; then mv -T ${words(release, replaced)}; fi`,
    `mv -T ${words(build, release)}`,
    `echo ${q(`release ${release} rebuilt and put in place of the one of the same name (kept as ${replaced} until the deploy succeeds)`)}`
  )
}

/** After a failed publish of a release put in place by `place` (and `current` back elsewhere): the old one again. */
export function restoreReplaced(l: Layout, release: string): string {
  const replaced = replacedName(release)
  return script(
    `cd ${q(l.releases)}`,
    // Never under a live link: the revert's switch must have moved `current` away first.
    `[ "$(basename "$(readlink ${q(l.current)} 2>/dev/null)")" != ${q(release)} ] || exit 0`,
    `if [ -d ${q(replaced)} ]; then rm -rf ${q(release)}; mv -T ${words(replaced, release)}; echo ${q(`release ${release} as it was before this deploy is back in place`)}; fi`
  )
}

/**
 * Reads the new release's manifest (gzip) on stdin and compares it with the live release's: a record with
 * the same mode, hash and path whose live file still is what was deployed (content hashed as git hashes a
 * blob, the executable bit, a symlink's target) can be reused. Keeps the new manifest and the reusable paths
 * (NUL-separated) for the upload step, and prints `reuse=<index ranges>` of the reusable records. Live files
 * that changed on the server since are named in a warning (they are sent again). Changes nothing live.
 * Arguments: live release dir, file for the new manifest, file for the reusable paths.
 */
export const REUSABLE_PY = [
  'import hashlib, os, sys, zlib',
  'live, keep_manifest, keep_reuse = (os.fsencode(a) for a in sys.argv[1:4])',
  'new = zlib.decompress(sys.stdin.buffer.read(), 31)',
  'try:',
  `    old = open(os.path.join(live, b${JSON.stringify(MANIFEST)}), "rb").read()`,
  'except FileNotFoundError:',
  '    old = b""',
  'have = {}',
  'for record in old.split(b"\\0"):',
  '    head, sep, path = record.partition(b"\\t")',
  '    if sep: have[path] = head',
  'reuse, indexes, changed = [], [], []',
  'for i, record in enumerate(r for r in new.split(b"\\0") if r):',
  '    head, sep, path = record.partition(b"\\t")',
  '    if not sep or have.get(path) != head or b"\\xef\\xbf\\xbd" in path: continue',
  '    mode, kind, sha = head.split(b" ")',
  '    if kind != b"blob": continue',
  '    full = os.path.join(live, path)',
  '    try:',
  '        if mode == b"120000":',
  '            data = os.readlink(full) if os.path.islink(full) else None',
  '        elif os.path.islink(full) or not os.path.isfile(full) or (os.stat(full).st_mode & 0o100 != 0) != (mode == b"100755"):',
  '            data = None',
  '        else:',
  '            data = open(full, "rb").read()',
  '    except OSError:',
  '        data = None',
  '    h = None if data is None else hashlib.new("sha1" if len(sha) == 40 else "sha256", b"blob %d\\0" % len(data) + data).hexdigest().encode()',
  '    if h == sha:',
  '        reuse.append(path)',
  '        indexes.append(i)',
  '    else:',
  '        changed.append(path.decode("utf-8", "replace"))',
  'def keep(name, data):',
  '    with open(name + b".tmp", "wb") as f: f.write(data)',
  '    os.replace(name + b".tmp", name)',
  'keep(keep_manifest, new)',
  'keep(keep_reuse, b"".join(p + b"\\0" for p in reuse))',
  'if changed:',
  `    print("${WARN} " + str(len(changed)) + " file(s) of the live release differ from what was deployed (changed on the server?), sent again: " + ", ".join(changed[:5]) + (" …" if len(changed) > 5 else ""), flush=True)`,
  'ranges, start = [], None',
  'for n, i in enumerate(indexes):',
  '    if start is None: start = i',
  '    if n + 1 == len(indexes) or indexes[n + 1] != i + 1:',
  '        ranges.append(str(start) if start == i else f"{start}-{i}")',
  '        start = None',
  'print("reuse=" + ",".join(ranges))'
].join('\n')

/** Where the manifest step leaves the new release's manifest and reusable paths for its upload. */
function incoming(l: Layout, release: string): { manifest: string; reuse: string } {
  return {
    manifest: `${l.root}/.deploy-incoming/${release}.manifest`,
    reuse: `${l.root}/.deploy-incoming/${release}.reuse`
  }
}

/** Which files of `release` the host has unchanged in its live release (REUSABLE_PY; the manifest on stdin). */
export function reusableFiles(l: Layout, release: string, live: string, python: string): string {
  const keep = incoming(l, release)
  return script(
    `mkdir -p ${q(`${l.root}/.deploy-incoming`)}`,
    words(python, '-c', REUSABLE_PY, releaseDir(l, live), keep.manifest, keep.reuse)
  )
}

/**
 * Links the paths listed (NUL-separated) in a file from the live release into the new one: a hard link (a copy
 * where the file system refuses one), a symlink made anew. A hard link is the live file itself: release files
 * are read-only (see `unpack`), so a step that writes one in place fails (EACCES) instead of changing what is
 * live; root ignores modes, so as root the files are copied. Arguments: new release dir, live release dir, list.
 */
export const REUSE_PY = [
  'import os, shutil, sys',
  'new, live, listing = (os.fsencode(a) for a in sys.argv[1:4])',
  'paths = [p for p in open(listing, "rb").read().split(b"\\0") if p]',
  'root = os.geteuid() == 0',
  'for p in paths:',
  '    src, dst = os.path.join(live, p), os.path.join(new, p)',
  '    os.makedirs(os.path.dirname(dst), exist_ok=True)',
  '    if os.path.islink(src):',
  '        os.symlink(os.readlink(src), dst)',
  '    else:',
  '        try:',
  '            if root: raise OSError("root ignores read-only modes: a copy")',
  '            os.link(src, dst)',
  '        except OSError:',
  '            shutil.copy2(src, dst)',
  'os.remove(listing)',
  'print(f"{len(paths)} unchanged file(s) taken from the live release")'
].join('\n')

/**
 * Unpacks the release archive read from stdin and records the commit it came from. With `reuseFrom` (the
 * live release, after the manifest step), the archive holds only the files that changed: the others are
 * linked from the live release, and the manifest is the one the manifest step kept. Release files end read-only.
 * `build`: the directory it goes to under releases/ (plan.ts `buildDir`), `release` names the manifest kept.
 */
export function unpack(
  l: Layout,
  release: string,
  revision: string,
  reuseFrom?: { release: string; python: string },
  build = release
): string {
  const dir = releaseDir(l, build)
  const keep = incoming(l, release)
  return script(
    ...(reuseFrom ? [`mv -f ${words(keep.manifest, `${dir}/${MANIFEST}`)}`] : []),
    `tar -xzf - -C ${q(dir)} --no-same-owner --no-same-permissions`,
    ...(reuseFrom
      ? [words(reuseFrom.python, '-c', REUSE_PY, dir, releaseDir(l, reuseFrom.release), keep.reuse)]
      : []),
    `chmod -R a+rX ${q(dir)}`,
    `printf '%s\\n' ${q(revision)} > ${q(dir + '/REVISION')}`,
    // Release files are read-only (directories stay writable: Python's caches, collectstatic): files reused by
    // the next release are hard links to these, so nothing may write one in place.
    `find ${q(dir)} -type f -exec chmod a-w {} +`
  )
}

/** A shared file that holds secrets by convention: `.env`, `.env.production`, `production.env`. */
const isEnvFile = (path: string): boolean => /(^|\/)(\.env(\.[^/]*)?|[^/]*\.env)$/.test(path)

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
      // A `.env` copied from the release is made under umask 077 (never readable by others, not for a moment) and
      // is 0600, owned by the deploy user; another file keeps the release's read bits and gets its owner's write
      // bit back (release files are read-only).
      const copy = isEnvFile(p)
        ? `(umask 077; cp ${words(inRelease, shared)}); chmod 600 ${q(shared)}`
        : `cp ${words(inRelease, shared)}; chmod u+w ${q(shared)}`
      lines.push(
        `if [ ! -e ${q(shared)} ]; then`,
        `  if [ -f ${q(inRelease)} ] && [ ! -L ${q(inRelease)} ]; then ${copy}; else`,
        `    (umask 077; : > ${q(shared)})`,
        `    echo ${q(`${WARN} ${shared} did not exist; created it empty. Put the server's settings there.`)}`,
        '  fi',
        'fi'
      )
    } else {
      lines.push(
        `if [ ! -e ${q(shared)} ]; then`,
        `  if [ -d ${q(inRelease)} ] && [ ! -L ${q(inRelease)} ]; then cp -R ${words(inRelease, shared)}; chmod -R u+w ${q(shared)}; else mkdir -p ${q(shared)}; fi`,
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
  /** What the virtualenv is made of (release/source.ts depsOf()); set, a copy of the live one may be grown. */
  deps?: Deps
}

/**
 * What `python -m venv` puts in site-packages through ensurepip (pip; setuptools with it up to Python 3.11),
 * as names in the donor's site-packages. Seeding copies exactly these.
 */
const SEED = [
  'pip',
  'pip-*.dist-info',
  'setuptools',
  'setuptools-*.dist-info',
  'pkg_resources',
  '_distutils_hack',
  'distutils-precedence.pth'
]

/**
 * Rewrites a copied virtualenv's own path in its bin/ scripts (shebangs, activate) and pyvenv.cfg: argv donor,
 * target. Each file is written anew and renamed over the old name (the copy is made of hard links).
 * Only text files; links (bin/python) are left as they are.
 */
const REPOINT_PY = [
  'import os, re, sys',
  'donor, target = sys.argv[1].encode(), sys.argv[2].encode()',
  "pattern = re.compile(re.escape(donor) + rb'(?![\\w.-])')",
  "bindir = os.path.join(sys.argv[2], 'bin')",
  "for p in [os.path.join(bindir, n) for n in os.listdir(bindir)] + [os.path.join(sys.argv[2], 'pyvenv.cfg')]:",
  '    if os.path.islink(p) or not os.path.isfile(p):',
  '        continue',
  "    with open(p, 'rb') as f:",
  '        data = f.read()',
  "    if donor not in data or b'\\0' in data[:4096]:",
  '        continue',
  '    mode = os.stat(p).st_mode',
  // A new file renamed over the old name: the copy's files are hard links to the live virtualenv's.
  "    tmp = p + '.django-deploy-tmp'",
  "    with open(tmp, 'wb') as f:",
  '        f.write(pattern.sub(target, data))',
  '    os.chmod(tmp, mode)',
  '    os.replace(tmp, p)'
].join('\n')

/** Where a virtualenv records what it was made of (`deps`: a basis line, then its lines). */
const DEPS_FILE = '.django-deploy-deps'

/**
 * Makes (or reuses) the virtualenv for the release's dependencies under venvs/<key> and links it as
 * <release>/.venv. A virtualenv is built in place (its scripts carry absolute paths) and marked complete only
 * at the end, so a half-built one from a killed deploy is rebuilt, never used.
 *
 * Unchanged requirements (same key) run no pip at all. Requirements that only add exact pins to the live
 * virtualenv's (`deps`, recorded in it as DEPS_FILE) make the new one a hard-linked copy of it where pip installs
 * only what is new (see README, Choices). Other changes make a new virtualenv without paying
 * ensurepip's bootstrap (≈ 4 s: it runs pip to install pip and setuptools from wheels and compiles them):
 * the venv is made `--without-pip` and seeded with the pip (and setuptools) of a complete virtualenv already
 * on the server (the live release's first), copied with their compiled files and mtimes, and the `pip*`
 * scripts re-pointed at the new interpreter. So the new virtualenv has a working pip of the same version, as
 * a normal one would. With no such donor for the same Python version (first deploy), or with `--without-pip`
 * or `--upgrade-deps` in venv-options, it is made the normal way.
 */
export function venv(l: Layout, release: string, o: VenvOptions): string {
  const target = `${l.venvs}/${o.key}`
  const done = `${target}/.django-deploy-complete`
  // Requirements that only add lines to the live virtualenv's: a copy of it, where pip installs only what is new
  // (the live one is not touched). Not when anything in it names a path outside bin/ that pip would not redo
  // (editable installs, .pth files, a path of the donor outside its scripts).
  const grow = o.deps
    ? [
        `deps=${q(o.deps.lines.join('\n'))}`,
        `donor=$(readlink -f ${q(`${l.current}/.venv`)} 2>/dev/null || true)`,
        `if [ -n "$donor" ] && [ -f "$donor/.django-deploy-complete" ] && [ "$(head -n 1 "$donor/${DEPS_FILE}" 2>/dev/null)" = ${q(o.deps.basis)} ] \\`,
        `  && tail -n +2 "$donor/${DEPS_FILE}" | { while IFS= read -r line; do printf '%s\\n' "$deps" | grep -Fxq -e "$line" || exit 1; done; } \\`,
        `  && ! ls "$donor"/lib/python*/site-packages 2>/dev/null | grep -v '^distutils-precedence\\.pth$' | grep -Eq '\\.pth$|\\.egg-link$|^__editable__' \\`,
        `  && ! grep -rlsF --exclude-dir=__pycache__ --exclude-dir=bin --exclude=pyvenv.cfg -e "$donor" "$donor" >/dev/null; then`,
        // Hard links (a copy of 25 MB of small files costs seconds of disk writes): pip removes a file before it
        // writes one, moves uninstalled ones away and compiles through a rename, and what is rewritten here is
        // replaced by a rename, so nothing writes into a file the live virtualenv shares.
        // A copy that fails (links refused: a file someone else owns, with fs.protected_hardlinks) is no error:
        // the virtualenv is built as when there is nothing to copy.
        `  if cp -al "$donor" ${q(target)} 2>/dev/null && rm -f ${q(done)} ${q(`${target}/${DEPS_FILE}`)} && ${words(o.python, '-c', REPOINT_PY)} "$donor" ${q(target)}; then`,
        '    grown=yes',
        '    echo "virtualenv copied from the live one ($donor): pip adds only the new requirements"',
        '  else',
        `    rm -rf ${q(target)}`,
        '    echo "could not copy the live virtualenv ($donor): building a new one"',
        '  fi',
        'fi'
      ]
    : []
  const canSeed = !o.venvOptions.some(v => v === '--without-pip' || v === '--upgrade-deps')
  const normal = `${words(o.python, '-m', 'venv', ...o.venvOptions, target)}`
  const build = canSeed
    ? [
        // A donor: a complete virtualenv, the live release's first (its pip is the one that last worked).
        'donor=""',
        `for v in ${q(`${l.current}/.venv`)} ${q(l.venvs)}/*; do`,
        '  d=$(readlink -f "$v" 2>/dev/null) || continue',
        `  if [ -f "$d/.django-deploy-complete" ] && [ -d "$d/lib" ]; then donor=$d; break; fi`,
        'done',
        'seeded=""',
        'if [ -n "$donor" ]; then',
        `  ${words(o.python, '-m', 'venv', '--without-pip', ...o.venvOptions, target)}`,
        // Same Python version only: site-packages is lib/pythonX.Y/site-packages in both.
        `  sp=$(cd ${q(target)} && ls -d lib/python*/site-packages | head -n 1)`,
        '  if [ -n "$sp" ] && [ -f "$donor/$sp/pip/__init__.py" ]; then',
        `    for e in ${SEED.join(' ')}; do`,
        `      for f in "$donor/$sp"/$e; do [ ! -e "$f" ] || cp -pR "$f" ${q(target)}/"$sp"/; done`,
        '    done',
        // pip's scripts start with `#!<donor>/bin/python…`; a long path gets a /bin/sh launcher instead, which
        // names the donor further down: those are left out (`python -m pip` works all the same).
        '    for f in "$donor"/bin/pip*; do',
        '      [ -f "$f" ] || continue',
        '      first=$(head -n 1 "$f")',
        '      case "$first" in',
        '        "#!$donor/bin/python"*)',
        `          { printf '#!%s%s\\n' ${q(target)} "\${first#"#!$donor"}"; tail -n +2 "$f"; } > ${q(target)}/bin/"\${f##*/}"`,
        `          chmod 755 ${q(target)}/bin/"\${f##*/}" ;;`,
        '      esac',
        '    done',
        '    seeded=yes',
        '    echo "virtualenv seeded with pip from $donor (no pip bootstrap)"',
        '  else',
        `    rm -rf ${q(target)}`,
        '  fi',
        'fi',
        `[ -n "$seeded" ] || ${normal}`
      ]
    : [normal]
  return script(
    `if [ -f ${q(done)} ]; then`,
    `  echo ${q(`reusing virtualenv ${o.key} (requirements unchanged)`)}`,
    'else',
    `  rm -rf ${q(target)}`,
    '  grown=""',
    ...grow.map(line => `  ${line}`),
    '  if [ -z "$grown" ]; then',
    ...build.map(line => `    ${line}`),
    '  fi',
    ...(o.hasRequirements
      ? [
          `  cd ${q(releaseDir(l, release))}`,
          `  ${words(`${target}/bin/python`, '-m', 'pip', 'install', '--disable-pip-version-check', ...o.pipArgs, '-r', 'requirements.txt')}`
        ]
      : []),
    ...(o.deps ? [`  printf '%s\\n%s\\n' ${q(o.deps.basis)} "$deps" > ${q(`${target}/${DEPS_FILE}`)}`] : []),
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

/** Printed when a step fails on a write it may not do: a release file written in place. */
const READ_ONLY_HINT =
  'release files are read-only: files unchanged since the live release are the live files themselves (hard links), so a step that writes one in place would change what is live. Write new files (STATIC_ROOT, a shared path) or replace a file by renaming a new one over it.'

/**
 * Runs several manage.py commands in ONE interpreter (Django is set up once, not once per command), printing
 * `<mark> <name> <exit code>` after each and stopping at the first that fails. A command with `python` runs
 * that code instead of manage.py, with `args` as its sys.argv[1:], in the Django the commands before it set up.
 */
export function manageMany(
  l: Layout,
  release: string,
  mark: string,
  commands: { name: string; args: string[]; python?: string }[]
): string {
  const py = [
    'import json, runpy, sys, traceback',
    'mark, commands = sys.argv[1], json.loads(sys.argv[2])',
    'for name, args, code in commands:',
    "    sys.argv = ['manage.py', *args]",
    '    status = 0',
    '    try:',
    '        if code is None:',
    "            runpy.run_path('manage.py', run_name='__main__')",
    '        else:',
    // Code run first in its process (a fleet's health check after the primary host migrated) sets Django up
    // the way manage.py does, quietly.
    '            from django.apps import apps',
    '            if not apps.ready:',
    '                import contextlib, os',
    '                with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):',
    '                    sys.argv = ["manage.py", "version"]',
    '                    try:',
    '                        runpy.run_path("manage.py", run_name="__main__")',
    '                    except SystemExit:',
    '                        pass',
    '                sys.argv = ["manage.py", *args]',
    "            exec(compile(code, name, 'exec'), {'__name__': '__django_deploy__'})",
    '    except SystemExit as e:',
    '        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)',
    '    except BaseException as e:',
    '        traceback.print_exc()',
    '        status = 1',
    '        if isinstance(e, PermissionError) or "readonly database" in str(e):',
    `            print(${JSON.stringify(READ_ONLY_HINT)}, file=sys.stderr)`,
    '    sys.stdout.flush()',
    '    sys.stderr.flush()',
    "    print(f'{mark} {name} {status}', flush=True)",
    '    if status:',
    '        sys.exit(status)'
  ].join('\n')
  const list = commands.map(c => [c.name, c.args, c.python ?? null])
  return script(
    `cd ${q(releaseDir(l, release))}`,
    `PYTHONUNBUFFERED=1 ${words('.venv/bin/python', '-c', py, mark, JSON.stringify(list))}`
  )
}

/**
 * Deploy-check findings that stop the deploy under the default `deploy-check: warn` (README, "Django's deploy
 * check"): security.W018, DEBUG on, shows every visitor tracebacks with code, settings and SQL. The others stay
 * warnings: HSTS, SSL redirect and secure cookies depend on where TLS ends, and W009 (SECRET_KEY) is a length
 * heuristic that also flags keys that are random and private.
 */
export const SERIOUS_DEPLOY_CHECKS = ['security.W018'] as const

/**
 * Django's deployment checks (`check --deploy`) with the server's settings, run in the preflight's Django: each
 * warning becomes a WARN line (a warning annotation and a line in the summary). Errors always fail, as
 * `check --deploy` does; warnings fail with `fail`, and the serious ones (SERIOUS_DEPLOY_CHECKS) with `warn` too.
 * Silenced checks (SILENCED_SYSTEM_CHECKS) stay silent. Argument: warn | fail.
 */
export const DEPLOY_CHECK_PY = [
  'import sys',
  'from django.core import checks',
  'fail_on_warnings = sys.argv[1] == "fail"',
  `serious_ids = {${SERIOUS_DEPLOY_CHECKS.map(id => JSON.stringify(id)).join(', ')}}`,
  'found = [m for m in checks.run_checks(include_deployment_checks=True)',
  '         if m.level >= checks.WARNING and not m.is_silenced()]',
  'for m in found:',
  '    text = " ".join(str(m).split())',
  `    print(f"${WARN} check --deploy: {text}", flush=True)`,
  'errors = [m for m in found if m.level >= checks.ERROR]',
  'serious = [m for m in found if m.id in serious_ids]',
  'print(f"check --deploy with the server settings: {len(found)} issue(s), {len(errors)} error(s)")',
  'for m in serious:',
  '    print(f"check --deploy: {m.id} refuses the release under deploy-check warn and fail (only off skips it): {m.msg}", file=sys.stderr)',
  'if errors or serious or (fail_on_warnings and found):',
  '    why = "errors" if errors else "a serious warning" if serious else "warnings, and deploy-check is fail"',
  '    print(f"check --deploy found {why}: this release does not go live", file=sys.stderr)',
  '    sys.exit(1)'
].join('\n')

/**
 * What breaks behind nginx ending TLS, said before it breaks (run after the deploy check, in its Django, when the
 * site is https). Django is asked itself: a form POST as a browser sends it to the site (Host, Origin and Referer
 * of the site's URL; the SECURE_PROXY_SSL_HEADER header as the proxy sets it) goes through the project's own
 * CsrfViewMiddleware, and a refusal by the Origin or Referer check (Django >= 4.0 checks Origin against the
 * scheme Django sees) is reported with the setting that fixes it. GETs, and so the health check, pass either way.
 * SECURE_SSL_REDIRECT without the header redirects every request to itself. Without the setting only the WSGI
 * server can mark a request https (Gunicorn does for X-Forwarded-Proto from its forwarded_allow_ips, 127.0.0.1 by
 * default): the warning says so. Arguments: url (no credentials), warn | fail.
 */
export const PROXY_CHECK_PY = [
  'import sys',
  'from urllib.parse import urlsplit',
  'from django.conf import settings',
  'from django.middleware.csrf import CsrfViewMiddleware',
  'from django.test import RequestFactory',
  'from django.utils.module_loading import import_string',
  'url, mode = sys.argv[1], sys.argv[2]',
  'u = urlsplit(url)',
  'host = u.hostname + (f":{u.port}" if u.port else "")',
  'origin = f"https://{host}"',
  'header = settings.SECURE_PROXY_SSL_HEADER',
  `fix = ("SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https') in the server settings, with "`,
  '       "`proxy_set_header X-Forwarded-Proto $scheme;` in nginx")',
  'unless = ("unless the WSGI server marks requests https itself (Gunicorn trusts X-Forwarded-Proto only from its "',
  '          "forwarded_allow_ips, by default 127.0.0.1)")',
  'def csrf_refusal():',
  '    classes = [import_string(m) for m in settings.MIDDLEWARE]',
  '    csrf = next((c for c in classes if isinstance(c, type) and issubclass(c, CsrfViewMiddleware)), None)',
  '    if csrf is None:',
  '        return None',
  '    meta = {"HTTP_HOST": host, "HTTP_ORIGIN": origin, "HTTP_REFERER": url}',
  '    if header:',
  '        meta[header[0]] = header[1]',
  '    request = RequestFactory().post(u.path or "/", **meta)',
  '    request.session = {}',
  '    middleware = csrf(lambda r: None)',
  '    middleware._reject = lambda request, reason: reason',
  '    try:',
  '        why = middleware.process_view(request, lambda r: None, (), {})',
  '    except Exception:',
  '        return None',
  '    return why if isinstance(why, str) and why.startswith(("Origin checking", "Referer checking")) else None',
  'found = []',
  'if header is None and settings.SECURE_SSL_REDIRECT:',
  '    found.append(f"SECURE_SSL_REDIRECT is on but SECURE_PROXY_SSL_HEADER is not set: behind nginx ending TLS, "',
  '                 f"Django sees http and redirects every request to {origin} to itself, {unless}. Fix: {fix}.")',
  'why = csrf_refusal()',
  'if why and header is None:',
  '    found.append(f"every form POST to {origin} fails with 403 (CSRF: {why}) while GETs and the health check "',
  '                 f"pass: SECURE_PROXY_SSL_HEADER is not set, so behind nginx ending TLS Django sees http, {unless}. "',
  '                 f"Fix: {fix} "',
  `                 f"(or add '{origin}' to CSRF_TRUSTED_ORIGINS).")`,
  'elif why:',
  '    found.append(f"every form POST to {origin} fails with 403 (CSRF: {why}) while GETs and the health check "',
  `                 f"pass. Fix: add '{origin}' to CSRF_TRUSTED_ORIGINS in the server settings (and have nginx pass "`,
  '                 "the Host of the site: `proxy_set_header Host $host;`).")',
  'for text in found:',
  `    print(f"${WARN} behind a TLS proxy: {text}", flush=True)`,
  'print(f"behind a TLS proxy ({origin}): {len(found)} issue(s)")',
  'if found and mode == "fail":',
  '    print("the TLS proxy check found warnings, and deploy-check is fail: this release does not go live", file=sys.stderr)',
  '    sys.exit(1)'
].join('\n')

/**
 * The health-check URL's path requested through Django's full stack (middleware, URL routing, views, the
 * server's settings and database) of the release that is not live yet, with the URL's Host header. A 5xx, an
 * exception or no answer within the timeout stops the deploy before the switch: nothing live has changed.
 * Arguments: url, timeout in seconds.
 */
export const HEALTH_BEFORE_SWITCH_PY = [
  'import signal, sys, traceback',
  'from urllib.parse import urlsplit',
  'from django.test import Client',
  'url, limit = sys.argv[1], float(sys.argv[2])',
  'u = urlsplit(url)',
  'host = u.hostname + (f":{u.port}" if u.port else "")',
  'path = (u.path or "/") + (f"?{u.query}" if u.query else "")',
  'where = f"{path} (Host: {host}) in the new release, with the server settings and database, before the switch"',
  'def out_of_time(*_):',
  '    raise TimeoutError(f"no answer within {limit:g} s")',
  'signal.signal(signal.SIGALRM, out_of_time)',
  'signal.setitimer(signal.ITIMER_REAL, limit)',
  'try:',
  '    r = Client(raise_request_exception=True).get(path, follow=True, secure=u.scheme == "https", HTTP_HOST=host)',
  'except BaseException:',
  '    signal.setitimer(signal.ITIMER_REAL, 0)',
  '    print(f"{where}: raised", file=sys.stderr)',
  '    traceback.print_exc()',
  '    sys.exit(1)',
  'signal.setitimer(signal.ITIMER_REAL, 0)',
  'if r.status_code < 500:',
  '    print(f"{where}: HTTP {r.status_code}")',
  '    sys.exit(0)',
  'body = r.content[:4000].decode("utf-8", "replace").strip().splitlines()[:20]',
  'print(f"{where}: HTTP {r.status_code}", *body, sep="\\n", file=sys.stderr)',
  'sys.exit(1)'
].join('\n')

/**
 * Points `current` at a release with one rename(2): there is no moment without a `current`. `link` is the
 * link's exact text when putting back what was there (default `releases/<release>`).
 */
export function switchTo(l: Layout, release: string, link = `releases/${release}`): string {
  const tmp = `${l.current}.tmp-${release}`
  return script(`rm -f ${q(tmp)}`, `ln -s ${words(link, tmp)}`, `mv -T ${words(tmp, l.current)}`)
}

/** Puts the server back to having no live release (undo of a failed first deploy). */
export function removeCurrent(l: Layout): string {
  return script(`rm -f ${q(l.current)}`)
}

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

/** Where the probe before the switch leaves which virtualenv the running Gunicorn master runs. */
const masterFile = (l: Layout): string => `${l.root}/.gunicorn-master`

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
    `rm -f ${q(masterFile(l))}`,
    'if [ -n "$pid" ] && [ "$pid" != 0 ] && alive "$pid"; then',
    `  printf '%s %s\\n' "$pid" "$(venv_of "$pid")" > ${q(masterFile(l))}`,
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
  const newVenv = `${releaseDir(l, release)}/.venv`
  const oldVenv = previous ? `${releaseDir(l, previous)}/.venv` : newVenv
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
    `running=$(sed -n "s/^$pid //p" ${q(masterFile(l))} 2>/dev/null || true)`,
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
 * listening socket, requests wait instead of failing; see README).
 */
export function reloadService(l: Layout, service: string, release: string): string {
  const newVenv = `${releaseDir(l, release)}/.venv`
  return script(
    ...PROC,
    `unit=${q(service)}`,
    'pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true)',
    '[ "$pid" != 0 ] || pid=""',
    `want=$(readlink -f ${q(newVenv)})`,
    `running=$(sed -n "s/^$pid //p" ${q(masterFile(l))} 2>/dev/null || true)`,
    'if [ -n "$pid" ] && [ -n "$running" ] && [ "$running" != \'?\' ] && [ "$running" != "$want" ]; then',
    '  echo "$unit runs $running; the release needs $want: systemctl restart"',
    '  sudo -n systemctl restart "$unit"',
    '  pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true); old=""',
    'else',
    '  old=$([ -z "$pid" ] || children "$pid")',
    '  sudo -n systemctl reload "$unit"',
    'fi',
    'if [ -z "$pid" ] || [ "$pid" = 0 ]; then echo "$unit has no main process to wait for"; exit 0; fi',
    'i=0',
    'while [ $i -lt 600 ]; do',
    '  left=""; for c in $old; do alive "$c" && left="$left $c"; done',
    '  if [ -z "$left" ] && workers_ready "$pid"; then echo "$unit reloaded: new workers of $pid ready"; exit 0; fi',
    '  sleep 0.1; i=$((i+1))',
    'done',
    'echo "$unit: no new workers ready within 60 s" >&2; exit 1'
  )
}

/** The user's own command line, run as written (it is theirs to quote) in `dir`. */
export function userCommand(dir: string, command: string): string {
  return script(`cd ${q(dir)}`, command)
}

export function releasePath(l: Layout, release: string): string {
  return releaseDir(l, release)
}

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
 * urllib's redirect handling forwards every header to wherever a redirect points: `Authorization` is kept only
 * on the same host with the same scheme and port, or on an upgrade from http to https on the same host.
 */
const SAME_ORIGIN_REDIRECTS_PY = [
  'class Redirects(urllib.request.HTTPRedirectHandler):',
  '    def redirect_request(self, req, fp, code, msg, hdrs, newurl):',
  '        new = super().redirect_request(req, fp, code, msg, hdrs, newurl)',
  '        if new is not None:',
  '            a, b = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)',
  "            if a.hostname != b.hostname or not ((a.scheme, a.port) == (b.scheme, b.port) or (a.scheme, b.scheme) == ('http', 'https')):",
  "                new.remove_header('Authorization')",
  '        return new'
]

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
  const py = [
    'import sys, time, urllib.error, urllib.parse, urllib.request',
    'url, shown, limit, fast = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])',
    'auth = sys.stdin.readline().strip() if len(sys.argv) > 5 else ""',
    "headers = {'Authorization': auth} if auth else {}",
    ...SAME_ORIGIN_REDIRECTS_PY,
    'opener = urllib.request.build_opener(Redirects)',
    'def first(body):',
    "    return ' '.join(body[:300].decode('utf-8', 'replace').split())",
    'deadline = time.time() + limit',
    "last = 'no answer'",
    'bad = 0',
    'while True:',
    '    try:',
    '        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as r:',
    '            if 200 <= r.status < 300:',
    "                print(f'{shown} answered {r.status}')",
    '                sys.exit(0)',
    "            last = f'HTTP {r.status}: ' + first(r.read(300))",
    '            bad = 0',
    '    except urllib.error.HTTPError as e:',
    "        last = f'HTTP {e.code}: ' + first(e.read(300))",
    '        bad = bad + 1 if e.code >= 500 and e.code not in (502, 503, 504) else 0',
    '        if bad >= fast:',
    "            print(f'{shown} answered {last} ({bad} times in a row): the release is broken', file=sys.stderr)",
    '            sys.exit(1)',
    '    except Exception as e:',
    "        last = str(getattr(e, 'reason', e))",
    '        bad = 0',
    '    if time.time() >= deadline:',
    "        print(f'{shown} not healthy after {limit:g} s: {last}', file=sys.stderr)",
    '        sys.exit(1)',
    '    time.sleep(0.5)'
  ].join('\n')
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
    '.venv/bin/python',
    '-c',
    py,
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

/** The file in a release recording its STATIC_ROOT (relative to the release), once its files were linked. */
const STATIC_RECORD = '.django-deploy-static'

/**
 * Keeps static files reachable after their release stops being live: the files of a release's STATIC_ROOT are
 * hard-linked (copied across file systems) into `<deploy-path>/static`, each by an atomic rename. Three uses:
 * - run in the release's Django after collectstatic (argument: the shared directory): records STATIC_ROOT and
 *   links the files whose names are not there yet, so a failed deploy leaves only extra names behind;
 * - `live SHARED` in the release just made live: its files replace those of the same name (unhashed names follow
 *   the live release; hashed ones are the same content anyway);
 * - `prune SHARED RELEASE...`: removes every file no kept release has under the same name, then empty folders.
 */
export const STATIC_PY = [
  'import os, shutil, sys',
  `RECORD = "${STATIC_RECORD}"`,
  'def files(root):',
  '    for d, _, names in os.walk(root):',
  '        for n in names:',
  '            yield os.path.relpath(os.path.join(d, n), root)',
  '# The shared folder belongs to the action once it holds this mark: one someone else filled is never touched.',
  'MARK = ".django-deploy"',
  'def ours(shared):',
  '    if os.path.isfile(os.path.join(shared, MARK)):',
  '        return True',
  '    if os.path.isdir(shared) and os.listdir(shared):',
  `        print(f"${WARN} {shared} holds files this action did not put there: static files of old releases are not kept there (move it away to have them kept)", flush=True)`,
  '        return False',
  '    os.makedirs(shared, exist_ok=True)',
  '    open(os.path.join(shared, MARK), "w").close()',
  '    return True',
  'def link(root, shared, replace):',
  '    if not ours(shared):',
  '        return 0',
  '    count = 0',
  '    for rel in files(root):',
  '        src, dst = os.path.join(root, rel), os.path.join(shared, rel)',
  '        if os.path.lexists(dst) and (not replace or os.path.samefile(src, dst)):',
  '            continue',
  '        os.makedirs(os.path.dirname(dst), exist_ok=True)',
  '        tmp = dst + ".django-deploy-tmp"',
  '        if os.path.lexists(tmp):',
  '            os.unlink(tmp)',
  '        try:',
  '            os.link(src, tmp)',
  '        except OSError:',
  '            shutil.copy2(src, tmp)',
  '        os.replace(tmp, dst)',
  '        count += 1',
  '    return count',
  'def recorded(release):',
  '    try:',
  '        with open(os.path.join(release, RECORD)) as f:',
  '            return os.path.join(release, f.read().strip())',
  '    except FileNotFoundError:',
  '        return None',
  'def collected():',
  '    from django.conf import settings',
  '    shared, here = sys.argv[1], os.path.realpath(".")',
  '    if not settings.STATIC_ROOT:',
  '        print("STATIC_ROOT is not set: no static files to keep")',
  '        return',
  '    root = os.path.realpath(str(settings.STATIC_ROOT))',
  '    if not root.startswith(here + os.sep):',
  '        print(f"STATIC_ROOT {root} is outside the release: its files outlive the release already")',
  '        return',
  '    if not os.path.isdir(root):',
  '        print(f"STATIC_ROOT {root} does not exist (no collectstatic?): no static files to keep")',
  '        return',
  '    with open(RECORD, "w") as f:',
  '        f.write(os.path.relpath(root, here))',
  '    n = link(root, shared, False)',
  '    print(f"{n} static file(s) new to {shared} linked there from {root}")',
  'def prune(shared, releases):',
  '    if not os.path.isfile(os.path.join(shared, MARK)):',
  '        return',
  '    roots = [r for r in map(recorded, releases) if r]',
  '    gone = 0',
  '    for rel in list(files(shared)):',
  '        if rel != MARK and not any(os.path.isfile(os.path.join(r, rel)) for r in roots):',
  '            os.unlink(os.path.join(shared, rel))',
  '            gone += 1',
  '    for d, subdirs, names in os.walk(shared, topdown=False):',
  '        if d != shared and not os.listdir(d):',
  '            os.rmdir(d)',
  '    print(f"{gone} static file(s) no kept release has removed from {shared}")',
  'if __name__ == "__django_deploy__":',
  '    collected()',
  'elif sys.argv[1] == "live":',
  '    root = recorded(".")',
  '    n = link(root, sys.argv[2], True) if root else 0',
  '    print(f"{n} static file(s) of the live release linked into {sys.argv[2]}")',
  'elif sys.argv[1] == "prune":',
  '    prune(sys.argv[2], sys.argv[3:])'
].join('\n')

/** After the switch: the live release's static files take over their names in the shared static directory. */
export function liveStatic(l: Layout, release: string): string {
  return script(
    `cd ${q(releaseDir(l, release))}`,
    `[ -f ${STATIC_RECORD} ] || exit 0`,
    words('.venv/bin/python', '-c', STATIC_PY, 'live', l.static)
  )
}

/** Removes the shared static files that none of the `keep` releases has (with the live release's Python). */
export function pruneStatic(l: Layout, live: string, keep: string[]): string {
  return script(
    `[ -d ${q(l.static)} ] || exit 0`,
    words(
      `${releaseDir(l, live)}/.venv/bin/python`,
      '-c',
      STATIC_PY,
      'prune',
      l.static,
      ...keep.map(r => releaseDir(l, r))
    )
  )
}

/**
 * Removes old releases beyond `keep`, never the live or the previous one, what builds and replacements left
 * (see `place`), then the virtualenvs no kept release links to.
 */
export function cleanup(l: Layout, keep: string[], remove: string[]): string {
  const lines = remove.map(r => `rm -rf ${q(releaseDir(l, r))}`)
  // What a replaced release left (its old copy) and builds a killed deploy left: no deploy is building now.
  lines.push(`rm -rf ${q(l.releases)}/${buildName('')}* ${q(l.releases)}/${replacedName('')}*`)
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
