/**
 * The run's context: what the workflow run is about (event, ref, pull request), read from the runner's
 * environment in one place, and the mode `auto` resolves to for it.
 */
export type Mode = 'check' | 'deploy' | 'rollback' | 'setup'
export type RequestedMode = 'auto' | Mode

/** What the workflow run is about; read from the runner's environment in one place. */
export interface RunContext {
  eventName: string
  /** e.g. refs/tags/v1.2.0, refs/heads/main, refs/pull/7/merge */
  ref: string
  sha: string
  owner: string
  repo: string
  /** Pull request number for pull-request events (`PULL_REQUEST_EVENTS`), from the payload or the ref. */
  prNumber?: number
  /** The pull request's base commit (the payload's `pull_request.base.sha`): what its migrations are new against. */
  baseSha?: string
  /** Link to this workflow run, for reports. */
  runUrl?: string
  /** The checkout on the runner (GITHUB_WORKSPACE): finding paths are relative to it. */
  workspace: string
}

/** Resolves `auto` against the event that started the workflow. */
export function resolveMode(requested: RequestedMode, ctx: Pick<RunContext, 'eventName' | 'ref'>): Mode {
  if (requested !== 'auto') return requested
  if (isPullRequestEvent(ctx.eventName)) return 'check'
  // A manual run deploys only when the workflow says so (mode: deploy, e.g. from a `type: choice` input): a
  // workflow_dispatch trigger added to re-run the checks by hand must not ship to production.
  if (ctx.eventName === 'push' && ctx.ref.startsWith('refs/tags/')) return 'deploy'
  return 'check'
}

/**
 * Events that run for a pull request. A review or review comment runs the workflow from the pull request's merge
 * ref too, so its code is the pull request's: never deployed.
 */
export const PULL_REQUEST_EVENTS = [
  'pull_request',
  'pull_request_target',
  'pull_request_review',
  'pull_request_review_comment'
] as const

export function isPullRequestEvent(eventName: string): boolean {
  return (PULL_REQUEST_EVENTS as readonly string[]).includes(eventName)
}

/** Reads the run's context from the runner's environment (the variables GitHub sets for every step). */
export function readRunContext(
  env: Record<string, string | undefined>,
  readFile: (path: string) => string,
  workspace: string
): RunContext {
  const [owner = '', repo = ''] = (env.GITHUB_REPOSITORY ?? '').split('/')
  let prNumber: number | undefined
  let baseSha: string | undefined
  if (isPullRequestEvent(env.GITHUB_EVENT_NAME ?? '') && env.GITHUB_EVENT_PATH) {
    try {
      const payload = JSON.parse(readFile(env.GITHUB_EVENT_PATH)) as {
        pull_request?: { number?: number; base?: { sha?: unknown } }
      }
      prNumber = payload.pull_request?.number
      const sha = payload.pull_request?.base?.sha
      // A commit id, nothing else: it becomes an argument of git.
      if (typeof sha === 'string' && /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(sha)) baseSha = sha
    } catch {
      prNumber = undefined
    }
  }
  if (prNumber === undefined) {
    const m = /^refs\/pull\/(\d+)\//.exec(env.GITHUB_REF ?? '')
    if (m) prNumber = Number(m[1])
  }
  const server = env.GITHUB_SERVER_URL ?? 'https://github.com'
  return {
    eventName: env.GITHUB_EVENT_NAME ?? '',
    ref: env.GITHUB_REF ?? '',
    sha: env.GITHUB_SHA ?? '',
    owner,
    repo,
    prNumber,
    baseSha,
    runUrl:
      env.GITHUB_RUN_ID && owner ? `${server}/${owner}/${repo}/actions/runs/${env.GITHUB_RUN_ID}` : undefined,
    workspace
  }
}

/** Default release name: the tag, else the short SHA and the UTC time. */
export function defaultReleaseName(ctx: Pick<RunContext, 'ref' | 'sha'>, now: Date): string {
  if (ctx.ref.startsWith('refs/tags/')) return ctx.ref.slice('refs/tags/'.length)
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
  return `${(ctx.sha || 'local').slice(0, 7)}-${stamp}`
}
