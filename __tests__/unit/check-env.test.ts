import { checkEnvironment, refusedName } from '../../src/django/env.js'

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
  UNSET: undefined
}

describe('checkEnvironment', () => {
  test('passes the allow-list and nothing else', () => {
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
      RUNNER_TEMP: '/tmp/runner'
    })
  })

  test('check-env adds names and prefixes, but never an input, a token or a command file', () => {
    const env = checkEnvironment(runner, ['DATABASE_URL', 'DJANGO_*', 'GITHUB_TOKEN', 'INPUT_*', 'ACTIONS_*'])
    expect(env.DATABASE_URL).toBe('postgres://x')
    expect(env.DJANGO_DEBUG).toBe('1')
    for (const name of Object.keys(env))
      expect(name).not.toMatch(/^(INPUT_|ACTIONS_)|TOKEN|GITHUB_(ENV|OUTPUT)/)
  })

  test.each([
    ['INPUT_SSH-KEY', /is not a variable name/],
    ['INPUT_PYTHON', /is refused/],
    ['input_*', /is refused/],
    ['INP*', /is refused/],
    ['ACTIONS_RUNTIME_TOKEN', /is refused/],
    ['GITHUB_TOKEN', /is refused/],
    ['GITHUB_ENV', /is refused/],
    ['GITHUB_STEP_SUMMARY', /is refused/],
    ['*', /would pass everything/],
    ['A B', /is not a variable name/]
  ])('refusedName(%j)', (entry, message) => {
    expect(refusedName(entry)).toMatch(message)
  })

  test.each(['DATABASE_URL', 'DJANGO_*', 'REDIS_URL', 'GITHUB_HEAD_REF'])('accepts %j', entry => {
    expect(refusedName(entry)).toBeUndefined()
  })
})
