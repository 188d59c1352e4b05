/**
 * Remote commands as data: small pure functions returning POSIX sh scripts. Nothing here runs anything; the
 * runner sends these over SSH and the dry run prints them. Every variable part goes through `q` (quote.ts).
 *
 * This module is the one the plan and the runner import (`import * as cmd`); the commands live by server
 * concern beside it: layout.ts (every path on the server), lease.ts, history.ts, release.ts, static.ts,
 * venv.ts, django.ts, gunicorn.ts, health.ts, and the Python programs they run in python/*.py.
 */
export { MIGRATION, WARN } from './shell.js'
export { type Layout, layout, buildName, releaseDir } from './layout.js'
export {
  type HistoryEntry,
  type HostState,
  inspect,
  parseInspect,
  readRevision,
  recordLive
} from './history.js'
export { LEASE_SECONDS, RENEW_SECONDS, LEASE_LOST, LOCK_STAGE, holdLock, fenced, killSteps } from './lease.js'
export {
  prepare,
  place,
  restoreReplaced,
  reusableFiles,
  unpack,
  linkShared,
  switchTo,
  removeCurrent,
  userCommand,
  cleanup
} from './release.js'
export { STATIC_PY, staticArgs, liveStatic, pruneStatic } from './static.js'
export { type VenvOptions, venv } from './venv.js'
export {
  manage,
  manageMany,
  DEPLOY_CHECK_PY,
  deployCheckArgs,
  PROXY_CHECK_PY,
  proxyCheckArgs,
  HEALTH_BEFORE_SWITCH_PY,
  MIGRATE_PY,
  migrateArgs,
  ROLLBACK_REFUSED,
  rollbackSchema
} from './django.js'
export { probeGunicorn, reloadGunicorn, reloadService } from './gunicorn.js'
export { HEALTH_FAST_FAIL, healthTarget, healthCheck } from './health.js'
export { REUSABLE_PY } from './python/programs.js'
