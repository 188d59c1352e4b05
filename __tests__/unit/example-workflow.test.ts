/**
 * docs/example-deploy.yml works as written: its triggers, the `type: choice` mode, inputs the action has, pip
 * installs that do not inherit a requirements file's --no-index, checks the example project passes on the runner
 * (the e2e django-checks run them against real Django), and no doubled GitHub deployment.
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
