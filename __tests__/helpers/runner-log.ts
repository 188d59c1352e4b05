/**
 * Reads an action's log as GitHub's runner does (actions/runner ActionCommandManager): a line that starts
 * with `::name …::`, after leading blanks, is a workflow command, unless commands are stopped by
 * `::stop-commands::<token>` and not yet resumed by `::<token>::`. `::add-mask::` masks later lines. So a test
 * can ask what a real runner would have done with the output: which annotations, outputs and masks resulted.
 */
export interface RunnerCommand {
  name: string
  /** `key=value` properties (undecoded). */
  props: string
  message: string
}

export interface RunnerView {
  commands: RunnerCommand[]
  /** The log as the runner shows it: command lines consumed, masks applied. */
  visible: string
}

const COMMAND = /^::([A-Za-z0-9_-]+)(?: ([^:]*))?::(.*)$/

export function readAsRunner(log: string): RunnerView {
  const commands: RunnerCommand[] = []
  const masks: string[] = []
  const shown: string[] = []
  let stopToken: string | undefined
  for (const raw of log.split('\n')) {
    const line = raw.replace(/\r$/, '')
    const m = COMMAND.exec(line.trimStart())
    if (stopToken !== undefined) {
      if (m && m[1] === stopToken && m[2] === undefined) stopToken = undefined
      else shown.push(line)
      continue
    }
    if (m) {
      const [, name, props = '', message] = m
      if (name === 'stop-commands') stopToken = message
      else if (name === 'add-mask') masks.push(message)
      commands.push({ name, props, message })
      continue
    }
    shown.push(line)
  }
  let visible = shown.join('\n')
  for (const s of masks.filter(Boolean).sort((a, b) => b.length - a.length))
    visible = visible.split(s).join('***')
  return { commands, visible }
}
