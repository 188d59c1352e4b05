/**
 * The environment the project's own code (manage.py, test-command) runs with on the runner: the job's
 * environment, minus what only this step has. Every `run:` step of the job sees the job's `env:` (and
 * `pip install` runs project code), so withholding it from the checks would protect nothing and break the
 * common setup (`DJANGO_SECRET_KEY`, `DATABASE_URL` in the job's `env:`). What is withheld is what the runner
 * gives this step alone: the action's inputs (`INPUT_*`: ssh-key, its passphrase, github-token), the runner's
 * tokens (`ACTIONS_*`, `GITHUB_TOKEN`) and the runner's command files, through which a step changes later ones.
 */

/** Variables of this step only: never passed to the checks. */
const WITHHELD: readonly RegExp[] = [
  /^INPUT_/i,
  /^ACTIONS_/i,
  /^GITHUB_TOKEN$/i,
  /^GITHUB_(ENV|OUTPUT|PATH|STATE|STEP_SUMMARY)$/i
]

/** Whether `name` is one of the step's own variables (an input, a runner token or a command file). */
export function withheld(name: string): boolean {
  return WITHHELD.some(re => re.test(name))
}

/** The variables of `runner` the checks see: all of them but the step's own. */
export function checkEnvironment(runner: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(runner)) {
    if (value !== undefined && !withheld(name)) env[name] = value
  }
  return env
}
