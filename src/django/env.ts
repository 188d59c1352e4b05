/**
 * The environment the project's own code (manage.py, test-command) runs with on the runner. An allow-list,
 * not a deny-list: a pull request's tests must never see the action's inputs (INPUT_SSH-KEY, …), the runner's
 * tokens (ACTIONS_RUNTIME_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN, …) or the workflow-command files
 * (GITHUB_ENV, GITHUB_OUTPUT, …) through which it could change later steps. Anything else a project needs is
 * named in the `check-env` input.
 */

/** Passed when set: what Python, Django, a shell and common test tools need, and GitHub's non-secret context. */
export const PASSED_NAMES: readonly string[] = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'TERM',
  'LANG',
  'LANGUAGE',
  'TZ',
  'TMPDIR',
  'TEMP',
  'TMP',
  'CI',
  'VIRTUAL_ENV',
  'CONDA_PREFIX',
  'PYENV_ROOT',
  'PYENV_VERSION',
  'pythonLocation',
  'Python_ROOT_DIR',
  'Python2_ROOT_DIR',
  'Python3_ROOT_DIR',
  'PKG_CONFIG_PATH',
  'LD_LIBRARY_PATH',
  'DJANGO_SETTINGS_MODULE',
  'GITHUB_ACTIONS',
  'GITHUB_ACTOR',
  'GITHUB_ACTOR_ID',
  'GITHUB_API_URL',
  'GITHUB_BASE_REF',
  'GITHUB_EVENT_NAME',
  'GITHUB_EVENT_PATH',
  'GITHUB_GRAPHQL_URL',
  'GITHUB_HEAD_REF',
  'GITHUB_JOB',
  'GITHUB_REF',
  'GITHUB_REF_NAME',
  'GITHUB_REF_PROTECTED',
  'GITHUB_REF_TYPE',
  'GITHUB_REPOSITORY',
  'GITHUB_REPOSITORY_ID',
  'GITHUB_REPOSITORY_OWNER',
  'GITHUB_REPOSITORY_OWNER_ID',
  'GITHUB_RETENTION_DAYS',
  'GITHUB_RUN_ATTEMPT',
  'GITHUB_RUN_ID',
  'GITHUB_RUN_NUMBER',
  'GITHUB_SERVER_URL',
  'GITHUB_SHA',
  'GITHUB_TRIGGERING_ACTOR',
  'GITHUB_WORKFLOW',
  'GITHUB_WORKFLOW_REF',
  'GITHUB_WORKFLOW_SHA',
  'GITHUB_WORKSPACE',
  'RUNNER_ARCH',
  'RUNNER_DEBUG',
  'RUNNER_ENVIRONMENT',
  'RUNNER_NAME',
  'RUNNER_OS',
  'RUNNER_TEMP',
  'RUNNER_TOOL_CACHE'
]

/** Passed when set, by prefix: locale settings and Python's own variables (PYTHONPATH, PYTHONHASHSEED, …). */
export const PASSED_PREFIXES: readonly string[] = ['LC_', 'PYTHON']

/**
 * Never passed, not even when `check-env` names them: a secret of the action or the runner, or a file through
 * which a step changes the workflow. Checked by `refusedName` so the input is refused with a clear error.
 */
const REFUSED = [
  /^INPUT_/i,
  /^ACTIONS_/i,
  /^GITHUB_TOKEN$/i,
  /^GITHUB_(ENV|OUTPUT|PATH|STATE|STEP_SUMMARY)$/i,
  /^RUNNER_TRACKING_ID$/i
]

/** Why a `check-env` entry cannot be passed, or undefined when it can. */
export function refusedName(entry: string): string | undefined {
  if (entry === '*') return `"*" would pass everything; name the variables (or prefixes) the checks need`
  if (!/^[A-Za-z_][A-Za-z0-9_]*\*?$/.test(entry)) {
    return `"${entry}" is not a variable name; expected names like DATABASE_URL, or a prefix ending in * (DJANGO_*)`
  }
  const name = entry.replace(/\*$/, '')
  if (REFUSED.some(re => re.test(name)) || (entry.endsWith('*') && 'INPUT_'.startsWith(name.toUpperCase())))
    return `"${entry}" is refused: the action's inputs, the runner's tokens and its command files never reach the project's code`
  return undefined
}

/** The variables of `runner` the checks see: the allow-list plus the names (or `PREFIX*`) the user added. */
export function checkEnvironment(
  runner: Record<string, string | undefined>,
  extra: readonly string[] = []
): Record<string, string> {
  const names = new Set([...PASSED_NAMES, ...extra.filter(e => !e.endsWith('*'))])
  const prefixes = [...PASSED_PREFIXES, ...extra.filter(e => e.endsWith('*')).map(e => e.slice(0, -1))]
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(runner)) {
    if (value === undefined) continue
    if (REFUSED.some(re => re.test(name))) continue
    if (names.has(name) || prefixes.some(p => name.startsWith(p))) env[name] = value
  }
  return env
}
