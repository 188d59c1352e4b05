import { checkCommand, KeptOutput, lastLines } from '../../src/django/checks.js'

describe('checkCommand', () => {
  test.each([
    ['check', ['manage.py', 'check']],
    ['deploy', ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING']],
    ['migrations', ['manage.py', 'makemigrations', '--check', '--dry-run']],
    ['test', ['manage.py', 'test', '--noinput']]
  ] as const)('%s runs python manage.py …', (name, args) => {
    expect(checkCommand(name, '/usr/bin/python3')).toEqual({
      tool: '/usr/bin/python3',
      args,
      display: ['/usr/bin/python3', ...args].join(' '),
      usesManagePy: true
    })
  })

  test('test-command replaces manage.py test, run by bash -c as one argument', () => {
    const line = 'pytest -x "tests/a b.py" && echo $HOME'
    expect(checkCommand('test', 'python', line)).toEqual({
      tool: 'bash',
      args: ['-c', line],
      display: line,
      usesManagePy: false
    })
  })

  test('test-command only affects the test check, and a blank one is ignored', () => {
    expect(checkCommand('check', 'python', 'pytest').tool).toBe('python')
    expect(checkCommand('test', 'python', '  ').args).toEqual(['manage.py', 'test', '--noinput'])
  })

  test('a python path with spaces is quoted in the displayed command only', () => {
    const cmd = checkCommand('check', "/opt/my env/bin/python3 it's")
    expect(cmd.tool).toBe("/opt/my env/bin/python3 it's")
    expect(cmd.display).toBe("'/opt/my env/bin/python3 it'\\''s' manage.py check")
  })
})

describe('lastLines', () => {
  test('keeps the last n lines, without trailing newlines, CRLF normalised', () => {
    const text = Array.from({ length: 40 }, (_, i) => `l${i + 1}`).join('\r\n') + '\r\n\r\n'
    expect(lastLines(text, 3)).toBe('l38\nl39\nl40')
    expect(lastLines(text).split('\n')).toHaveLength(30)
    expect(lastLines('one')).toBe('one')
  })
})

describe('KeptOutput', () => {
  test('keeps all of a short output', () => {
    const k = new KeptOutput()
    for (const part of ['System check identified no issues.\n', 'Ran 3 tests\n', 'OK\n']) k.add(part)
    expect(k.text()).toBe('System check identified no issues.\nRan 3 tests\nOK\n')
  })

  test('of a huge output keeps its start and its end, in bounded memory, cut at line breaks', () => {
    const k = new KeptOutput()
    const first = 'first line: system check errors come here\n'
    const last = 'FAIL: test_last (pages.tests.T)\nlast line'
    k.add(first)
    const line = `${'x'.repeat(99)}\n`
    const chunk = line.repeat(650) // 65 000 characters
    for (let i = 0; i < 200; i++) k.add(chunk) // 13 MB
    k.add(last)
    const text = k.text()
    expect(text.length).toBeLessThan(64 * 1024 + 2 * 1024 * 1024 + 100)
    expect(text.startsWith(first)).toBe(true)
    expect(text.endsWith(last)).toBe(true)
    const marker = /\n\[… (\d+) characters of output left out …\]\n/.exec(text)
    expect(marker).not.toBeNull()
    // What is left out plus what is kept is what came in (the marker's first line break ends a kept line).
    const total = first.length + 200 * chunk.length + last.length
    expect(Number(marker![1]) + text.length - marker![0].length + 1).toBe(total)
    // Every kept line is whole.
    const body = text.split(marker![0])
    expect(
      body[0]
        .split('\n')
        .slice(1)
        .every(l => l === '' || l === 'x'.repeat(99))
    ).toBe(true)
    expect(
      body[1]
        .split('\n')
        .slice(0, -2)
        .every(l => l === 'x'.repeat(99))
    ).toBe(true)
  })
})
