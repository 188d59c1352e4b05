/**
 * README.md's fenced code blocks, found by their first line (`# /etc/nginx/sites-available/mysite`…): the tests
 * that check the README's server guide take its blocks out of it as written.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from './action.js'

export const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** The fenced block of README.md whose first line is `marker` (the marker line included). */
export function readmeBlock(marker: string): string {
  const blocks = [...README.matchAll(/^```[a-z]*\n([\s\S]*?)^```$/gm)].map(m => m[1])
  const found = blocks.filter(b => b.split('\n')[0].trim() === marker)
  if (found.length !== 1) throw new Error(`README.md has ${found.length} blocks starting with ${marker}`)
  return found[0]
}
