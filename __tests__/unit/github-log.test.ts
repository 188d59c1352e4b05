/**
 * The log edge: text a server or the project prints reaches the job log only inside a quiet part
 * (`::stop-commands::<token>` … `::<token>::`), and the checks on the runner write through a log passed in.
 */
import { jest } from '@jest/globals'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runChecks, type ChecksLog } from '../../src/django/checks.js'
import { actionsLog, asData } from '../../src/github/log.js'

/** What the log edge writes to stdout (the runner reads workflow commands from it) while `fn` runs. */
async function stdoutOf(fn: () => void | Promise<void>): Promise<string[]> {
  const lines: string[] = []
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split(/\r?\n/).filter(Boolean))
    return true
  })
  try {
    await fn()
  } finally {
    spy.mockRestore()
  }
  return lines
}

const START = /^::stop-commands::([0-9a-f]{32})$/

test('asData wraps text between a random stop-commands token and its end', () => {
  const a = asData('::add-mask::x\n::error::y').split('\n')
  expect(a[0]).toMatch(START)
  expect(a.slice(1, 3)).toEqual(['::add-mask::x', '::error::y'])
  expect(a[3]).toBe(`::${START.exec(a[0])![1]}::`)
  expect(asData('x').split('\n')[0]).not.toBe(a[0])
})

test('output lines share one quiet part that ends before a line of our own', async () => {
  const lines = await stdoutOf(() => {
    const log = actionsLog()
    log.output('::add-mask::secret')
    log.output('::error::not a command')
    log.info('done')
    log.output('again')
    log.flush()
  })
  expect(lines[0]).toMatch(START)
  const token = START.exec(lines[0])![1]
  expect(lines.slice(1)).toEqual([
    '::add-mask::secret',
    '::error::not a command',
    `::${token}::`,
    'done',
    expect.stringMatching(START),
    'again',
    expect.stringMatching(/^::[0-9a-f]{32}::$/)
  ])
})

test('data is plain when it cannot be a command, quiet when it could', async () => {
  const lines = await stdoutOf(() => {
    const log = actionsLog()
    log.data('python3 manage.py check')
    log.data('python\n::add-mask::x')
  })
  expect(lines[0]).toBe('python3 manage.py check')
  expect(lines[1]).toMatch(START)
  expect(lines.slice(2)).toEqual(['python', '::add-mask::x', `::${START.exec(lines[1])![1]}::`])
})

test('warnings go through the filter for published text', async () => {
  const lines = await stdoutOf(() => actionsLog(t => t.replace('hunter22', '***')).warning('key hunter22'))
  expect(lines).toEqual(['::warning::key ***'])
})

test('the checks write to the log they are given: groups, a quiet part around the output, data', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dd-i17-log-'))
  const calls: string[] = []
  const log: ChecksLog = {
    startGroup: t => void calls.push(`group ${t}`),
    endGroup: () => void calls.push('end group'),
    info: m => void calls.push(`info ${m}`),
    data: m => void calls.push(`data ${m}`),
    quiet: () => {
      calls.push('quiet')
      return () => void calls.push('loud')
    }
  }
  try {
    const out = await stdoutOf(async () => {
      const [r] = await runChecks({
        workingDirectory: dir,
        python: 'python3',
        checks: ['test'],
        testCommand: 'echo "::add-mask::x"; exit 3',
        repoRoot: dir,
        runnerEnv: { PATH: process.env.PATH },
        log
      })
      expect(r.outcome).toBe('failed')
    })
    expect(calls).toEqual([
      'group test: echo "::add-mask::x"; exit 3',
      'quiet',
      'loud',
      expect.stringMatching(/^info test failed in [\d.]+s with \d+ finding\(s\)$/),
      'end group'
    ])
    // The check's own output is echoed to stdout (inside the quiet part the log opened), nothing else is.
    expect(out).toEqual(['::add-mask::x'])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
