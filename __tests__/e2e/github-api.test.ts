/**
 * The PR comment and deployment code against a real HTTP server standing in for the GitHub API, through the
 * real `@actions/github` Octokit (pagination, auth header, error statuses).
 */
import { jest } from '@jest/globals'
import type { RunContext } from '../../src/settings.js'
import { startFakeGitHub, type FakeGitHub } from '../helpers/fake-github.js'

const warning = jest.fn()
const info = jest.fn()
const actualCore = await import('@actions/core')
// Only the log functions are replaced, so a warning can be asserted and nothing reaches stdout as a workflow command.
jest.unstable_mockModule('@actions/core', () => ({ ...actualCore, warning, info, debug: jest.fn() }))

// `@actions/github` reads GITHUB_API_URL when it is first imported, so the server must be up before that.
const fake: FakeGitHub = await startFakeGitHub()
const savedApiUrl = process.env.GITHUB_API_URL
process.env.GITHUB_API_URL = fake.url
const { upsertPullRequestComment, CHECKS_MARKER } = await import('../../src/github/comment.js')
const { startDeployment } = await import('../../src/github/deployment.js')

const TOKEN = 'ghs_fakeTokenValue1234567890'
const ctx: RunContext = {
  eventName: 'pull_request',
  ref: 'refs/pull/7/merge',
  sha: 'abc1234def5678abc1234def5678abc1234def56',
  owner: 'acme',
  repo: 'shop',
  prNumber: 7,
  runUrl: 'https://github.com/acme/shop/actions/runs/99',
  workspace: '/tmp'
}
const PR = 'acme/shop#7'

afterAll(async () => {
  await fake.close()
  if (savedApiUrl === undefined) delete process.env.GITHUB_API_URL
  else process.env.GITHUB_API_URL = savedApiUrl
})

beforeEach(() => {
  fake.reset()
  jest.clearAllMocks()
})

/** Requests that changed something; listing and `GET /user` are free to vary. */
function writes(): { method: string; path: string }[] {
  return fake.requests.filter(r => r.method !== 'GET').map(r => ({ method: r.method, path: r.path }))
}

describe('upsertPullRequestComment', () => {
  it('creates the comment on the first run and edits the same one on the second', async () => {
    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'first report' })).toBe('created')
    const created = fake.comments.get(PR) ?? []
    expect(created).toHaveLength(1)
    expect(created[0].body).toBe(`${CHECKS_MARKER}\nfirst report`)

    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'second report' })).toBe('updated')
    expect(writes()).toEqual([
      { method: 'POST', path: '/repos/acme/shop/issues/7/comments' },
      { method: 'PATCH', path: `/repos/acme/shop/issues/comments/${created[0].id}` }
    ])
    const after = fake.comments.get(PR) ?? []
    expect(after).toHaveLength(1)
    expect(after[0].id).toBe(created[0].id)
    expect(after[0].body).toBe(`${CHECKS_MARKER}\nsecond report`)
  })

  it('finds the marked comment on the second page among 120 others', async () => {
    for (let i = 0; i < 105; i++) fake.seedComment(PR, `chatter ${i}`)
    const ours = fake.seedComment(PR, `${CHECKS_MARKER}\nold report`, {
      login: 'github-actions[bot]',
      type: 'Bot'
    })
    for (let i = 105; i < 120; i++) fake.seedComment(PR, `chatter ${i}`)

    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'new report' })).toBe('updated')

    const pages = fake.requests.filter(r => r.method === 'GET' && r.path.endsWith('/issues/7/comments'))
    expect(pages.map(r => r.query.page ?? '1')).toEqual(['1', '2'])
    expect(writes()).toEqual([{ method: 'PATCH', path: `/repos/acme/shop/issues/comments/${ours.id}` }])
    const all = fake.comments.get(PR) ?? []
    expect(all).toHaveLength(121)
    expect(all.filter(c => c.body.includes(CHECKS_MARKER)).map(c => c.body)).toEqual([
      `${CHECKS_MARKER}\nnew report`
    ])
  })

  it("leaves a person's comment that quotes the marker alone", async () => {
    const human = fake.seedComment(PR, `look: ${CHECKS_MARKER}`, { login: 'alice', type: 'User' })
    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'report' })).toBe('created')
    expect(fake.comments.get(PR)?.find(c => c.id === human.id)?.body).toBe(`look: ${CHECKS_MARKER}`)
    expect(writes()).toEqual([{ method: 'POST', path: '/repos/acme/shop/issues/7/comments' }])
  })

  it('matches by login when the token can say who it is (a personal token)', async () => {
    fake.userForbidden = false
    fake.login = 'deploy-bot-user'
    fake.seedComment(PR, `${CHECKS_MARKER}\nby another bot`, { login: 'other[bot]', type: 'Bot' })
    const mine = fake.seedComment(PR, `${CHECKS_MARKER}\nmine`, { login: 'deploy-bot-user', type: 'User' })
    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'fresh' })).toBe('updated')
    expect(writes()).toEqual([{ method: 'PATCH', path: `/repos/acme/shop/issues/comments/${mine.id}` }])
    fake.login = 'github-actions[bot]'
  })

  it('skips with a warning on 403 (read-only token on a fork PR) and does not throw', async () => {
    fake.failWith({ method: 'POST', path: /\/issues\/7\/comments$/, status: 403 })
    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'report' })).toBe('skipped')
    expect(warning).toHaveBeenCalledTimes(1)
    const message = String(warning.mock.calls[0][0])
    expect(message).toContain('permissions: pull-requests: write')
    expect(message).toContain('HTTP 403')
    expect(message).not.toContain(TOKEN)
    expect(fake.comments.get(PR) ?? []).toHaveLength(0)
  })

  it('skips on 404 when listing (no access to the repository)', async () => {
    fake.failWith({ method: 'GET', path: /\/issues\/7\/comments$/, status: 404 })
    expect(await upsertPullRequestComment({ token: TOKEN, ctx, body: 'report' })).toBe('skipped')
    expect(warning).toHaveBeenCalledTimes(1)
  })

  it('throws a clear error, without the token, for other failures', async () => {
    fake.failWith({ method: 'POST', path: /\/issues\/7\/comments$/, status: 500, message: 'Server Error' })
    const err = await upsertPullRequestComment({ token: TOKEN, ctx, body: 'report' }).catch(e => e as Error)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toBe(
      'Could not comment on pull request #7 in acme/shop: HTTP 500: Server Error'
    )
    expect(JSON.stringify(err)).not.toContain(TOKEN)
    expect(warning).not.toHaveBeenCalled()
  })

  it('treats a 403 from the rate limit as an error, not as a missing permission', async () => {
    fake.failWith({
      method: 'POST',
      path: /\/issues\/7\/comments$/,
      status: 403,
      message: 'API rate limit exceeded',
      headers: { 'x-ratelimit-remaining': '0' }
    })
    await expect(upsertPullRequestComment({ token: TOKEN, ctx, body: 'report' })).rejects.toThrow(
      /rate limit/
    )
  })

  it('does nothing outside a pull request', async () => {
    const push = { ...ctx, eventName: 'push', prNumber: undefined }
    expect(await upsertPullRequestComment({ token: TOKEN, ctx: push, body: 'report' })).toBe('skipped')
    expect(fake.requests).toHaveLength(0)
  })

  it('sends the token only in the Authorization header', async () => {
    await upsertPullRequestComment({ token: TOKEN, ctx, body: 'one' })
    await upsertPullRequestComment({ token: TOKEN, ctx, body: 'two' })
    expect(fake.requests.length).toBeGreaterThanOrEqual(4)
    for (const r of fake.requests) {
      expect(r.headers.authorization).toBe(`token ${TOKEN}`)
      const rest = { ...r.headers, authorization: undefined }
      expect(JSON.stringify(rest)).not.toContain(TOKEN)
      expect(r.rawBody).not.toContain(TOKEN)
      expect(r.path).not.toContain(TOKEN)
      expect(JSON.stringify(r.query)).not.toContain(TOKEN)
    }
    const logged = JSON.stringify([...warning.mock.calls, ...info.mock.calls])
    expect(logged).not.toContain(TOKEN)
  })
})

describe('startDeployment', () => {
  const deployCtx: RunContext = { ...ctx, eventName: 'push', ref: 'refs/tags/v1.2.0', prNumber: undefined }

  it('creates a deployment, marks it in progress, then successful with the environment URL', async () => {
    const handle = await startDeployment({
      token: TOKEN,
      ctx: deployCtx,
      environment: 'production',
      environmentUrl: 'https://shop.example.com/'
    })
    expect(handle).toBeDefined()
    expect(fake.deployments).toHaveLength(1)
    const d = fake.deployments[0]
    expect(handle?.id).toBe(d.id)
    expect(d.body).toMatchObject({
      ref: deployCtx.sha,
      environment: 'production',
      auto_merge: false,
      required_contexts: [],
      transient_environment: false,
      production_environment: true
    })
    expect(d.statuses).toHaveLength(1)
    expect(d.statuses[0]).toMatchObject({ state: 'in_progress', log_url: deployCtx.runUrl })

    await handle?.finish('success', 'Release v1.2.0 is live')
    expect(d.statuses).toHaveLength(2)
    expect(d.statuses[1]).toMatchObject({
      state: 'success',
      environment_url: 'https://shop.example.com/',
      log_url: deployCtx.runUrl,
      description: 'Release v1.2.0 is live'
    })
    expect(writes()).toEqual([
      { method: 'POST', path: '/repos/acme/shop/deployments' },
      { method: 'POST', path: `/repos/acme/shop/deployments/${d.id}/statuses` },
      { method: 'POST', path: `/repos/acme/shop/deployments/${d.id}/statuses` }
    ])
    for (const r of fake.requests) {
      expect(r.headers.authorization).toBe(`token ${TOKEN}`)
      expect(r.rawBody).not.toContain(TOKEN)
    }
  })

  it('marks a staging deployment as not production and reports failure with a description cut to 140 characters', async () => {
    const handle = await startDeployment({ token: TOKEN, ctx: deployCtx, environment: 'staging' })
    const d = fake.deployments[0]
    expect(d.body.production_environment).toBe(false)
    // The fake answers 422 above 140 characters, as GitHub does, so an uncut description fails here.
    await handle?.finish('failure', `health check failed: ${'x'.repeat(300)}`)
    expect(d.statuses.map(s => s.state)).toEqual(['in_progress', 'failure'])
    const description = String(d.statuses[1].description)
    expect(Array.from(description)).toHaveLength(140)
    expect(description.endsWith('…')).toBe(true)
  })

  it('warns and continues without a deployment on 403', async () => {
    fake.failWith({ method: 'POST', path: /\/deployments$/, status: 403 })
    const handle = await startDeployment({ token: TOKEN, ctx: deployCtx, environment: 'production' })
    expect(handle).toBeUndefined()
    expect(warning).toHaveBeenCalledTimes(1)
    expect(String(warning.mock.calls[0][0])).toContain('permissions: deployments: write')
    expect(fake.deployments).toHaveLength(0)
  })

  it('warns, not throws, when the final status is refused', async () => {
    const handle = await startDeployment({ token: TOKEN, ctx: deployCtx, environment: 'production' })
    fake.failWith({ method: 'POST', path: /\/statuses$/, status: 404 })
    await expect(handle?.finish('success')).resolves.toBeUndefined()
    expect(warning).toHaveBeenCalledTimes(1)
  })

  it('throws a clear error for a server failure', async () => {
    fake.failWith({ method: 'POST', path: /\/deployments$/, status: 502, message: 'Bad Gateway' })
    await expect(
      startDeployment({ token: TOKEN, ctx: deployCtx, environment: 'production' })
    ).rejects.toThrow('Could not create a GitHub deployment for production: HTTP 502: Bad Gateway')
  })
})
