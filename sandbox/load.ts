/**
 * A bounded HTTP(S) load generator for loopback targets: a new TCP connection (and TLS handshake) per request
 * (agent: false), `concurrency` request loops, stopping by itself after `maxRequests` or `maxSeconds`, whichever
 * comes first.
 */
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'

export interface LoadOptions {
  /** Parallel request loops (1-256). */
  concurrency: number
  /** Stop after this many requests in all (default and cap: 1,000,000). */
  maxRequests?: number
  /** Stop after this many seconds (required; capped at 600). */
  maxSeconds: number
  /** Overall request rate limit (requests per second across all loops). Default: as fast as possible. */
  ratePerSecond?: number
  /** Per-request timeout (counted as a connection error). Default 10000 ms. */
  requestTimeoutMs?: number
  /** Maps a 200 response body to the key tallied in `bodies` (default: the body, trimmed, max 200 chars). */
  marker?: (body: string, status: number) => string
  /** Also tally bodies of non-200 responses (by marker, prefixed with the status). Default false. */
  tallyNon200?: boolean
  /** `Host` header (e.g. the site's domain when the URL names its address). Default: the URL's host. */
  hostHeader?: string
  /** https: the PEM of the CA the server's certificate must chain to (verified: a bad one is an error). */
  ca?: string
  /** https: the TLS server name (SNI) the certificate is checked against. Default: `hostHeader`, else the URL's host. */
  servername?: string
}

export interface LoadEvent {
  /** ms since the start of the load. */
  t: number
  status?: number
  error?: string
}

export interface LoadResult {
  total: number
  ok: number
  /** Responses whose status was not 200. */
  non200: number
  /** Count per HTTP status, e.g. `{ '200': 950, '502': 3 }`. */
  byStatus: Record<string, number>
  /** Requests that got no HTTP response (refused, reset, timeout). */
  errors: number
  /** Count per error code (ECONNREFUSED, ECONNRESET, ETIMEDOUT, …). */
  errorCodes: Record<string, number>
  /** Tally of distinct 200 bodies (or markers); at most 1000 keys, the rest under `<other>`. */
  bodies: Record<string, number>
  /** The first 1000 failures (non-200 or error), with their time. */
  failures: LoadEvent[]
  /** ms from the start to the first and the last failure, if any. */
  firstFailureMs?: number
  lastFailureMs?: number
  /** Per distinct marker: ms of its first and last 200 response (to see when a new release started to answer). */
  firstSeenMs: Record<string, number>
  lastSeenMs: Record<string, number>
  durationMs: number
  /** Requests per second actually achieved. */
  rps: number
  /** Why it stopped: 'requests' | 'time' | 'stopped'. */
  stoppedBy: 'requests' | 'time' | 'stopped'
}

export interface LoadHandle {
  /** Ends the load (in-flight requests finish or time out) and returns the result. */
  stop(): Promise<LoadResult>
  /** Resolves when the load ends by itself (or after `stop()`). */
  done: Promise<LoadResult>
}

const MAX_KEYS = 1000
const MAX_FAILURES = 1000

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '')
  if (h === 'localhost' || h === '::1') return true
  return net.isIPv4(h) && h.startsWith('127.')
}

export function startLoad(url: string, opts: LoadOptions): LoadHandle {
  const u = new URL(url)
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`only http: and https: URLs: ${url}`)
  if (!isLoopback(u.hostname)) throw new Error(`load is only sent to loopback addresses, not ${u.hostname}`)
  if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1 || opts.concurrency > 256) {
    throw new Error('concurrency must be an integer in 1..256')
  }
  if (!(opts.maxSeconds > 0)) throw new Error('maxSeconds must be > 0')
  const maxRequests = Math.min(opts.maxRequests ?? 1_000_000, 1_000_000)
  const maxMs = Math.min(opts.maxSeconds, 600) * 1000
  const timeoutMs = opts.requestTimeoutMs ?? 10_000
  const marker = opts.marker ?? ((body: string) => body.trim().slice(0, 200))
  const hostname = u.hostname.replace(/^\[|\]$/g, '')
  const tls = u.protocol === 'https:'
  const port = Number(u.port || (tls ? 443 : 80))
  const reqPath = `${u.pathname}${u.search}`
  const request = tls ? https.request : http.request
  const headers = opts.hostHeader ? { Host: opts.hostHeader } : undefined
  // SNI takes a name, never an address (RFC 6066).
  const servername = opts.servername ?? opts.hostHeader ?? (net.isIP(hostname) ? undefined : hostname)
  const tlsOptions = tls ? { ca: opts.ca, servername } : {}

  const start = Date.now()
  const r: LoadResult = {
    total: 0,
    ok: 0,
    non200: 0,
    byStatus: {},
    errors: 0,
    errorCodes: {},
    bodies: {},
    failures: [],
    firstSeenMs: {},
    lastSeenMs: {},
    durationMs: 0,
    rps: 0,
    stoppedBy: 'time'
  }
  let issued = 0
  let stopRequested = false
  let stoppedBy: LoadResult['stoppedBy'] | undefined
  let keys = 0

  const tally = (key: string, t: number) => {
    if (!(key in r.bodies)) {
      if (keys >= MAX_KEYS) key = '<other>'
      else keys++
    }
    r.bodies[key] = (r.bodies[key] ?? 0) + 1
    r.firstSeenMs[key] ??= t
    r.lastSeenMs[key] = t
  }
  const fail = (ev: LoadEvent) => {
    if (r.failures.length < MAX_FAILURES) r.failures.push(ev)
    r.firstFailureMs ??= ev.t
    r.lastFailureMs = ev.t
  }

  const one = () =>
    new Promise<void>(resolve => {
      const req = request(
        {
          host: hostname,
          port,
          path: reqPath,
          method: 'GET',
          headers,
          agent: false,
          timeout: timeoutMs,
          ...tlsOptions
        },
        res => {
          const chunks: Buffer[] = []
          let size = 0
          res.on('data', (b: Buffer) => {
            if (size < 1_000_000) chunks.push(b)
            size += b.length
          })
          res.on('error', () => undefined)
          res.on('end', () => {
            const t = Date.now() - start
            const status = res.statusCode ?? 0
            r.total++
            r.byStatus[String(status)] = (r.byStatus[String(status)] ?? 0) + 1
            const body = Buffer.concat(chunks).toString('utf8')
            if (status === 200) {
              r.ok++
              tally(marker(body, status), t)
            } else {
              r.non200++
              fail({ t, status })
              if (opts.tallyNon200) tally(`${status} ${marker(body, status)}`, t)
            }
            resolve()
          })
        }
      )
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })))
      req.on('error', (e: NodeJS.ErrnoException) => {
        const t = Date.now() - start
        const code = e.code ?? e.message
        r.total++
        r.errors++
        r.errorCodes[code] = (r.errorCodes[code] ?? 0) + 1
        fail({ t, error: code })
        resolve()
      })
      req.end()
    })

  const loop = async () => {
    for (;;) {
      const why = stopRequested
        ? 'stopped'
        : issued >= maxRequests
          ? 'requests'
          : Date.now() - start >= maxMs
            ? 'time'
            : undefined
      if (why) {
        stoppedBy ??= why
        return
      }
      const n = issued++
      if (opts.ratePerSecond && opts.ratePerSecond > 0) {
        const due = start + (n * 1000) / opts.ratePerSecond
        const wait = due - Date.now()
        if (wait > 0) await new Promise(res => setTimeout(res, Math.min(wait, maxMs)))
        if (stopRequested || Date.now() - start >= maxMs) {
          issued--
          continue
        }
      }
      await one()
    }
  }

  const done = Promise.all(Array.from({ length: opts.concurrency }, loop)).then(() => {
    r.durationMs = Date.now() - start
    r.rps = r.durationMs > 0 ? Math.round((r.total * 1000 * 10) / r.durationMs) / 10 : 0
    r.stoppedBy = stoppedBy ?? 'time'
    return r
  })

  return {
    done,
    stop: () => {
      stopRequested = true
      return done
    }
  }
}

/** A marker for the example project's home page: the text of `<span id="version">…</span>`. */
export function versionMarker(body: string): string {
  const m = /<span id="version">([^<]*)<\/span>/.exec(body)
  return m ? m[1] : body.trim().slice(0, 40)
}
