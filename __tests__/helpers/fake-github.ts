/**
 * A stand-in for the parts of the GitHub REST API the action uses: a real HTTP server on 127.0.0.1, so the
 * code under test goes through the real Octokit (URL building, pagination via `Link`, auth header, errors).
 * Point `GITHUB_API_URL` at `url` before `@actions/github` is imported: it reads the variable once, at load.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RecordedRequest {
  method: string
  /** Path without the query string. */
  path: string
  query: Record<string, string>
  headers: IncomingMessage['headers']
  /** Parsed JSON body, or undefined when there was none. */
  body: unknown
  /** The body exactly as sent. */
  rawBody: string
}

export interface FakeComment {
  id: number
  body: string
  user: { login: string; type: 'User' | 'Bot' }
  created_at: string
  updated_at: string
}

export interface FakeDeployment {
  id: number
  ref: string
  environment: string
  body: Record<string, unknown>
  statuses: Record<string, unknown>[]
}

export interface ForcedError {
  method: string
  /** Matched against the request path, e.g. /\/issues\/\d+\/comments$/. */
  path: RegExp
  status: number
  message?: string
  headers?: Record<string, string>
  /** Only requests whose parsed JSON body this accepts (e.g. the final deployment status, not in_progress). */
  body?: (body: unknown) => boolean
}

export interface FakeGitHub {
  url: string
  requests: RecordedRequest[]
  /** Comments per `owner/repo#number`. */
  comments: Map<string, FakeComment[]>
  deployments: FakeDeployment[]
  /** Login that authored comments created through the API; `GET /user` answers it unless `userForbidden`. */
  login: string
  /** Like GITHUB_TOKEN: `GET /user` answers 403 "Resource not accessible by integration". */
  userForbidden: boolean
  seedComment(key: string, body: string, user?: FakeComment['user']): FakeComment
  failWith(err: ForcedError): void
  reset(): void
  close(): Promise<void>
}

const DEFAULT_PER_PAGE = 30

export async function startFakeGitHub(): Promise<FakeGitHub> {
  let nextId = 1000
  const errors: ForcedError[] = []
  let baseUrl = ''

  const fake: FakeGitHub = {
    url: '',
    requests: [],
    comments: new Map(),
    deployments: [],
    login: 'github-actions[bot]',
    userForbidden: true,
    seedComment(key, body, user = { login: 'someone', type: 'User' }) {
      const now = new Date().toISOString()
      const c: FakeComment = { id: nextId++, body, user, created_at: now, updated_at: now }
      listFor(key).push(c)
      return c
    },
    failWith(err) {
      errors.push(err)
    },
    reset() {
      fake.requests.length = 0
      fake.comments.clear()
      fake.deployments.length = 0
      errors.length = 0
      fake.userForbidden = true
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections()
        server.close(err => (err ? reject(err) : resolve()))
      })
  }

  function listFor(key: string): FakeComment[] {
    let list = fake.comments.get(key)
    if (!list) {
      list = []
      fake.comments.set(key, list)
    }
    return list
  }

  function send(
    res: ServerResponse,
    status: number,
    data: unknown,
    headers: Record<string, string> = {}
  ): void {
    const text = data === undefined ? '' : JSON.stringify(data)
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers })
    res.end(text)
  }

  function commentJson(c: FakeComment, key: string): Record<string, unknown> {
    return { ...c, html_url: `https://github.test/${key.replace('#', '/pull/')}#issuecomment-${c.id}` }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const rawBody = Buffer.concat(chunks).toString('utf8')
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const method = req.method ?? 'GET'
    const path = url.pathname
    let body: unknown
    try {
      body = rawBody ? JSON.parse(rawBody) : undefined
    } catch {
      body = undefined
    }
    fake.requests.push({
      method,
      path,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body,
      rawBody
    })

    if (!req.headers.authorization) return send(res, 401, { message: 'Requires authentication' })

    const forced = errors.find(
      e => e.method === method && e.path.test(path) && (e.body === undefined || e.body(body))
    )
    if (forced) {
      const message =
        forced.message ?? (forced.status === 403 ? 'Resource not accessible by integration' : 'Not Found')
      return send(
        res,
        forced.status,
        { message, documentation_url: 'https://docs.github.com/rest' },
        forced.headers
      )
    }

    let m: RegExpMatchArray | null
    if (method === 'GET' && path === '/user') {
      if (fake.userForbidden) return send(res, 403, { message: 'Resource not accessible by integration' })
      return send(res, 200, { login: fake.login, id: 1, type: 'User' })
    }

    if ((m = path.match(/^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/))) {
      const key = `${m[1]}/${m[2]}#${m[3]}`
      const list = listFor(key)
      if (method === 'GET') {
        const perPage = Math.min(
          100,
          Number(url.searchParams.get('per_page') ?? DEFAULT_PER_PAGE) || DEFAULT_PER_PAGE
        )
        const page = Math.max(1, Number(url.searchParams.get('page') ?? 1) || 1)
        const last = Math.max(1, Math.ceil(list.length / perPage))
        const items = list.slice((page - 1) * perPage, page * perPage).map(c => commentJson(c, key))
        const link = (p: number, rel: string): string => {
          const u = new URL(`${baseUrl}${path}`)
          u.searchParams.set('per_page', String(perPage))
          u.searchParams.set('page', String(p))
          return `<${u.toString()}>; rel="${rel}"`
        }
        const links: string[] = []
        if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'))
        if (page > 1) links.push(link(1, 'first'), link(page - 1, 'prev'))
        return send(res, 200, items, links.length ? { link: links.join(', ') } : {})
      }
      if (method === 'POST') {
        const text = (body as { body?: unknown } | undefined)?.body
        if (typeof text !== 'string' || text === '') return send(res, 422, { message: 'Validation Failed' })
        const c = fake.seedComment(key, text, { login: fake.login, type: 'Bot' })
        return send(res, 201, commentJson(c, key))
      }
    }

    if ((m = path.match(/^\/repos\/([^/]+)\/([^/]+)\/issues\/comments\/(\d+)$/)) && method === 'PATCH') {
      const id = Number(m[3])
      const prefix = `${m[1]}/${m[2]}#`
      for (const [key, list] of fake.comments) {
        if (!key.startsWith(prefix)) continue
        const c = list.find(x => x.id === id)
        if (!c) continue
        const text = (body as { body?: unknown } | undefined)?.body
        if (typeof text !== 'string' || text === '') return send(res, 422, { message: 'Validation Failed' })
        c.body = text
        c.updated_at = new Date().toISOString()
        return send(res, 200, commentJson(c, key))
      }
      return send(res, 404, { message: 'Not Found' })
    }

    if ((m = path.match(/^\/repos\/([^/]+)\/([^/]+)\/deployments$/)) && method === 'POST') {
      const b = (body ?? {}) as Record<string, unknown>
      if (typeof b.ref !== 'string' || b.ref === '') return send(res, 422, { message: 'Validation Failed' })
      const d: FakeDeployment = {
        id: nextId++,
        ref: b.ref,
        environment: typeof b.environment === 'string' ? b.environment : 'production',
        body: b,
        statuses: []
      }
      fake.deployments.push(d)
      return send(res, 201, { id: d.id, ref: d.ref, environment: d.environment, sha: d.ref, task: 'deploy' })
    }

    if ((m = path.match(/^\/repos\/([^/]+)\/([^/]+)\/deployments\/(\d+)\/statuses$/)) && method === 'POST') {
      const d = fake.deployments.find(x => x.id === Number(m![3]))
      if (!d) return send(res, 404, { message: 'Not Found' })
      const b = (body ?? {}) as Record<string, unknown>
      const states = ['error', 'failure', 'inactive', 'in_progress', 'queued', 'pending', 'success']
      if (!states.includes(String(b.state))) return send(res, 422, { message: 'Validation Failed' })
      // GitHub's documented limit; the fake enforces it so a too-long description fails the test.
      if (typeof b.description === 'string' && Array.from(b.description).length > 140) {
        return send(res, 422, {
          message: 'Validation Failed: description is too long (maximum is 140 characters)'
        })
      }
      d.statuses.push(b)
      return send(res, 201, { id: nextId++, state: b.state })
    }

    return send(res, 404, { message: `Not Found (fake GitHub has no route ${method} ${path})` })
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(err => send(res, 500, { message: String(err) }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  baseUrl = `http://127.0.0.1:${port}`
  fake.url = baseUrl
  return fake
}
