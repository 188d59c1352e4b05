/**
 * Static files outlive their release: the files of each kept release's STATIC_ROOT stay reachable at the same
 * URLs in `<deploy-path>/static` (static_files.py: linked after collectstatic, taken over by the live release,
 * pruned with the releases).
 */
import { IN_RELEASE, type Layout, releaseDir } from './layout.js'
import { STATIC_FILES_PY } from './python/programs.js'
import { q, words } from './quote.js'
import { WARN, script } from './shell.js'

/** static_files.py; its first arguments are `staticArgs()`. */
export const STATIC_PY = STATIC_FILES_PY

/** The arguments static_files.py starts with, then its own (see the program). */
export function staticArgs(...rest: string[]): string[] {
  return [WARN, IN_RELEASE.staticRecord, ...rest]
}

/** After the switch: the live release's static files take over their names in the shared static directory. */
export function liveStatic(l: Layout, release: string): string {
  return script(
    `cd ${q(releaseDir(l, release))}`,
    `[ -f ${q(IN_RELEASE.staticRecord)} ] || exit 0`,
    words(`${IN_RELEASE.venv}/bin/python`, '-c', STATIC_PY, ...staticArgs('live', l.static))
  )
}

/** Removes the shared static files that none of the `keep` releases has (with the live release's Python). */
export function pruneStatic(l: Layout, live: string, keep: string[]): string {
  return script(
    `[ -d ${q(l.static)} ] || exit 0`,
    words(
      `${releaseDir(l, live)}/${IN_RELEASE.venv}/bin/python`,
      '-c',
      STATIC_PY,
      ...staticArgs('prune', l.static, ...keep.map(r => releaseDir(l, r)))
    )
  )
}
