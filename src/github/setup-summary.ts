/**
 * The setup section of the summary: per host, each item and its status (created, changed, unchanged, refused),
 * and the diffs of the files that differ, collapsed.
 */
import type { SetupResult } from '../report.js'
import { clip, code, codeBlock, html, text } from './markdown.js'

const STATUS_ICON = { created: '🆕', changed: '✏️', unchanged: '✅', refused: '⛔' } as const
/** Rendered characters of the diffs of one host (the whole body stays under GitHub's comment limit). */
const DIFF_CHARS = 12_000

export function renderSetup(r: SetupResult): string[] {
  const out: string[] = []
  const url = r.siteUrl ? ` · site ${code(r.siteUrl, false)}` : ''
  out.push(`### Setup of ${code(r.app, false)}${r.dryRun ? ' (dry run: nothing was changed)' : ''}${url}`)
  for (const h of r.hosts) {
    const moved = h.items.filter(i => i.status === 'created' || i.status === 'changed').length
    const head = h.error
      ? `❌ ${text(clip(h.error, 300))}`
      : moved === 0
        ? 'no changes'
        : r.dryRun
          ? `${moved} item${moved > 1 ? 's' : ''} would change`
          : `${moved} item${moved > 1 ? 's' : ''} changed`
    out.push(`#### ${code(h.host, false)}${h.os ? ` (${text(h.os)})` : ''}: ${head}`)
    if (!h.items.length) continue
    out.push(
      [
        '| Item | Status | Note |',
        '|---|---|---|',
        ...h.items.map(
          i => `| ${text(i.item)} | ${STATUS_ICON[i.status]} ${i.status} | ${text(clip(i.why ?? '', 200))} |`
        )
      ].join('\n')
    )
    let budget = DIFF_CHARS
    for (const i of h.items.filter(x => x.diff)) {
      const body = clip(i.diff!, Math.max(200, budget))
      budget -= body.length
      out.push(
        `<details><summary>diff: ${html(i.item)}</summary>\n\n${codeBlock(body, 'diff')}\n\n</details>`
      )
      if (budget <= 0) break
    }
  }
  return out
}
