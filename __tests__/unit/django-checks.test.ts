import { checkCommand, lastLines } from '../../src/django/checks.js'

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
