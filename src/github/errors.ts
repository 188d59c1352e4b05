/**
 * Telling GitHub API errors apart: a missing permission (read-only token on a fork PR, no `pull-requests: write`
 * or `deployments: write`) is expected and only warns; anything else is a real failure.
 */

interface HttpError {
  status?: unknown
  message?: unknown
  response?: { headers?: Record<string, unknown>; data?: unknown }
}

export function statusOf(err: unknown): number | undefined {
  const status = (err as HttpError | undefined)?.status
  return typeof status === 'number' ? status : undefined
}

/** 403/404 from a missing permission. A 403 from a rate limit is not one: retrying later would work. */
export function isPermissionError(err: unknown): boolean {
  const status = statusOf(err)
  if (status === 404) return true
  if (status !== 403) return false
  const e = err as HttpError
  const remaining = e.response?.headers?.['x-ratelimit-remaining']
  const message = typeof e.message === 'string' ? e.message : ''
  return !(remaining === '0' || remaining === 0 || /rate limit/i.test(message))
}

/** `HTTP 403: Resource not accessible by integration`; never includes request headers (the token). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const status = statusOf(err)
  // Octokit appends a docs link to the message; the first part is what GitHub said.
  const message = err.message.split(' - https://')[0]
  const cause =
    err.cause instanceof Error && err.cause.message !== err.message ? ` (${err.cause.message})` : ''
  return status !== undefined ? `HTTP ${status}: ${message}` : `${message}${cause}`
}
