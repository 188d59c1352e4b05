/**
 * Release history: what a host holds (its live release, the releases uploaded, the history of releases that went
 * live), read in one command, recorded as releases go live, and the pure rules built on it (what a rollback goes
 * back to, which releases a cleanup removes).
 */
import { IN_RELEASE, type Layout, releaseDir } from './layout.js'
import { q, words } from './quote.js'
import { script } from './shell.js'

/**
 * Reads what the deploy needs to know, changing nothing: the live release and its exact link, the releases
 * present in the order they were uploaded (their REVISION file is written once, at upload), and the history
 * of releases that went live (its last 500 lines).
 */
export function inspect(l: Layout): string {
  return script(
    `for tool in tar flock; do command -v "$tool" >/dev/null 2>&1 || { echo "the server has no $tool; install it (apt-get install $tool)" >&2; exit 127; }; done`,
    `if [ -L ${q(l.current)} ]; then echo "current=$(basename "$(readlink ${q(l.current)})")"; echo "current-link=$(readlink ${q(l.current)})"; fi`,
    `if [ -d ${q(l.releases)} ]; then cd ${q(l.releases)} && ls -1tr -- */${IN_RELEASE.revision} 2>/dev/null | sed 's|/${IN_RELEASE.revision}$||; s/^/release=/'; fi`,
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
  return script(`cat -- ${q(`${releaseDir(l, release)}/${IN_RELEASE.revision}`)}`)
}

/** Appends to the history: `release` went live (a deploy) or was made live again (a rollback). */
export function recordLive(l: Layout, release: string, event: HistoryEntry['event']): string {
  return script(
    `printf '%s %s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" ${words(event, release)} >> ${q(l.history)}`
  )
}

/**
 * What went live on the host, oldest first. A server deployed before the history was kept: the releases
 * uploaded up to the live one, as they were read then.
 */
export function historyOf(state: HostState): HistoryEntry[] {
  if (state.history) return state.history
  const upTo = state.current ? state.releases.indexOf(state.current) : -1
  return state.releases.slice(0, upTo + 1).map(release => ({ event: 'live', release }))
}

/**
 * The releases that were live, as a stack whose top is the live one: a deploy pushes, a rollback pops back
 * to its target, so rolling back twice goes two releases back, never forward to the one just rolled away from.
 */
export function liveStack(history: HistoryEntry[], current?: string): string[] {
  const stack: string[] = []
  for (const { event, release } of history) {
    if (event === 'rollback' && stack.includes(release)) {
      while (stack[stack.length - 1] !== release) stack.pop()
    } else {
      const at = stack.indexOf(release)
      if (at >= 0) stack.splice(at, 1)
      stack.push(release)
    }
  }
  // `current` moved by hand (or a deploy cut off before it recorded itself): what is live is the top.
  if (current && stack[stack.length - 1] !== current) {
    const at = stack.indexOf(current)
    if (at >= 0) stack.splice(at, 1)
    stack.push(current)
  }
  return stack
}

/** What `mode: rollback` goes back to: the release live before the live one, still on the server. */
export function rollbackTarget(state: HostState): string | undefined {
  const stack = liveStack(historyOf(state), state.current)
  for (let i = stack.length - 2; i >= 0; i--) if (state.releases.includes(stack[i])) return stack[i]
  return undefined
}

/** True when `release` went live on this host at some point (a rollback target that needs no preflight). */
export function wentLive(state: HostState, release: string): boolean {
  return historyOf(state).some(h => h.release === release) || state.current === release
}

/**
 * Releases to delete once `live` went live: all but the `keep` that went live most recently (`live` among
 * them) and the one to roll back to. A release that never went live (refused before the switch) counts for
 * nothing and goes; it stays on the server for debugging only until the next release goes live.
 */
export function releasesToRemove(state: HostState, keep: number, live: string): string[] {
  const history: HistoryEntry[] = [...historyOf(state), { event: 'live', release: live }]
  const stack = liveStack(history)
  const byLastLive = [...new Set([...history].reverse().map(h => h.release))].reverse()
  const keepSet = new Set([...byLastLive.slice(-keep), live, stack[stack.length - 2], state.current])
  return state.releases.filter(r => !keepSet.has(r))
}
