import { jest } from '@jest/globals'
import type { CheckResult } from '../../src/report.js'

const error = jest.fn()
const warning = jest.fn()
const notice = jest.fn()
const info = jest.fn()
jest.unstable_mockModule('@actions/core', () => ({ error, warning, notice, info }))

const { annotate, planAnnotations } = await import('../../src/github/annotate.js')

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

  it("stops at GitHub's 10 annotations per level per step and says how many were left out", () => {
    const warnings = Array.from({ length: 14 }, (_, i) => ({ level: 'warning' as const, message: `w${i}` }))
    const notices = Array.from({ length: 11 }, (_, i) => ({ level: 'notice' as const, message: `n${i}` }))
    const omitted = annotate([
      check({
        outcome: 'passed',
        findings: [...warnings, { level: 'error', message: 'still annotated' }, ...notices]
      })
    ])
    expect(warning).toHaveBeenCalledTimes(10)
    expect(warning).toHaveBeenLastCalledWith('w9', { title: 'django check' })
    expect(notice).toHaveBeenCalledTimes(10)
    expect(error).toHaveBeenCalledWith('still annotated', { title: 'django check' })
    expect(omitted).toBe(5)
    expect(info).toHaveBeenCalledWith(
      '5 more findings were not annotated (4 warnings, 1 notice): GitHub shows at most 10 annotations of each level per step; the job summary lists the findings.'
    )
  })

  it('keeps one error annotation free for the failure message when a check failed', () => {
    const errors = Array.from({ length: 12 }, (_, i) => ({ level: 'error' as const, message: `e${i}` }))
    expect(annotate([check({ outcome: 'failed', findings: errors })])).toBe(3)
    expect(error).toHaveBeenCalledTimes(9)
    expect(info).toHaveBeenCalledWith(
      expect.stringMatching(/^3 more findings were not annotated \(3 errors\)/)
    )
    jest.clearAllMocks()
    // the reserve is for errors only: ten warnings in a failed run all fit
    const warnings = Array.from({ length: 10 }, (_, i) => ({ level: 'warning' as const, message: `w${i}` }))
    expect(annotate([check({ outcome: 'failed', findings: warnings })])).toBe(0)
    expect(warning).toHaveBeenCalledTimes(10)
    expect(info).not.toHaveBeenCalled()
  })

  it('planAnnotations counts per level across checks, in order', () => {
    const e = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ level: 'error' as const, message: `e${i}` }))
    const plan = planAnnotations([check({ findings: e(6) }), check({ name: 'test', findings: e(6) })], {
      error: 1
    })
    expect(plan.annotate.map(a => `${a.check}:${a.finding.message}`)).toEqual([
      ...e(6).map(f => `check:${f.message}`),
      'test:e0',
      'test:e1',
      'test:e2'
    ])
    expect(plan.omitted).toEqual({ error: 3, warning: 0, notice: 0 })
  })
})
