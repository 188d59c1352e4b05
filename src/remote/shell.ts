/**
 * What every remote script shares: its preamble and the warning marker. Values reach a script only through
 * `q`/`words` (quote.ts).
 */

/** Lines starting with this marker in a step's output become warnings in the job log. */
export const WARN = 'django-deploy-warning:'

/** Lines starting with this marker carry a migration the step is about to apply (JSON): the summary lists them. */
export const MIGRATION = 'django-deploy-migration:'

/** Strict mode and a umask that keeps release files world-readable, so nginx can serve static files. */
export function script(...lines: string[]): string {
  return ['set -eu', 'umask 022', ...lines].join('\n')
}
