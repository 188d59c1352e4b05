import { checkEnvironment, withheld } from '../../src/django/env.js'

const runner = {
  PATH: '/usr/bin:/bin',
  HOME: '/home/runner',
  LANG: 'C.UTF-8',
  LC_ALL: 'C.UTF-8',
  PYTHONPATH: '/opt/py',
  VIRTUAL_ENV: '/venv',
  CI: 'true',
  GITHUB_REPOSITORY: 'acme/shop',
  GITHUB_SHA: 'abc',
  RUNNER_OS: 'Linux',
  RUNNER_TEMP: '/tmp/runner',
  'INPUT_SSH-KEY': '-----BEGIN OPENSSH PRIVATE KEY-----',
  'INPUT_SSH-KEY-PASSPHRASE': 'pass',
  'INPUT_GITHUB-TOKEN': 'ghs_x',
  INPUT_PYTHON: 'python3',
  ACTIONS_RUNTIME_TOKEN: 'rt',
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'idt',
  ACTIONS_ID_TOKEN_REQUEST_URL: 'https://x',
  ACTIONS_CACHE_URL: 'https://cache',
  ACTIONS_RESULTS_URL: 'https://results',
  GITHUB_TOKEN: 'ghs_y',
  GITHUB_ENV: '/tmp/env',
  GITHUB_OUTPUT: '/tmp/out',
  GITHUB_PATH: '/tmp/path',
  GITHUB_STATE: '/tmp/state',
  GITHUB_STEP_SUMMARY: '/tmp/summary',
  AWS_SECRET_ACCESS_KEY: 'aws',
  DATABASE_URL: 'postgres://x',
  DJANGO_DEBUG: '1',
  DJANGO_SECRET_KEY: 'job-secret',
  UNSET: undefined
}

describe('checkEnvironment', () => {
  test("passes the job's environment, minus the action's inputs, the runner's tokens and command files", () => {
    expect(checkEnvironment(runner)).toEqual({
      PATH: '/usr/bin:/bin',
      HOME: '/home/runner',
      LANG: 'C.UTF-8',
      LC_ALL: 'C.UTF-8',
      PYTHONPATH: '/opt/py',
      VIRTUAL_ENV: '/venv',
      CI: 'true',
      GITHUB_REPOSITORY: 'acme/shop',
      GITHUB_SHA: 'abc',
      RUNNER_OS: 'Linux',
      RUNNER_TEMP: '/tmp/runner',
      // The job's own `env:`: every run: step of the job sees it too.
      AWS_SECRET_ACCESS_KEY: 'aws',
      DATABASE_URL: 'postgres://x',
      DJANGO_DEBUG: '1',
      DJANGO_SECRET_KEY: 'job-secret'
    })
  })

  test.each([
    'INPUT_SSH-KEY',
    'input_python',
    'ACTIONS_RUNTIME_TOKEN',
    'ACTIONS_ID_TOKEN_REQUEST_URL',
    'GITHUB_TOKEN',
    'GITHUB_ENV',
    'GITHUB_OUTPUT',
    'GITHUB_PATH',
    'GITHUB_STATE',
    'GITHUB_STEP_SUMMARY'
  ])('withholds %s', name => {
    expect(withheld(name)).toBe(true)
  })

  test.each(['GITHUB_TOKENS', 'MY_INPUT_X', 'GITHUB_ENV_FILE', 'RUNNER_TEMP', 'DJANGO_SECRET_KEY'])(
    'passes %s',
    name => {
      expect(withheld(name)).toBe(false)
    }
  )
})
