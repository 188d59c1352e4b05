/**
 * docs/example-deploy.yml works as written: its triggers, the `type: choice` mode, inputs the action has, pip
 * installs that do not inherit a requirements file's --no-index, checks the example project passes on the runner
 * (the e2e django-checks run them against real Django), and no doubled GitHub deployment.
 * docs/example-setup.yml makes the server those deploys expect: same hosts, user, key, path and project, its
 * app the deploys' gunicorn-service.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { CHECK_NAMES, INPUTS } from '../../src/settings.js'

interface Step {
  uses?: string
  run?: string
  with?: Record<string, string>
}
const wf = parse(readFileSync('docs/example-deploy.yml', 'utf8')) as {
  on: {
    push: { tags: string[] }
    workflow_dispatch: { inputs: Record<string, { type: string; options?: string[]; default?: string }> }
  }
  jobs: Record<string, { environment?: unknown; steps: Step[] }>
}
const job = Object.values(wf.jobs)[0]
const action = job.steps.find(s => s.uses === './')!

test('runs on tag pushes and by hand, the manual mode a choice of real modes', () => {
  expect(wf.on.push.tags).toEqual(['v*'])
  const mode = wf.on.workflow_dispatch.inputs.mode
  expect(mode.type).toBe('choice')
  expect(mode.options).toEqual(expect.arrayContaining(['deploy', 'rollback']))
  for (const o of mode.options!) expect(['check', 'deploy', 'rollback']).toContain(o)
  expect(mode.options).toContain(mode.default)
  // a tag push has no inputs: auto, which deploys a tag
  expect(action.with!.mode).toBe("${{ inputs.mode || 'auto' }}")
})

test('passes only inputs the action has', () => {
  for (const key of Object.keys(action.with!)) expect(Object.keys(INPUTS)).toContain(key)
  const checks = action.with!.checks.split(/,\s*/)
  for (const c of checks) expect(CHECK_NAMES).toContain(c)
  // the example's settings are CI's (DEBUG on): Django's deploy check runs on the server instead
  expect(checks).not.toContain('deploy')
})

test('pip never installs a package from PyPI in the command that reads a --no-index requirements file', () => {
  const installs = job.steps.map(s => s.run ?? '').filter(r => /pip install/.test(r))
  expect(installs.length).toBeGreaterThan(0)
  for (const run of installs) {
    const m = /-r\s+(\S+)/.exec(run)
    if (!m) continue
    const file = readFileSync(join(m[1]), 'utf8')
    if (!/^--no-index/m.test(file)) continue
    expect(run.trim()).toBe(`pip install -r ${m[1]}`)
  }
  expect(installs.some(r => /pip install 'django/.test(r))).toBe(true)
})

test("the job's environment records the deployment, so the action creates none", () => {
  expect(job.environment).toBeDefined()
  expect(String(action.with!['github-deployment'])).toBe('false')
  expect(action.with!['environment-url']).toBeUndefined()
})

const setupWf = parse(readFileSync('docs/example-setup.yml', 'utf8')) as {
  on: Record<string, { inputs?: Record<string, { type: string; default?: unknown }> }>
  concurrency: { group: string }
  jobs: Record<string, { steps: Step[] }>
}
const setup = Object.values(setupWf.jobs)[0].steps.find(s => s.uses === './')!
const deployWf = parse(readFileSync('docs/example-deploy.yml', 'utf8')) as { concurrency: { group: string } }

test('the setup example runs by hand only, in mode setup, with inputs the action has', () => {
  expect(Object.keys(setupWf.on)).toEqual(['workflow_dispatch'])
  expect(setup.with!.mode).toBe('setup')
  for (const key of Object.keys(setup.with!)) expect(Object.keys(INPUTS)).toContain(key)
  for (const key of ['setup-ssh-key', 'domains', 'ssh-key', 'env-file']) expect(setup.with![key]).toBeTruthy()
  expect(setupWf.on.workflow_dispatch.inputs!['dry-run'].type).toBe('boolean')
  expect(setup.with!['dry-run']).toBe('${{ inputs.dry-run }}')
  // never while a deploy runs
  expect(setupWf.concurrency.group).toBe(deployWf.concurrency.group)
})

test('the deploy example deploys to the server the setup example made: its units, user, key and path', () => {
  const w = action.with!
  for (const key of ['hosts', 'known-hosts', 'user', 'ssh-key', 'deploy-path', 'working-directory'])
    expect([key, w[key]]).toEqual([key, setup.with![key]])
  expect(w['gunicorn-service']).toBe(setup.with!.app)
  expect(w['gunicorn-pidfile']).toBeUndefined()
  expect(String(w.nginx)).toBe('true')
  expect(w['health-check-url']).toMatch(new RegExp(`^https://${setup.with!.domains.split(/[\s,]+/)[0]}/`))
})
