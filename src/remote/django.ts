/**
 * The release's Django: manage.py commands (several in one interpreter), and the Python programs run in the
 * Django they set up: the deploy check, the TLS proxy check, the health URL before the switch.
 */
import { IN_RELEASE, type Layout, releaseDir } from './layout.js'
import {
  DEPLOY_CHECK_PY,
  HEALTH_BEFORE_SWITCH_PY,
  MANAGE_MANY_PY,
  MIGRATE_PY,
  MIGRATIONS_PY,
  PROXY_CHECK_PY,
  ROLLBACK_SCHEMA_PY
} from './python/programs.js'
import { q, words } from './quote.js'
import { MIGRATION, WARN, script } from './shell.js'
import type { MigrationSettings } from '../settings/migrations.js'

export { DEPLOY_CHECK_PY, HEALTH_BEFORE_SWITCH_PY, MIGRATE_PY, PROXY_CHECK_PY, ROLLBACK_SCHEMA_PY }

/** Runs manage.py of the release with its virtualenv. */
export function manage(l: Layout, release: string, args: string[]): string {
  return script(
    `cd ${q(releaseDir(l, release))}`,
    words(`${IN_RELEASE.venv}/bin/python`, 'manage.py', ...args)
  )
}

/** Printed when a step fails on a write it may not do: a release file written in place. */
const READ_ONLY_HINT =
  'release files are read-only: files unchanged since the live release are the live files themselves (hard links), so a step that writes one in place would change what is live. Write new files (STATIC_ROOT, a shared path) or replace a file by renaming a new one over it.'

/**
 * Runs several manage.py commands in ONE interpreter (manage_many.py: Django is set up once, not once per
 * command), printing `<mark> <name> <exit code>` after each and stopping at the first that fails. A command with
 * `python` runs that code instead of manage.py, with `args` as its sys.argv[1:], in the Django the commands
 * before it set up.
 */
export function manageMany(
  l: Layout,
  release: string,
  mark: string,
  commands: { name: string; args: string[]; python?: string }[]
): string {
  const list = commands.map(c => [c.name, c.args, c.python ?? null])
  return script(
    `cd ${q(releaseDir(l, release))}`,
    `PYTHONUNBUFFERED=1 ${words(`${IN_RELEASE.venv}/bin/python`, '-c', MANAGE_MANY_PY, mark, READ_ONLY_HINT, JSON.stringify(list))}`
  )
}

/**
 * Deploy-check findings that stop the deploy under the default `deploy-check: warn` (README, "Django's deploy
 * check"): security.W018, DEBUG on, shows every visitor tracebacks with code, settings and SQL. The others stay
 * warnings: HSTS, SSL redirect and secure cookies depend on where TLS ends, and W009 (SECRET_KEY) is a length
 * heuristic that also flags keys that are random and private.
 */
const SERIOUS_DEPLOY_CHECKS = ['security.W018'] as const

/**
 * The arguments of deploy_check.py (Django's `check --deploy` with the server's settings, each warning a WARN
 * line; errors and SERIOUS_DEPLOY_CHECKS fail, other warnings fail with `fail`), run in the preflight's Django.
 */
export function deployCheckArgs(mode: 'warn' | 'fail'): string[] {
  return [WARN, SERIOUS_DEPLOY_CHECKS.join(','), mode]
}

/**
 * The arguments of proxy_check.py: what breaks behind nginx ending TLS, said before it breaks (run after the
 * deploy check, in its Django, when the site is https). `url`: the site's URL without credentials.
 */
export function proxyCheckArgs(url: string, mode: 'warn' | 'fail'): string[] {
  return [WARN, url, mode]
}

/**
 * The arguments of migrate.py: which part of the migrations it applies (`before` the switch, holding back the
 * after-deploy ones; `after` it, the rest), the PostgreSQL timeouts, and the classifier it judges them with.
 */
export function migrateArgs(part: 'before' | 'after', m: MigrationSettings): string[] {
  return [
    WARN,
    MIGRATION,
    part,
    String(m.lockTimeout),
    m.statementTimeout ? String(m.statementTimeout) : '',
    m.afterDeploy.join(','),
    m.safety,
    part === 'before' && m.safety !== 'off' ? MIGRATIONS_PY : ''
  ]
}

/** rollback_schema.py's exit status when it refuses the rollback (any other failure only skips its check). */
export const ROLLBACK_REFUSED = 3

/**
 * Run in the live release's Django before a rollback to `target` (rollback_schema.py): the applied migrations
 * `target` does not have, classified; contract ones refuse the rollback unless `allowed`. A live release whose
 * Django cannot tell (its settings or database broken: maybe why it is rolled back) does not stop the rollback:
 * that is a warning.
 */
export function rollbackSchema(l: Layout, live: string, target: string, allowed: boolean): string {
  const args = [MIGRATION, releaseDir(l, target), target, String(allowed), MIGRATIONS_PY]
  const run = manageMany(l, live, 'rollback-schema-done:', [
    { name: 'rollback-schema', args, python: ROLLBACK_SCHEMA_PY }
  ])
  return [
    `rc=0; ( ${run}\n) || rc=$?`,
    `[ "$rc" -eq 0 ] || [ "$rc" -eq ${ROLLBACK_REFUSED} ] || { echo ${q(`${WARN} the live release's Django could not list the applied migrations the target lacks (see the output above): rolling back without that check`)}; rc=0; }`,
    'exit "$rc"'
  ].join('\n')
}
