/**
 * The entry's second import (after shim.ts): runs before any other module of the action is evaluated, so the
 * action re-executes itself without its secrets in its environment first (see reexec.ts). It logs without
 * @actions/core, whose HTTP client would otherwise be loaded twice, once by each image.
 */
import { reexecWithoutSecrets } from './reexec.js'

try {
  const note = reexecWithoutSecrets()
  if (note) process.stdout.write(`${note}\n`)
} catch (e) {
  // What core.setFailed prints, with its escaping of the message.
  const message = `could not start: the action's inputs did not survive its re-execution (${(e as Error).message})`
  process.stdout.write(
    `::error::${message.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')}\n`
  )
  process.exit(1)
}
