/**
 * Migrations at deploy: how `migrate` runs on the server (PostgreSQL lock and statement timeouts), which
 * migrations wait until every host serves the new release, and what a migration that breaks the running
 * release does to the deploy (`migration-safety`).
 */
import { RawValues, splitList, type MIGRATION_SAFETY_MODES } from './sources.js'

export type MigrationSafety = (typeof MIGRATION_SAFETY_MODES)[number]

export interface MigrationSettings {
  /** Seconds a statement of migrate may wait for a table lock (PostgreSQL's lock_timeout); 0: no limit. */
  lockTimeout: number
  /** Seconds a statement of migrate may run (PostgreSQL's statement_timeout); none: no limit. */
  statementTimeout?: number
  /** `app.migration` names run after every host switched (the after-deploy phase), not before the switch. */
  afterDeploy: string[]
  /**
   * A contract migration (it breaks the release still serving) not marked after-deploy: stops the deploy
   * before anything changes (`refuse`), is a warning, or is not looked for.
   */
  safety: MigrationSafety
  /** `mode: rollback` across applied contract migrations the target release does not have. */
  allowContractRollback: boolean
}

const MIGRATION_NAME = /^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+$/

/**
 * `fleet`: more than one host or `rolling` — the old release keeps serving against the new schema for longer,
 * across hosts: the safety default is `refuse` there, `warn` on one host (a restart-free switch of one host
 * still serves the old code for the migrate's duration, but a team with one host usually accepts that).
 */
export function readMigrations(raw: RawValues, fleet: boolean): MigrationSettings {
  const afterRaw = raw.get('after-deploy-migrations')
  const afterDeploy = splitList(afterRaw.value)
  for (const name of afterDeploy)
    if (!MIGRATION_NAME.test(name))
      raw.fail(
        afterRaw,
        `"${name}" is not a migration name; expected app_label.migration_name, e.g. shop.0004_drop_note`
      )
  const statementRaw = raw.get('migrate-statement-timeout')
  let statementTimeout: number | undefined
  if (statementRaw.value) {
    statementTimeout = Number(statementRaw.value)
    if (!/^\d+$/.test(statementRaw.value) || statementTimeout < 1)
      raw.fail(
        statementRaw,
        `"${statementRaw.value}" is not a number of seconds; expected a whole number ≥ 1, or nothing for no limit`
      )
  }
  const safety = raw.given('migration-safety') ? raw.choice('migration-safety') : fleet ? 'refuse' : 'warn'
  return {
    lockTimeout: raw.int('migrate-lock-timeout'),
    statementTimeout,
    afterDeploy,
    safety,
    allowContractRollback: raw.bool('allow-contract-rollback')
  }
}
