/**
 * Release files: a release's directory made, unpacked (taking unchanged files from the live one), linked to the
 * shared paths, put in place of one of the same name, made live by one rename of `current`, and the old ones
 * removed.
 */
import { MANIFEST } from '../release/incremental.js'
import {
  IN_RELEASE,
  type Layout,
  buildName,
  incomingFiles,
  nextCurrent,
  releaseDir,
  replacedName
} from './layout.js'
import { REUSABLE_PY, REUSE_PY } from './python/programs.js'
import { q, words } from './quote.js'
import { WARN, script } from './shell.js'

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
 * Which files of `release` the host has unchanged in its live release (reusable.py; the manifest on stdin).
 * `python`: the server's Python (the live release's virtualenv may be any).
 */
export function reusableFiles(l: Layout, release: string, live: string, python: string): string {
  const keep = incomingFiles(l, release)
  return script(
    `mkdir -p ${q(l.incoming)}`,
    words(python, '-c', REUSABLE_PY, WARN, MANIFEST, releaseDir(l, live), keep.manifest, keep.reuse)
  )
}

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
  const keep = incomingFiles(l, release)
  return script(
    ...(reuseFrom ? [`mv -f ${words(keep.manifest, `${dir}/${MANIFEST}`)}`] : []),
    `tar -xzf - -C ${q(dir)} --no-same-owner --no-same-permissions`,
    ...(reuseFrom
      ? [words(reuseFrom.python, '-c', REUSE_PY, dir, releaseDir(l, reuseFrom.release), keep.reuse)]
      : []),
    `chmod -R a+rX ${q(dir)}`,
    `printf '%s\\n' ${q(revision)} > ${q(`${dir}/${IN_RELEASE.revision}`)}`,
    // Release files are read-only (directories stay writable: Python's caches, collectstatic): files reused by
    // the next release are hard links to these, so nothing may write one in place.
    `find ${q(dir)} -type f -exec chmod a-w {} +`
  )
}

/** A shared file that holds secrets by convention: `.env`, `.env.production`, `production.env`. */
const isEnvFile = (path: string): boolean => /(^|\/)(\.env(\.[^/]*)?|[^/]*\.env)$/.test(path)

/** A shared path that looks like a file (has a dot) is a file, else a directory. */
function sharedKind(path: string): 'file' | 'dir' {
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

/**
 * Points `current` at a release with one rename(2): there is no moment without a `current`. `link` is the
 * link's exact text when putting back what was there (default `releases/<release>`).
 */
export function switchTo(l: Layout, release: string, link = `releases/${release}`): string {
  const tmp = nextCurrent(l, release)
  return script(`rm -f ${q(tmp)}`, `ln -s ${words(link, tmp)}`, `mv -T ${words(tmp, l.current)}`)
}

/** Puts the server back to having no live release (undo of a failed first deploy). */
export function removeCurrent(l: Layout): string {
  return script(`rm -f ${q(l.current)}`)
}

/** The user's own command line, run as written (it is theirs to quote) in `dir`. */
export function userCommand(dir: string, command: string): string {
  return script(`cd ${q(dir)}`, command)
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
