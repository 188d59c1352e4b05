/**
 * Issue 15: a `health-check-url` that does not parse still has its credentials masked. The built action is run
 * with one, as a workflow would: the error names the input without them, and the password is registered with the
 * runner (`::add-mask::`) so that no other line shows it either.
 */
import { jest } from '@jest/globals'
import { expectOk, Repo, runAction } from '../helpers/action.js'

jest.setTimeout(60_000)

let repo: Repo
beforeAll(() => (repo = new Repo()))
afterAll(() => repo?.remove())

test('a malformed health-check-url: refused naming the input, its password masked and never shown', async () => {
  const r = await runAction(
    { mode: 'check', checks: 'none', 'health-check-url': 'http://admin:s3cret-pass@web 1:99999/health/' },
    { workspace: repo.dir }
  )
  expect(r.code).not.toBe(0)
  const lines = r.log.split('\n')
  expect(lines).toContain('::add-mask::s3cret-pass')
  const shown = lines.filter(l => !l.startsWith('::add-mask::')).join('\n')
  expect(shown).toMatch(
    /input 'health-check-url': "http:\/\/\*\*\*@web 1:99999\/health\/" is not an http\(s\) URL/
  )
  expect(shown).not.toContain('s3cret-pass')
  // A good URL with the same credentials is accepted (check mode), its password masked all the same.
  const ok = await runAction(
    { mode: 'check', checks: 'none', 'health-check-url': 'http://admin:s3cret-pass@web1:8000/health/' },
    { workspace: repo.dir }
  )
  expectOk(ok)
  expect(ok.log.split('\n')).toContain('::add-mask::s3cret-pass')
})
