/**
 * One GET on a connection of its own (agent: false). Tests ask the site between deploys, and every deploy reloads
 * nginx: a pooled keep-alive connection (fetch's default) can be closed by that reload just as it is reused, and the
 * request fails with "other side closed" although the site answered every new connection.
 */
import http from 'node:http'

export interface Answer {
  status: number
  body: string
  headers: http.IncomingHttpHeaders
}

export function get(url: string, timeoutMs = 10_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, res => {
      const chunks: Buffer[] = []
      res.on('data', (b: Buffer) => chunks.push(b))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          headers: res.headers
        })
      )
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)))
    req.on('error', reject)
  })
}
