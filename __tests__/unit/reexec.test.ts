import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { holdsSecrets, splitEnvironment, takeHandoff, writeHandoff } from '../../src/reexec.js'

const env = {
  PATH: '/usr/bin',
  GITHUB_OUTPUT: '/tmp/out',
  GITHUB_STEP_SUMMARY: '/tmp/summary',
  RUNNER_DEBUG: '1',
  'INPUT_SSH-KEY': 'key\nlines',
  'INPUT_GITHUB-TOKEN': 'ghs_x',
  INPUT_MODE: 'check',
  ACTIONS_RUNTIME_TOKEN: 'rt',
  ACTIONS_ID_TOKEN_REQUEST_URL: 'https://oidc',
  GITHUB_TOKEN: 'ghs_y',
  UNSET: undefined
}

describe('splitEnvironment', () => {
  test('the re-executed action keeps the command files and context, the inputs go through the file', () => {
    expect(splitEnvironment(env)).toEqual({
      // @actions/core writes outputs and the summary through these files, and reads RUNNER_DEBUG.
      clean: {
        PATH: '/usr/bin',
        GITHUB_OUTPUT: '/tmp/out',
        GITHUB_STEP_SUMMARY: '/tmp/summary',
        RUNNER_DEBUG: '1'
      },
      // Runner tokens are dropped: the action reads its token from the github-token input.
      inputs: { 'INPUT_SSH-KEY': 'key\nlines', 'INPUT_GITHUB-TOKEN': 'ghs_x', INPUT_MODE: 'check' }
    })
  })

  test('holdsSecrets: only when there is something to take out', () => {
    expect(holdsSecrets(env)).toBe(true)
    expect(holdsSecrets({ PATH: '/bin', GITHUB_TOKEN: 'x' })).toBe(true)
    expect(holdsSecrets({ PATH: '/bin', ACTIONS_CACHE_URL: 'x' })).toBe(true)
    expect(holdsSecrets({ PATH: '/bin', GITHUB_OUTPUT: '/tmp/o', MY_INPUT_X: 'y' })).toBe(false)
  })
})

describe('the handoff file', () => {
  const base = mkdtempSync(join(tmpdir(), 'dd-handoff-'))
  afterAll(() => rmSync(base, { recursive: true, force: true }))

  test('is 0600 in a fresh 0700 directory, and both are gone once read', () => {
    const inputs = { 'INPUT_SSH-KEY': 'key\nlines', 'INPUT_SSH-KEY-PASSPHRASE': 'p"w\\' }
    const file = writeHandoff(inputs, [base])
    expect(dirname(dirname(file))).toBe(base)
    expect(statSync(dirname(file)).mode & 0o777).toBe(0o700)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(takeHandoff(file)).toEqual(inputs)
    expect(existsSync(dirname(file))).toBe(false)
  })

  test('falls back to the next directory when the first cannot be used', () => {
    const file = writeHandoff({ INPUT_A: 'b' }, [join(base, 'missing', 'dir'), base])
    expect(dirname(dirname(file))).toBe(base)
    expect(takeHandoff(file)).toEqual({ INPUT_A: 'b' })
  })

  test('a file that cannot be read throws, and its directory still goes', () => {
    const file = writeHandoff({ INPUT_A: 'b' }, [base])
    rmSync(file)
    expect(() => takeHandoff(file)).toThrow(/ENOENT/)
    expect(existsSync(dirname(file))).toBe(false)
  })
})
