/**
 * The batch protocol, in one place: steps joined into one remote command (one round trip instead of one per
 * step; consecutive manage.py commands in one Python process), each step's end reported by a
 * `<mark> <name> <code>` line, and the parser that reads those lines back as they arrive.
 */
import { randomBytes } from 'node:crypto'
import * as cmd from '../remote/commands.js'
import type { Layout } from '../remote/commands.js'
import type { Step } from './plan.js'

/** A mark for one deploy's batches; unguessable, so no output of the project can fake a step's end. */
export function newMark(): string {
  return `django-deploy-step-${randomBytes(6).toString('hex')}:`
}

/** Joins steps into one remote command; the result's `parts` name the steps in the order they report. */
export function batch(steps: Step[], l: Layout, mark: string): Step {
  const lines: string[] = []
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]
    if (s.manage) {
      const group = [s]
      while (steps[i + 1]?.manage?.release === s.manage.release) group.push(steps[++i])
      const commands = group.map(g => ({ name: g.name, args: g.manage!.args, python: g.manage!.python }))
      lines.push(`( ${cmd.manageMany(l, s.manage.release, mark, commands)}\n) </dev/null || exit $?`)
    } else {
      lines.push(
        `( ${s.script}\n) ${s.stdin || s.input ? '' : '</dev/null'}`,
        `rc=$?; echo "${mark} ${s.name} $rc"; [ $rc -eq 0 ] || exit $rc`
      )
    }
  }
  const input = steps.filter(s => s.input)
  // One stdin per command: it carries the archive, the manifest or one step's input.
  if (steps.filter(s => s.stdin).length > 1 || (input.length && steps.some(s => s.stdin)) || input.length > 1)
    throw new Error(`steps ${steps.map(s => s.name).join(', ')}: more than one reads stdin`)
  return {
    name: steps.map(s => s.name).join(', '),
    script: lines.join('\n'),
    stdin: steps.find(s => s.stdin)?.stdin,
    input: input[0]?.input,
    parts: steps.map(s => s.name)
  }
}

/** What one line of a batch's output carries: the step's own output, and the end of a step. */
export interface BatchLine {
  output?: string
  /** A step ended well (the next one starts). */
  ended?: string
}

/**
 * Reads a batch's output line by line. A step's output without a final new line runs into the marker that
 * follows it: that part is output. A failed step's marker is noted (`failedCode`) but the step stays the
 * current one: output still in flight joins its last lines until the command ends.
 */
export class BatchParser {
  /** Index in `parts` of the step running now. */
  part = 0
  failedCode?: number
  constructor(
    private readonly mark: string,
    readonly parts: string[]
  ) {}

  /** The step running now (the last one, once all reported). */
  get current(): string {
    return this.parts[Math.min(this.part, this.parts.length - 1)]
  }

  feed(raw: string): BatchLine {
    const at = raw.indexOf(`${this.mark} `)
    if (at < 0) return { output: raw }
    const output = at > 0 ? raw.slice(0, at) : undefined
    const [, name, code] = raw.slice(at).split(' ')
    if (name !== this.parts[this.part] || this.failedCode !== undefined) return { output }
    if (Number(code) !== 0) {
      this.failedCode = Number(code)
      return { output }
    }
    this.part += 1
    return { output, ended: name }
  }
}
