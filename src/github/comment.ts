/**
 * One sticky PR comment per run kind and `comment-key`: found again by a hidden marker and edited in place, so a
 * PR that is pushed to ten times has one comment, not ten, and each job of a matrix keeps its own.
 */
import * as core from '@actions/core'
import * as github from '@actions/github'
import type { RunContext } from '../settings.js'
import { describeError, isPermissionError } from './errors.js'

export const CHECKS_MARKER = '<!-- django-deploy:checks -->'

/** The hidden marker of the comment for `key` (settings allow only `[A-Za-z0-9._-]`, so it cannot end the HTML comment). */
export function markerFor(key?: string): string {
  return key ? `<!-- django-deploy:checks:${key} -->` : CHECKS_MARKER
}

// GitHub rejects comment bodies over 65,536 characters.
const MAX_BODY = 65_000

export interface UpsertCommentOptions {
  token: string
  ctx: RunContext
  body: string
  /** Hidden HTML comment that identifies our comment; default `CHECKS_MARKER`. */
  marker?: string
  /** Edit our comment if there is one, but post none (`comment: on-failure` after a passing run). */
  updateOnly?: boolean
}

interface IssueComment {
  id: number
  body?: string | null
  user?: { login: string; type?: string } | null
}

export async function upsertPullRequestComment(
  opts: UpsertCommentOptions
): Promise<'created' | 'updated' | 'skipped'> {
  const { ctx, token } = opts
  const marker = opts.marker ?? CHECKS_MARKER
  if (ctx.prNumber === undefined) {
    core.info('Not a pull request run: no PR comment.')
    return 'skipped'
  }
  const body = withMarker(opts.body, marker)
  const octokit = github.getOctokit(token)
  const where = { owner: ctx.owner, repo: ctx.repo, issue_number: ctx.prNumber }

  let step = 'list the comments of'
  try {
    const comments = (await octokit.paginate(octokit.rest.issues.listComments, {
      ...where,
      per_page: 100
    })) as IssueComment[]
    const ours = comments.filter(c => (c.body ?? '').includes(marker))
    const existing = ours.length > 0 ? await pickOwn(octokit, ours) : undefined
    if (existing) {
      step = 'update the comment on'
      await octokit.rest.issues.updateComment({
        owner: ctx.owner,
        repo: ctx.repo,
        comment_id: existing.id,
        body
      })
      return 'updated'
    }
    if (opts.updateOnly) return 'skipped'
    step = 'comment on'
    await octokit.rest.issues.createComment({ ...where, body })
    return 'created'
  } catch (err) {
    const what = `${step} pull request #${ctx.prNumber} in ${ctx.owner}/${ctx.repo}`
    if (isPermissionError(err)) {
      core.warning(
        `Could not ${what} (${describeError(err)}). The token needs \`permissions: pull-requests: write\`; ` +
          'on pull requests from forks the token is read-only, so no comment is posted. The job summary has the report.'
      )
      return 'skipped'
    }
    throw new Error(`Could not ${what}: ${describeError(err)}`, { cause: err })
  }
}

function withMarker(body: string, marker: string): string {
  let text = body.includes(marker) ? body : `${marker}\n${body}`
  if (text.length > MAX_BODY) {
    const cut = text.lastIndexOf('\n', MAX_BODY)
    text = `${text.slice(0, cut > 0 ? cut : MAX_BODY)}\n\n_… shortened to fit a GitHub comment; the job summary has all of it._\n`
  }
  return text
}

type Octokit = ReturnType<typeof github.getOctokit>

/**
 * Among comments carrying the marker, the one posted by this token's identity. A personal token can ask
 * `GET /user`; the workflow's GITHUB_TOKEN cannot (403), and then a bot author is the best evidence: a person
 * who pasted the marker into their own comment must not have it overwritten.
 */
async function pickOwn(octokit: Octokit, candidates: IssueComment[]): Promise<IssueComment | undefined> {
  let login: string | undefined
  try {
    login = (await octokit.rest.users.getAuthenticated()).data.login
  } catch {
    login = undefined
  }
  if (login) return candidates.find(c => c.user?.login === login)
  return candidates.find(c => c.user?.type === 'Bot')
}
