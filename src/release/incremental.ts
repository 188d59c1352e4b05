/**
 * Incremental upload: which files of the new release can be taken from the release that is live on a host
 * instead of crossing the network. Each release carries its manifest (`.deploy-manifest`: the output of
 * `git ls-tree -r -z` for its tree, the same bytes git prints); the host verifies the live release's files
 * against it (so a file edited on the server is sent again, never reused) and prints the entries that hold.
 * A file is reused when its path, mode and blob hash are the same in both. Pure functions.
 */

/** The file each release carries, listing what it was made of. */
export const MANIFEST = '.deploy-manifest'
/** The list of paths (NUL-separated) the server links from the live release; removed after the upload. */
export const REUSE = '.deploy-reuse'

export interface TreeEntry {
  mode: string
  sha: string
  path: string
}

/** Parses `git ls-tree -r -z` output (`<mode> <type> <sha>\t<path>\0`…), keeping files and symlinks. */
export function parseTree(text: string): TreeEntry[] {
  const out: TreeEntry[] = []
  for (const record of text.split('\0')) {
    const m = /^(100644|100755|120000) blob ([0-9a-f]{40,64})\t(.+)$/s.exec(record)
    if (m) out.push({ mode: m[1], sha: m[2], path: m[3] })
  }
  return out
}

/**
 * Paths of `next` that the live release has with the same mode and content. A path that did not survive
 * the trip as text (not valid UTF-8: it shows U+FFFD) is never reused, so a lossy name can't pick the wrong
 * file; names the release itself adds are never reused either.
 */
export function reusable(live: TreeEntry[], next: TreeEntry[]): string[] {
  const have = new Map(live.map(e => [e.path, e]))
  return next
    .filter(e => {
      const l = have.get(e.path)
      return l && l.mode === e.mode && l.sha === e.sha && !e.path.includes('\uFFFD')
    })
    .filter(e => e.path !== MANIFEST && e.path !== REUSE)
    .map(e => e.path)
}
