/**
 * Incremental upload: which files of the new release can be taken from the release that is live on a host
 * instead of crossing the network. Each release carries its manifest (`.deploy-manifest`: the output of
 * `git ls-tree -r -z` for its tree, the same bytes git prints). Before the upload the runner sends the new
 * release's manifest (gzip) to the host; the host compares it with the live release's, hashes the live files
 * that would be reused as git does (so a file edited on the server is sent again, never reused), keeps both
 * lists for the upload step, and answers with the indexes of the reusable records. Pure functions.
 */

/** The file each release carries, listing what it was made of. */
export const MANIFEST = '.deploy-manifest'

export interface TreeEntry {
  mode: string
  sha: string
  path: string
}

/** The records of `git ls-tree -r -z` output, in order (`<mode> <type> <sha>\t<path>`). */
export function treeRecords(text: string): string[] {
  return text.split('\0').filter(Boolean)
}

/** Parses `git ls-tree -r -z` output, keeping files and symlinks (not submodules). */
export function parseTree(text: string): TreeEntry[] {
  const out: TreeEntry[] = []
  for (const record of treeRecords(text)) {
    const m = /^(100644|100755|120000) blob ([0-9a-f]{40,64})\t(.+)$/s.exec(record)
    if (m) out.push({ mode: m[1], sha: m[2], path: m[3] })
  }
  return out
}

/** `0-5,7,9-12` → [0..5, 7, 9..12]; anything else is an error (the host's answer is checked, not trusted). */
export function parseRanges(text: string, count: number): number[] {
  const out: number[] = []
  if (!text) return out
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part)
    const from = Number(m?.[1])
    const to = Number(m?.[2] ?? m?.[1])
    if (!m || to < from || to >= count) throw new Error(`bad index range "${part}" for ${count} records`)
    for (let i = from; i <= to; i++) out.push(i)
  }
  return out
}

/** The paths of the records at `indexes`: what the host takes from the live release. */
export function pathsAt(text: string, indexes: number[]): string[] {
  const records = treeRecords(text)
  return indexes.map(i => records[i].slice(records[i].indexOf('\t') + 1))
}
