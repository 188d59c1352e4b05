/**
 * The entry's second import (after shim.ts): runs before any other module of the action is evaluated, so the
 * action re-executes itself without its secrets in its environment first (see reexec.ts).
 */
import * as core from '@actions/core'
import { reexecWithoutSecrets } from './reexec.js'

try {
  const note = reexecWithoutSecrets()
  if (note) core.info(note)
} catch (e) {
  core.setFailed(
    `could not start: the action's inputs did not survive its re-execution (${(e as Error).message})`
  )
  process.exit(1)
}
