import { Redactor, secretParts, urlCredentials, withoutCredentials } from '../../src/github/redact.js'

const KEY = [
  '-----BEGIN OPENSSH PRIVATE KEY-----',
  'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW',
  'QyNTUxOQAAACBq2Yx0fakefakefakefakefakefakefakefakefakefakeAAAAJgAAAAA',
  '-----END OPENSSH PRIVATE KEY-----'
].join('\n')

test('secretParts: the whole secret and each line long enough, CRLF or LF (what the runner masks and Redactor holds)', () => {
  const crlf = KEY.replace(/\n/g, '\r\n')
  expect(secretParts(crlf)).toEqual([crlf.trim(), ...KEY.split('\n')])
  expect(secretParts('  short\nab\n')).toEqual(['short\nab'])
  expect(secretParts(undefined)).toEqual([])
})

describe('Redactor', () => {
  const r = new Redactor()
  r.add(KEY)
  r.add('correct horse battery')
  r.add('ghs_0123456789abcdef')

  test('a whole key, each of its lines, and other secrets become ***', () => {
    expect(r.text(`key:\n${KEY}\nend`)).toBe('key:\n***\nend')
    expect(r.text(`line ${KEY.split('\n')[2]} leaked`)).toBe('line *** leaked')
    expect(r.text('pass=correct horse battery token=ghs_0123456789abcdef')).toBe('pass=*** token=***')
  })

  test('@mentions are defused with a zero-width space; a lone @ stays', () => {
    expect(r.text('cc @octocat and @acme/team, (@dev) mail a@b, http://***@h/, x @ y')).toBe(
      'cc @\u200boctocat and @\u200bacme/team, (@\u200bdev) mail a@b, http://***@\u200bh/, x @ y'
    )
    expect(r.text('@lead at the start')).toBe('@\u200blead at the start')
  })

  test.each([
    '**@octocat**',
    '*@octocat*',
    'see /@octocat',
    'a+@octocat',
    'x-@octocat',
    'end.@octocat',
    '@@octocat'
  ])('@mentions after punctuation are defused too: %j', value => {
    const out = r.text(value)
    expect(out).toBe(value.replace(/@octocat/, '@\u200boctocat'))
    expect(out).not.toMatch(/(^|[^A-Za-z0-9_])@[A-Za-z0-9]/)
  })

  test.each(['first.last@example.com', 'a_b@c', 'git@github.com:acme/shop'])(
    'an e-mail address stays: %j',
    value => {
      expect(r.text(value)).toBe(value)
    }
  )

  test('value() applies to every string of a nested report, keeping its shape and keys', () => {
    const report = {
      mode: 'check',
      checks: [
        { name: 'test', tail: 'ghs_0123456789abcdef @dev', durationMs: 5, findings: [{ message: KEY }] }
      ],
      deploy: undefined
    }
    expect(r.value(report)).toEqual({
      mode: 'check',
      checks: [{ name: 'test', tail: '*** @\u200bdev', durationMs: 5, findings: [{ message: '***' }] }],
      deploy: undefined
    })
    expect(report.checks[0].tail).toBe('ghs_0123456789abcdef @dev')
  })

  test('short lines of a secret (the PEM frame aside) are not masked on their own', () => {
    const s = new Redactor()
    s.add('abc\nlonger-line-here')
    expect(s.text('abc longer-line-here')).toBe('abc ***')
  })
})

describe('urlCredentials', () => {
  test.each([
    ['http://127.0.0.1/health/', []],
    ['https://user:s%40cret@h/x', ['s@cret', 's%40cret', 'user:s%40cret']],
    ['https://tok3n@h/x', ['tok3n']],
    ['not a url', []],
    [undefined, []]
  ])('%s', (url, expected) => {
    expect(urlCredentials(url)).toEqual(expected)
  })
})

describe('credentials of a URL that does not parse', () => {
  test.each([
    ['http://admin:s3cret@web1:99999/health/', ['s3cret', 'admin:s3cret'], 'http://***@web1:99999/health/'],
    ['http://admin:s3c ret@we b1/', ['s3c ret', 'admin:s3c ret'], 'http://***@we b1/'],
    ['http://tok%zz3n@we b1/', ['tok%zz3n'], 'http://***@we b1/'],
    ['http://admin:p@ss@web1:0x/', ['p@ss', 'admin:p@ss'], 'http://***@web1:0x/']
  ])('%s', (url, parts, shown) => {
    expect(urlCredentials(url)).toEqual(parts)
    expect(withoutCredentials(url)).toBe(shown)
  })
  test('a URL without credentials is shown as it is', () => {
    expect(withoutCredentials('http://web1:99999/health/')).toBe('http://web1:99999/health/')
  })
})
