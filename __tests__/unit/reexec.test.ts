import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import {
  HANDOFF_VARIABLE,
  holdsSecrets,
  reexecWithoutSecrets,
  splitEnvironment,
  takeHandoff,
  writeHandoff
} from '../../src/reexec.js'

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

describe('a handoff variable set by someone else (an earlier step through GITHUB_ENV)', () => {
  const base = mkdtempSync(join(tmpdir(), 'dd-handoff-foreign-'))
  afterAll(() => rmSync(base, { recursive: true, force: true }))

  test('names a file the action did not make: refused, nothing read or deleted', () => {
    const dir = join(base, 'workspace')
    mkdirSync(dir, { mode: 0o700 })
    const file = join(dir, 'inputs.json')
    writeFileSync(file, JSON.stringify({ INPUT_HOST: 'evil.example' }), { mode: 0o600 })
    expect(() => takeHandoff(file)).toThrow(/names no file this action made/)
    expect(existsSync(file)).toBe(true)
    // The right shape but open to others: refused too.
    const loose = mkdtempSync(join(base, 'django-deploy-'))
    chmodSync(loose, 0o755)
    writeFileSync(join(loose, 'inputs.json'), '{}', { mode: 0o600 })
    expect(() => takeHandoff(join(loose, 'inputs.json'))).toThrow(/names no file this action made/)
    expect(existsSync(join(loose, 'inputs.json'))).toBe(true)
  })

  test('beside the inputs (the first image): ignored, the file untouched, the inputs as the runner set them', () => {
    const file = writeHandoff({ INPUT_HOST: 'evil.example' }, [base])
    const saved = { ...process.env }
    process.env.INPUT_HOST = 'web1.example'
    process.env[HANDOFF_VARIABLE] = file
    try {
      reexecWithoutSecrets()
      expect(process.env.INPUT_HOST).toBe('web1.example')
      expect(process.env[HANDOFF_VARIABLE]).toBeUndefined()
      expect(existsSync(file)).toBe(true)
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k]
      Object.assign(process.env, saved)
    }
  })
})
