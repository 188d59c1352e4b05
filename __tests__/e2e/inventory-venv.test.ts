/**
 * Issue 8, items 2 and 5, end to end with the built action (dist/index.js) against the sandbox target (real
 * OpenSSH, Gunicorn, nginx, Django): hosts, port and user come from an Ansible inventory in the repository;
 * a requirements change that adds a pin grows a copy of the live virtualenv (pip installs only the new one;
 * the live one is untouched) and serves the new dependency under load; unchanged requirements run no pip.
 */
import { jest } from '@jest/globals'
import { mkdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { startLoad, versionMarker } from '../../sandbox/load.js'
import { deployInputs, liveInputs } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { expectOk, Repo, runAction } from '../helpers/action.js'
import { buildWheel } from '../helpers/wheel.js'
import { get as httpGet } from '../../sandbox/http.js'

jest.setTimeout(240_000)

let t: Target
let repo: Repo
const TAG = (name: string): Record<string, string> => ({ GITHUB_REF: `refs/tags/${name}` })
const live = (): string => readlinkSync(join(t.deployPath, 'current'))
async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await httpGet(`${t.url}${path}`)
  return { status: r.status, body: r.body }
}

/** The sandbox's connection through the inventory, not the hosts/user inputs. */
function viaInventory(inputs: Record<string, string>): Record<string, string> {
  const rest = { ...inputs }
  delete rest.hosts
  delete rest.user
  return { ...rest, inventory: 'deploy/inventory.yml', 'inventory-group': 'production' }
}

beforeAll(async () => {
  t = await startTarget({ name: 'ddi8' })
  repo = new Repo()
  const env = `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3\nALLOWED_HOSTS=127.0.0.1,localhost\n`
  expect(
    (await t.run(`mkdir -p ${t.deployPath}/shared && printf '%s' '${env}' > ${t.deployPath}/shared/.env`))
      .code
  ).toBe(0)
  // The team's Ansible inventory: the sandbox is the one production web host, with its own port and user; a
  // staging host that does not exist shows that only the named group is deployed to.
  mkdirSync(join(repo.dir, 'deploy'), { recursive: true })
  repo
    .write(
      'deploy/inventory.yml',
      [
        'all:',
        '  vars:',
        '    ansible_user: nobody-here',
        '  children:',
        '    production:',
        '      children:',
        '        web:',
        '          hosts:',
        '            web1.example.com:',
        `              ansible_host: 127.0.0.1`,
        `              ansible_port: ${t.sshPort}`,
        '      vars:',
        `        ansible_user: ${t.user}`,
        '    staging:',
        '      hosts:',
        '        staging.invalid:',
        ''
      ].join('\n')
    )
    .commit('inventory')
}, 120_000)

afterAll(async () => {
  await t?.stop()
  repo?.remove()
}, 120_000)

test('a first deploy takes its host, port and user from the Ansible inventory; its virtualenv is built the normal way', async () => {
  const r = await runAction(viaInventory(deployInputs(t, { checks: 'none' })), {
    workspace: repo.dir,
    env: TAG('v1.0.0')
  })
  expectOk(r)
  expect(r.log).toContain(`127.0.0.1:${t.sshPort}: connected as ${t.user}, host key verified`)
  expect(r.log).not.toMatch(/staging\.invalid/)
  expect(r.log).not.toMatch(/seeded with pip/)
  expect(live()).toBe('releases/v1.0.0')
  await t.startGunicorn()
  expect((await get('/version/')).status).toBe(200)
})

test('changed requirements: a new pin grows a copy of the live virtualenv (pip installs only it), the new dependency is served under load with 0 failed requests', async () => {
  const wheel = buildWheel(
    join(repo.dir, 'vendor'),
    'loudly',
    '1.0',
    'def loud(s):\n    return s.upper() + "!!"\n'
  )
  repo.write('requirements.txt', repo.read('requirements.txt') + 'loudly==1.0\n')
  repo.write(
    'pages/views.py',
    repo
      .read('pages/views.py')
      .replace(
        "return HttpResponse(settings.APP_VERSION, content_type='text/plain')",
        "from loudly import loud\n    return HttpResponse(loud(settings.APP_VERSION), content_type='text/plain')"
      )
  )
  repo.write('VERSION', 'v2\n').commit(`add ${wheel}`)
  const before = readlinkSync(join(t.deployPath, 'releases/v1.0.0/.venv'))
  const load = startLoad(`${t.url}/`, { concurrency: 4, maxSeconds: 120, marker: versionMarker })
  const r = await runAction(viaInventory(liveInputs(t, { checks: 'none' })), {
    workspace: repo.dir,
    env: TAG('v2.0.0')
  })
  const result = await load.stop()
  expectOk(r)
  expect(r.log).toContain(
    `virtualenv copied from the live one (${before}): pip adds only the new requirements`
  )
  expect(r.log).toMatch(/Successfully installed loudly-1\.0$/m)
  expect(r.log).toMatch(/re-executed \(USR2\)/)
  expect({ non200: result.non200, errors: result.errors }).toEqual({ non200: 0, errors: 0 })
  expect(await get('/version/')).toEqual({ status: 200, body: 'V2!!' })
  // the new virtualenv has a pip of its own that works by hand, and knows what it installed
  const venv = readlinkSync(join(t.deployPath, 'releases/v2.0.0/.venv'))
  expect(venv).not.toBe(before)
  const pip = await t.run(
    `${t.deployPath}/current/.venv/bin/pip --version && ${t.deployPath}/current/.venv/bin/pip list`
  )
  expect(pip.code).toBe(0)
  expect(pip.stdout).toContain(`from ${venv}/lib/`)
  expect(pip.stdout).toMatch(/^loudly\s+1\.0$/m)
  // the previous release's virtualenv (the rollback target) did not get it
  const old = await t.run(`${before}/bin/pip list`)
  expect(old.code).toBe(0)
  expect(old.stdout).toMatch(/^sitebanner\s/m)
  expect(old.stdout).not.toMatch(/loudly/)
})

test('unchanged requirements run no pip at all', async () => {
  repo.write('VERSION', 'v3\n').commit('code only')
  const r = await runAction(viaInventory(liveInputs(t, { checks: 'none' })), {
    workspace: repo.dir,
    env: TAG('v3.0.0')
  })
  expectOk(r)
  expect(r.log).toMatch(/reusing virtualenv \w+ \(requirements unchanged\)/)
  expect(r.log).not.toMatch(/seeded with pip|Successfully installed|pip install/)
  expect(readlinkSync(join(t.deployPath, 'releases/v3.0.0/.venv'))).toBe(
    readlinkSync(join(t.deployPath, 'releases/v2.0.0/.venv'))
  )
  expect(await get('/version/')).toEqual({ status: 200, body: 'V3!!' })
})
