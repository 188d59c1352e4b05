/** GitHub: the token, the environment and deployment, and the pull request comment. */
import type { COMMENT_MODES, RawValues } from './sources.js'

/** When the PR comment is posted: on every run, only when the run failed (then kept up to date), or never. */
export type CommentMode = (typeof COMMENT_MODES)[number]

export interface GithubSettings {
  token?: string
  environment: string
  environmentUrl?: string
  /** Create a GitHub deployment (off when the job's own `environment:` already records one). */
  deployment: boolean
  comment: CommentMode
  /** Tells this job's PR comment apart from other jobs' (matrix jobs): one comment per key. */
  commentKey?: string
}

export function readGithub(raw: RawValues): GithubSettings {
  const commentKeyRaw = raw.get('comment-key')
  if (commentKeyRaw.value && !/^[A-Za-z0-9._-]{1,64}$/.test(commentKeyRaw.value)) {
    raw.fail(
      commentKeyRaw,
      `"${commentKeyRaw.value}" cannot be used; expected 1–64 letters, digits, . _ - (e.g. \${{ matrix.python }}-\${{ matrix.django }})`
    )
  }
  return {
    token: raw.text('github-token'),
    environment: raw.get('environment').value,
    environmentUrl: raw.url('environment-url'),
    deployment: raw.bool('github-deployment'),
    comment: raw.choice('comment'),
    commentKey: commentKeyRaw.value || undefined
  }
}
