/**
 * A failed step's error leads with the cause of a Python traceback (issue 16). The traceback is a real one:
 * `manage.py check` of the example project in a release whose settings import a module that raises, on
 * Debian's Django 3.2 and Python 3.11 (fixtures/traceback-settings.txt).
 */
import { readFileSync } from 'node:fs'
import { causeOf, failureTail } from '../../src/django/traceback.js'

const real = readFileSync('__tests__/fixtures/traceback-settings.txt', 'utf8').trimEnd().split('\n')

test('the cause of a settings import error: type, message and the project file that raised', () => {
  expect(causeOf(real)).toBe('RuntimeError: settings cannot import (at mysite/broken.py:1)')
})

test('the error leads with the cause, then the tail without frozen importlib frames and ^^^ markers', () => {
  const text = failureTail(real, 15)
  const lines = text.split('\n')
  expect(lines[0]).toBe('RuntimeError: settings cannot import (at mysite/broken.py:1)')
  expect(lines.at(-1)).toBe('RuntimeError: settings cannot import')
  expect(text).not.toMatch(/<frozen|\^\^\^/)
  expect(text).toContain('File "/srv/shop/releases/v3/mysite/settings.py", line 140, in <module>')
  expect(lines).toHaveLength(16)
})

test('a frame in the virtualenv is not the project; a SyntaxError names the line; output without a traceback is as it was', () => {
  const venv = [
    'Traceback (most recent call last):',
    '  File "/srv/a/releases/r1/manage.py", line 9, in <module>',
    '  File "/srv/a/releases/r1/.venv/lib/python3.11/site-packages/x.py", line 3, in f',
    'ValueError: bad'
  ]
  expect(causeOf(venv)).toBe('ValueError: bad (at manage.py:9)')
  const syntax = [
    'Traceback (most recent call last):',
    '  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module',
    '  File "/srv/a/releases/r1/mysite/settings.py", line 5',
    '    x = = 1',
    '        ^',
    'SyntaxError: invalid syntax'
  ]
  expect(causeOf(syntax)).toBe('SyntaxError: invalid syntax (at mysite/settings.py:5)')
  const plain = ['a', 'b', 'CommandError: no such table']
  expect(failureTail(plain, 2)).toBe('b\nCommandError: no such table')
})
