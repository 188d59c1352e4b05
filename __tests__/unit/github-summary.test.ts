import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatDuration, overallResult, renderSummary, writeSummary } from '../../src/github/summary.js'
import { ANNOTATION_LIMITS, planAnnotations } from '../../src/github/annotate.js'
import { code, codeBlock } from '../../src/github/markdown.js'
import type { CheckResult, DeployResult, Finding, Report } from '../../src/report.js'

function check(over: Partial<CheckResult> = {}): CheckResult {
  return {
    name: 'check',
    command: 'python manage.py check',
    outcome: 'passed',
    durationMs: 1234,
    findings: [],
    tail: '',
    ...over
  }
}

function deploy(over: Partial<DeployResult> = {}): DeployResult {
  return {
    release: '20260101T120000Z-abc1234',
    previousRelease: '20251231T090000Z-def5678',
    deployed: true,
    rolledBack: false,
    dryRun: false,
    steps: [
      { host: 'web1.example.com', step: 'upload', outcome: 'ok', durationMs: 2100 },
      { host: 'web1.example.com', step: 'migrate', outcome: 'ok', durationMs: 800 }
    ],
    ...over
  }
}

/** Rows of the Markdown table that follows `header`, split into cells the way GFM does (unescaped `|`). */
function tableRows(md: string, header: string): string[][] {
  const lines = md.split('\n')
  const start = lines.findIndex(l => l.startsWith(header))
  expect(start).toBeGreaterThanOrEqual(0)
  const rows: string[][] = []
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break
    rows.push(
      line
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map(c => c.trim())
    )
  }
  return rows
}

describe('renderSummary: checks', () => {
  it('renders the heading with mode and result, and one table row per check', () => {
    const report: Report = {
      mode: 'check',
      checks: [
        check(),
        check({
          name: 'test',
          command: 'python manage.py test',
          outcome: 'failed',
          durationMs: 65_400,
          tail: 'FAILED (failures=1)'
        })
      ]
    }
    const md = renderSummary(report)
    expect(md.split('\n')[0]).toBe('## ❌ Django check: failed')
    const rows = tableRows(md, '| Check |')
    expect(rows).toEqual([
      ['`check`', '✅ passed', '1.2 s', '0'],
      ['`test`', '❌ failed', '1 min 5 s', '0']
    ])
    // The tail of the failed check is there, collapsed; the passing check has none.
    expect(md).toContain('<details><summary>Output of <code>python manage.py test</code></summary>')
    expect(md).toContain('```\nFAILED (failures=1)\n```')
  })

  it('says passed when every check passed, and that nothing ran when none were selected', () => {
    expect(renderSummary({ mode: 'check', checks: [check()] }).split('\n')[0]).toBe(
      '## ✅ Django check: passed'
    )
    const none = renderSummary({ mode: 'check', checks: [] })
    expect(none.split('\n')[0]).toBe('## ⚪ Django check: skipped')
    expect(none).toContain('No checks were selected.')
    expect(none).not.toContain('| Check |')
  })

  it('lists findings with level, title, file:line and message', () => {
    const findings: Finding[] = [
      {
        level: 'warning',
        title: 'security.W018',
        message: 'DEBUG is True.',
        file: 'mysite/settings.py',
        line: 26
      },
      {
        level: 'error',
        title: 'test_home (app.tests.HomeTests)',
        message: 'AssertionError: 404 != 200',
        file: 'app/tests.py'
      }
    ]
    const md = renderSummary({ mode: 'check', checks: [check({ outcome: 'failed', findings })] })
    expect(md).toContain('#### Findings (2)')
    const rows = tableRows(md, '| Level |')
    // Errors come first whatever order the tool printed them in.
    expect(rows).toEqual([
      [
        '❌ error',
        '`check`',
        'test\\_home (app.tests.HomeTests)',
        '`app/tests.py`',
        'AssertionError: 404 != 200'
      ],
      ['⚠️ warning', '`check`', 'security.W018', '`mysite/settings.py:26`', 'DEBUG is True.']
    ])
  })

  it('escapes pipes, newlines, HTML and backticks so a message cannot break the table', () => {
    const findings: Finding[] = [
      {
        level: 'error',
        title: 'a|b',
        message: 'line one | with pipe\nline two <details> `x` *y*',
        file: 'we|ird `name`.py',
        line: 3
      }
    ]
    const md = renderSummary({ mode: 'check', checks: [check({ outcome: 'failed', findings })] })
    const rows = tableRows(md, '| Level |')
    expect(rows).toHaveLength(1)
    // Exactly five cells: no pipe escaped its cell.
    expect(rows[0]).toHaveLength(5)
    expect(rows[0][2]).toBe('a\\|b')
    expect(rows[0][3]).toBe('``we\\|ird `name`.py:3``')
    expect(rows[0][4]).toBe('line one \\| with pipe<br>line two &lt;details&gt; \\`x\\` \\*y\\*')
    expect(md).not.toContain('<details> ')
  })

  it('caps the findings list and says how many more there are', () => {
    const findings: Finding[] = Array.from({ length: 70 }, (_, i) => ({
      level: i === 69 ? 'error' : 'notice',
      message: `finding ${i}`
    }))
    const md = renderSummary({ mode: 'check', checks: [check({ findings })] })
    const rows = tableRows(md, '| Level |')
    expect(rows).toHaveLength(50)
    // The one error was last but is shown first, not cut.
    expect(rows[0][4]).toBe('finding 69')
    expect(md).toContain('#### Findings (70)')
    expect(md).toContain('_… and 20 more findings not shown._')
    expect(renderSummary({ mode: 'check', checks: [check({ findings })] }, { maxFindings: 5 })).toContain(
      '_… and 65 more findings not shown._'
    )
  })

  it('shows the run error and a link to the run', () => {
    const md = renderSummary(
      { mode: 'check', checks: [], error: 'manage.py not found in ./app' },
      { runUrl: 'https://github.com/o/r/actions/runs/42' }
    )
    expect(md.split('\n')[0]).toBe('## ❌ Django check: failed')
    expect(md).toContain('**Error:** manage.py not found in ./app')
    expect(md).toContain('[View the workflow run](https://github.com/o/r/actions/runs/42)')
    // A non-http URL is not turned into a link.
    expect(renderSummary({ mode: 'check', checks: [] }, { runUrl: 'javascript:alert(1)' })).not.toContain(
      'View the'
    )
  })
})

describe('renderSummary: deploy', () => {
  it('shows the release, the previous release and a steps table', () => {
    const md = renderSummary({ mode: 'deploy', checks: [check()], deploy: deploy() })
    expect(md.split('\n')[0]).toBe('## ✅ Django deploy: deployed')
    expect(md).toContain('**Release:** `20260101T120000Z-abc1234`')
    expect(md).toContain('**Previous release:** `20251231T090000Z-def5678`')
    expect(tableRows(md, '| Host |')).toEqual([
      ['`web1.example.com`', 'upload', '✅ ok', '2.1 s'],
      ['`web1.example.com`', 'migrate', '✅ ok', '0.8 s']
    ])
    expect(md).not.toContain('rolled back')
  })

  it('a fleet: a row per host with its releases, bytes, steps and time; the steps listed host by host', () => {
    const step = (host: string, name: string, ms: number, outcome: 'ok' | 'failed' = 'ok') => ({
      host,
      step: name,
      outcome,
      durationMs: ms
    })
    const md = renderSummary({
      mode: 'deploy',
      checks: [],
      deploy: deploy({
        deployed: false,
        hosts: [
          { host: 'web1', previous: 'v1', live: 'v1', bytesSent: 2048 },
          { host: 'web2', previous: 'v1', live: 'v1' }
        ],
        // As a fleet records them: the hosts' steps interleaved in time.
        steps: [
          step('web2', 'connect', 300),
          step('web1', 'connect', 200),
          step('web1', 'upload', 1500),
          step('web2', 'upload', 900),
          step('web2', 'preflight', 400, 'failed')
        ]
      })
    })
    expect(tableRows(md, '| Host | Before |')).toEqual([
      ['`web1`', '`v1`', '`v1`', '2.0 KiB', '2 ✅', '1.7 s'],
      ['`web2`', '`v1`', '`v1`', '–', '❌ preflight', '1.6 s']
    ])
    expect(tableRows(md, '| Host | Step |').map(r => `${r[0]} ${r[1]}`)).toEqual([
      '`web1` connect',
      '`web1` upload',
      '`web2` connect',
      '`web2` upload',
      '`web2` preflight'
    ])
  })

  it('shows the error line, the failed step output and that it rolled back', () => {
    const d = deploy({
      deployed: false,
      rolledBack: true,
      error: 'health check failed on web2: HTTP 502 after 30 s',
      steps: [
        { host: 'web2', step: 'switch', outcome: 'ok', durationMs: 10 },
        {
          host: 'web2',
          step: 'health check',
          outcome: 'failed',
          durationMs: 30_000,
          detail: 'exit 1\nHTTP 502'
        },
        { host: 'web3', step: 'switch', outcome: 'ok', durationMs: 0 }
      ]
    })
    const md = renderSummary({ mode: 'deploy', checks: [], deploy: d })
    expect(md.split('\n')[0]).toBe('## ❌ Django deploy: failed (rolled back)')
    expect(md).toContain('**Error:** health check failed on web2: HTTP 502 after 30 s')
    expect(md).toContain('↩️ **rolled back**; `20251231T090000Z-def5678` is live again.')
    expect(tableRows(md, '| Host |').map(r => r[2])).toEqual(['✅ ok', '❌ failed', '✅ ok'])
    expect(md).toContain(
      '<details><summary>Failed step health check on <code>web2</code></summary>\n\n```\nexit 1\nHTTP 502\n```'
    )
  })

  it('puts the dry-run plan per host in a collapsible code block', () => {
    const d = deploy({
      deployed: false,
      dryRun: true,
      steps: [],
      plan: [
        {
          phase: 'update',
          onFailure: 'stop',
          batches: [
            [
              { host: 'web1:22', steps: ['mkdir -p /srv/app/releases/R'] },
              { host: '<web2>', steps: ['true'] }
            ]
          ]
        },
        { phase: 'publish', onFailure: 'revert', batches: [[{ host: 'web1:22', steps: ['echo ```'] }]] }
      ]
    })
    const md = renderSummary({ mode: 'deploy', checks: [], deploy: d })
    expect(md.split('\n')[0]).toBe('## 📝 Django deploy: dry run')
    expect(md).toContain('### Dry run')
    // The fence is longer than the backticks inside, so the plan cannot close its own block.
    expect(md).toContain(
      '<details><summary>Plan for <code>web1:22</code> (2 commands)</summary>\n\n````sh\nmkdir -p /srv/app/releases/R\necho ```\n````\n\n</details>'
    )
    expect(md).toContain('<summary>Plan for <code>&lt;web2&gt;</code> (1 command)</summary>')
  })

  it('shortens a very long plan and says so', () => {
    const lines = Array.from({ length: 400 }, (_, i) => `echo step ${i}`)
    const md = renderSummary({
      mode: 'deploy',
      checks: [],
      deploy: deploy({
        dryRun: true,
        deployed: false,
        plan: [{ phase: 'update', onFailure: 'stop', batches: [[{ host: 'h', steps: lines }]] }]
      })
    })
    expect(md).toContain('(400 commands)')
    expect(md).toContain('echo step 149\n# … 250 more not shown')
    expect(md).not.toContain('echo step 150\n')
  })

  it('names a successful rollback as such', () => {
    const d = deploy({ release: '20251231T090000Z-def5678', previousRelease: '20260101T120000Z-abc1234' })
    const md = renderSummary({ mode: 'rollback', checks: [], deploy: d })
    expect(md.split('\n')[0]).toBe('## ✅ Django rollback: rolled back')
    expect(md).toContain('### Rollback')
  })

  it('fails the deploy heading when checks failed before deploying', () => {
    expect(overallResult({ mode: 'deploy', checks: [check({ outcome: 'failed' })] })).toBe('failed')
    expect(overallResult({ mode: 'deploy', checks: [check()] })).toBe('not run')
  })

  it('stays under the size of a GitHub comment however much the tools printed', () => {
    // `<` and `&` grow fourfold when escaped, so this is the worst case per character, not just long text.
    const big = '<&|\n'.repeat(25_000)
    const findings: Finding[] = Array.from({ length: 500 }, () => ({
      level: 'error',
      message: big,
      title: big,
      file: big,
      line: 1
    }))
    const checks = (['check', 'deploy', 'migrations', 'test'] as const).map(name =>
      check({ name, command: big, outcome: 'failed', tail: big, findings })
    )
    const steps = Array.from({ length: 1000 }, (_, i) => ({
      host: `${big}${i}`,
      step: big,
      outcome: 'failed' as const,
      durationMs: 1,
      detail: big
    }))
    const plan = [
      {
        phase: 'update',
        onFailure: 'stop' as const,
        batches: [
          Array.from({ length: 200 }, (_, i) => ({ host: `${big}${i}`, steps: Array(1000).fill(big) }))
        ]
      }
    ]
    const migrations = Array.from({ length: 1000 }, (_, i) => ({
      host: big,
      app: big,
      name: `${big}${i}`,
      when: 'after-deploy' as const,
      operations: [big, big]
    }))
    const md = renderSummary(
      {
        mode: 'deploy',
        checks,
        error: big,
        deploy: deploy({ error: big, dryRun: true, steps, plan, rolledBack: true, migrations })
      },
      { runUrl: `https://x/${big}` }
    )
    expect(md.length).toBeLessThan(65_000)
    expect(md).toContain('more findings not shown')
    expect(md).toContain('more steps not shown')
    expect(md).toContain('more hosts not shown')
    expect(md).toContain('more migrations not shown')
  })

  it("lists the server's migration plan: when each runs, its operations and their class; escaped", () => {
    const md = renderSummary({
      mode: 'deploy',
      checks: [],
      deploy: deploy({
        migrations: [
          {
            host: 'web2',
            app: 'shop',
            name: '0003_add_note',
            when: 'before-switch',
            operations: ['Add field note to order']
          },
          {
            host: 'web2',
            app: 'shop',
            name: '0004_drop_note',
            when: 'after-deploy',
            class: 'contract',
            operations: ['Remove field note from order (contract)', 'Raw SQL | <b>x</b> (review)']
          },
          { host: 'web2', app: 'shop', name: '0002_x', when: 'not-in-target', operations: [] }
        ]
      })
    })
    expect(md).toContain('#### Migrations (3)')
    expect(tableRows(md, '| Migration |')).toEqual([
      [code('shop.0003_add_note'), 'before the switch', code('web2'), 'Add field note to order'],
      [
        code('shop.0004_drop_note'),
        'after every host switched',
        code('web2'),
        'Remove field note from order (contract); Raw SQL \\| &lt;b&gt;x&lt;/b&gt; (review)'
      ],
      [code('shop.0002_x'), 'applied, not in the target release', code('web2'), '']
    ])
  })
})

describe('markdown helpers', () => {
  it('formats durations', () => {
    expect(formatDuration(0)).toBe('0.0 s')
    expect(formatDuration(1250)).toBe('1.3 s')
    expect(formatDuration(125_000)).toBe('2 min 5 s')
  })

  it('makes code spans that backticks cannot close', () => {
    expect(code('a`b')).toBe('``a`b``')
    expect(code('`x`')).toBe('`` `x` ``')
    expect(code('a|b')).toBe('`a\\|b`')
    expect(code('a|b', false)).toBe('`a|b`')
    expect(codeBlock('```\nin')).toBe('````\n```\nin\n````')
  })
})

describe('writeSummary', () => {
  let dir: string
  const saved = process.env.GITHUB_STEP_SUMMARY
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'summary-'))
  })
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true })
    if (saved === undefined) delete process.env.GITHUB_STEP_SUMMARY
    else process.env.GITHUB_STEP_SUMMARY = saved
  })

  it('appends the rendered summary to the job summary file', async () => {
    const file = join(dir, 'summary.md')
    writeFileSync(file, 'before\n')
    process.env.GITHUB_STEP_SUMMARY = file
    const report: Report = { mode: 'check', checks: [check()] }
    await writeSummary(report)
    expect(readFileSync(file, 'utf8')).toBe(`before\n${renderSummary(report)}\n`)
  })

  it('written again (an early report, then the final one), replaces only what it wrote', async () => {
    const file = join(dir, 'summary.md')
    writeFileSync(file, 'before\n')
    process.env.GITHUB_STEP_SUMMARY = file
    await writeSummary({ mode: 'check', checks: [], error: 'cancelled (SIGINT): early' })
    const report: Report = { mode: 'check', checks: [check()] }
    await writeSummary(report)
    expect(readFileSync(file, 'utf8')).toBe(`before\n${renderSummary(report)}\n`)
  })
})

describe('findings left out of the annotations', () => {
  it('are counted under the findings, and nothing is said when all fit', () => {
    const findings: Finding[] = Array.from({ length: 12 }, (_, i) => ({ level: 'error', message: `e${i}` }))
    const report: Report = { mode: 'check', checks: [check({ outcome: 'failed', findings })] }
    expect(renderSummary(report)).not.toContain('not annotated')
    const md = renderSummary({ ...report, annotationsOmitted: 3 })
    expect(md).toContain(
      '_3 findings were not annotated on the code: GitHub shows at most 10 errors, 10 warnings and 10 notices per step. The findings above list them._'
    )
    expect(md.indexOf('not annotated')).toBeGreaterThan(md.indexOf('#### Findings (12)'))
    expect(renderSummary({ ...report, annotationsOmitted: 1 })).toContain('_1 finding was not annotated')
  })
  it('states the limits the annotations are planned with (one source for the limits of GitHub)', () => {
    const findings: Finding[] = Array.from({ length: 40 }, (_, i) => ({ level: 'error', message: `e${i}` }))
    const checks = [check({ outcome: 'passed', findings })]
    const fit = planAnnotations(checks).annotate.length
    expect(fit).toBe(ANNOTATION_LIMITS.perLevelPerStep)
    const md = renderSummary({ mode: 'check', checks, annotationsOmitted: 40 - fit })
    expect(md).toContain(`GitHub shows at most ${fit} errors, ${fit} warnings and ${fit} notices per step`)
  })
})
