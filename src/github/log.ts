/**
 * The job log: the one edge where text becomes workflow log lines. Text a server or the project prints is data:
 * it is written between `::stop-commands::<token>` and `::<token>::`, so a line such as `::add-mask::` or
 * `::error::` in it is never taken as a workflow command. The token is random per quiet part, so the data cannot
 * print it to end the quiet part early.
 */
import { randomBytes } from 'node:crypto'
import * as core from '@actions/core'

export interface Log {
  startGroup(title: string): void
  endGroup(): void
  info(message: string): void
  warning(message: string): void
  /** A line printed by a server or the project: data, never a workflow command (default: `info`). */
  output?(line: string): void
  /** Ends any quiet part `output` opened (called when the runner is done). */
  flush?(): void
}

/** The job log of the action: `Log` plus what the checks on the runner need. */
export interface ActionsLog extends Required<Log> {
  /** A message that may hold values from the repository: as data when it could be taken as a command. */
  data(message: string): void
  /** Opens a quiet part for output written straight to stdout (a check's streams); returns its end. */
  quiet(): () => void
}

/** A quiet part's start and end lines around `text`. */
export function asData(text: string): string {
  const token = randomBytes(16).toString('hex')
  return `::stop-commands::${token}\n${text}\n::${token}::`
}

/**
 * The job log for the runner and the checks. Remote output (`output`) is data: consecutive lines of it share one
 * quiet part, which ends before any line of our own (groups, warnings) so those still work. `published` filters
 * what becomes an annotation (a warning is published text).
 */
export function actionsLog(published: (text: string) => string = t => t): ActionsLog {
  let quiet: string | undefined
  const resume = (): void => {
    if (quiet) core.info(`::${quiet}::`)
    quiet = undefined
  }
  const open = (): string => {
    const token = randomBytes(16).toString('hex')
    core.info(`::stop-commands::${token}`)
    return token
  }
  return {
    startGroup: title => (resume(), core.startGroup(title)),
    endGroup: () => (resume(), core.endGroup()),
    info: m => (resume(), core.info(m)),
    warning: m => (resume(), core.warning(published(m))),
    output: line => {
      quiet ??= open()
      core.info(line)
    },
    flush: resume,
    data: message => {
      resume()
      core.info(/[\r\n]/.test(message) || /^\s*::/.test(message) ? asData(message) : message)
    },
    quiet: () => {
      resume()
      const token = open()
      return () => core.info(`::${token}::`)
    }
  }
}
