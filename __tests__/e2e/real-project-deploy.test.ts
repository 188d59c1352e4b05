/**
 * A project as tutorials write it (__tests__/fixtures/realproject: whitenoise's manifest storage, DATABASE_URL,
 * python-dotenv, hard-coded ALLOWED_HOSTS and STATIC_ROOT) deployed to the real sandbox as it is. Each release's
 * hashed static names are new: after the switch a page of the previous release still finds its CSS through
 * nginx serving `<deploy-path>/static`, and cleanup prunes what only the removed releases had.
 */
import { jest } from '@jest/globals'
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { deployInputs, liveInputs } from '../../sandbox/inputs.js'
import { shq, startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, ROOT, runAction } from '../helpers/action.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const FIXTURE = join(ROOT, '__tests__/fixtures/realproject')
const WHEEL = 'gunicorn_script-1.0.0-py3-none-any.whl'

async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`${t.url}${path}`)
  return { status: r.status, body: await r.text() }
}
/** The stylesheet URL the home page links. */
async function stylesheet(): Promise<string> {
  const home = await get('/')
  expect(home.status).toBe(200)
  const m = /href="(\/static\/css\/styles\.[0-9a-f]{12}\.css)"/.exec(home.body)
  if (!m) throw new Error(`no hashed stylesheet in the home page:\n${home.body}`)
  return m[1]
}
async function deploy(version: string, extra: Record<string, string> = {}): Promise<void> {
  repo
    .write('VERSION', `${version}\n`)
    .write('shop/static/css/styles.css', `body { color: navy } /* ${version} */\n`)
    .commit(version)
  const r = await runAction(liveInputs(t, { checks: 'check', 'health-check-timeout': '10', ...extra }), {
    workspace: repo.dir,
    env: { GITHUB_REF: `refs/tags/${version}` }
  })
  expectOk(r)
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddi16s', wsgiModule: 'tutorial.wsgi' })
  repo = new Repo(FIXTURE)
  mkdirSync(join(repo.dir, 'vendor'))
  copyFileSync(join(ROOT, 'example/vendor', WHEEL), join(repo.dir, 'vendor', WHEEL))
  repo.commit('the gunicorn console script as a local wheel')
  const env = `DATABASE_URL=sqlite:///${t.deployPath}/shared/db.sqlite3\nSECRET_KEY=${'k'.repeat(60)}\n`
  const w = await t.run(`mkdir -p ${shq(t.deployPath)}/shared && cat > ${shq(t.deployPath)}/shared/.env`, {
    input: env
  })
  expect(w.code).toBe(0)
  // What the README tells users: nginx serves /static/ from <deploy-path>/static.
  const conf = readFileSync(t.nginxConf, 'utf8')
  const served = conf.replace(/alias [^;\n]*\/current\/static\/;/, `alias ${t.deployPath}/static/;`)
  expect(served).not.toBe(conf)
  writeFileSync(t.nginxConf, served)
  execFileSync('/usr/sbin/nginx', ['-c', t.nginxConf, '-s', 'reload'])
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test("after the switch the previous release's hashed CSS still answers 200; cleanup removes what only removed releases had", async () => {
  const first = await runAction(deployInputs(t, { checks: 'check, migrations, test' }), {
    workspace: repo.dir,
    env: { GITHUB_REF: 'refs/tags/v1' }
  })
  expectOk(first)
  await t.startGunicorn()
  const v1css = await stylesheet()
  expect((await get(v1css)).status).toBe(200)
  const dry = await runAction(liveInputs(t, { checks: 'check', 'dry-run': 'true', 'release-name': 'dry' }), {
    workspace: repo.dir,
    env: { GITHUB_REF: 'refs/tags/dry' }
  })
  expectOk(dry)
  expect(dry.log).toMatch(/# collectstatic\n[\s\S]*# static\n[\s\S]*# switch\n[\s\S]*# static-live\n/)

  await deploy('v2')
  const v2css = await stylesheet()
  expect(v2css).not.toBe(v1css)
  // The page v1 served asks for its own CSS: still there, with v1's content.
  const old = await get(v1css)
  expect(old.status).toBe(200)
  expect(old.body).not.toContain('/* v2 */')
  expect((await get(v2css)).body).toContain('/* v2 */')

  // A release refused before the switch (its health URL answers 500) leaves only extra names behind: the
  // unhashed name still serves the live release's content.
  const views = repo.read('shop/views.py')
  const down = views.replace(
    "HttpResponse('ok', content_type='text/plain')",
    "HttpResponse('down', status=500)"
  )
  expect(down).not.toBe(views)
  repo.write('shop/views.py', down)
  await expect(deploy('v2-broken')).rejects.toThrow(/health-before-switch/)
  repo.write('shop/views.py', views).commit('fixed')
  expect((await get('/static/css/styles.css')).body).toContain('/* v2 */')
  expect((await get(v2css)).status).toBe(200)
  expect((await get(v1css)).status).toBe(200)

  await deploy('v3', { 'keep-releases': '2' })
  await deploy('v4', { 'keep-releases': '2' })
  const v4css = await stylesheet()
  // v1 and v2 are gone (only v3 and v4 are kept): so are the files only they had.
  expect(
    execFileSync('ls', [join(t.deployPath, 'releases')])
      .toString()
      .split('\n')
      .filter(Boolean)
  ).toEqual(['v3', 'v4'])
  expect((await get(v1css)).status).toBe(404)
  expect((await get(v2css)).status).toBe(404)
  expect((await get(v4css)).status).toBe(200)
  // The unhashed name serves the live release's content.
  expect((await get('/static/css/styles.css')).body).toContain('/* v4 */')
})
