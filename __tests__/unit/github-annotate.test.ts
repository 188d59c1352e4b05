import { jest } from '@jest/globals'
import type { CheckResult } from '../../src/report.js'

const error = jest.fn()
const warning = jest.fn()
const notice = jest.fn()
const info = jest.fn()
jest.unstable_mockModule('@actions/core', () => ({ error, warning, notice, info }))

const { annotate } = await import('../../src/github/annotate.js')

function check(over: Partial<CheckResult>): CheckResult {
  return {
    name: 'check',
    command: 'python manage.py check',
    outcome: 'failed',
    durationMs: 1,
    findings: [],
    tail: '',
    ...over
  }
}

beforeEach(() => {
  jest.clearAllMocks()
})

describe('annotate', () => {
  it('sends each finding to the matching level with title, file and line', () => {
    annotate([
      check({
        findings: [
          {
            level: 'warning',
            title: 'security.W018',
            message: 'DEBUG is True.',
            file: 'mysite/settings.py',
            line: 26
          }
        ]
      }),
      check({
        name: 'test',
        findings: [
          {
            level: 'error',
            title: 'test_home (app.tests.HomeTests)',
            message: 'AssertionError',
            file: 'app/tests.py',
            line: 9
          },
          { level: 'notice', message: 'Ran 3 tests' }
        ]
      })
    ])
    expect(warning).toHaveBeenCalledTimes(1)
    expect(warning).toHaveBeenCalledWith('DEBUG is True.', {
      title: 'check: security.W018',
      file: 'mysite/settings.py',
      startLine: 26
    })
    expect(error).toHaveBeenCalledTimes(1)
    expect(error).toHaveBeenCalledWith('AssertionError', {
      title: 'test: test_home (app.tests.HomeTests)',
      file: 'app/tests.py',
      startLine: 9
    })
    // No file: no location keys at all, and a title naming the check.
    expect(notice).toHaveBeenCalledWith('Ran 3 tests', { title: 'django test' })
  })

  it('drops a line that has no file to belong to', () => {
    annotate([check({ findings: [{ level: 'error', message: 'm', line: 4 }] })])
    expect(error).toHaveBeenCalledWith('m', { title: 'django check' })
  })

  it('does nothing for checks without findings', () => {
    annotate([check({ outcome: 'passed' })])
    expect(error).not.toHaveBeenCalled()
    expect(warning).not.toHaveBeenCalled()
    expect(notice).not.toHaveBeenCalled()
  })

  it('stops at 50 annotations per level and says how many were left out', () => {
    const findings = Array.from({ length: 60 }, (_, i) => ({ level: 'warning' as const, message: `w${i}` }))
    annotate([check({ findings: [...findings, { level: 'error', message: 'still annotated' }] })])
    expect(warning).toHaveBeenCalledTimes(50)
    expect(error).toHaveBeenCalledWith('still annotated', { title: 'django check' })
    expect(info).toHaveBeenCalledWith('10 more findings were not annotated (see the job summary).')
  })
})
