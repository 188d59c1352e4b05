/**
 * run(): settings → mode → checks → release → deploy/rollback → report. The one place that calls setFailed.
 */
import * as core from '@actions/core'
import { runChecks } from './django/checks.js'
import { analyzeMigrations, migrationFindings, migrationsAsCheck } from './django/migrations.js'
import { Runner } from './deploy/run.js'
import { annotate } from './github/annotate.js'
import { markerFor, upsertPullRequestComment } from './github/comment.js'
import { startDeployment, type DeploymentHandle } from './github/deployment.js'
import { actionsLog as logEdge, asData, type ActionsLog } from './github/log.js'
import { Redactor, secretParts, urlCredentials } from './github/redact.js'
import { renderSummary, writeSummary } from './github/summary.js'
import { describeRelease } from './release/source.js'
import { SetupRunner } from './setup/run.js'
import { checksOutcome, previousReleases, type PlannedPhase, type Report } from './report.js'
import { INPUTS, loadSettings, SettingsError, type InputName, type Settings } from './settings.js'

/** Every secret the action knows, for what it publishes through the API and the summary file. */
const redactor = new Redactor()

/** Registers every line of a secret with the runner, so a multi-line key is masked line by line too. */
function mask(secret: string | undefined): void {
  if (!secret) return
  core.setSecret(secret)
  for (const part of secretParts(secret)) core.setSecret(part)
  redactor.add(secret)
}

/** The job log (runner and checks); a warning is an annotation, published text: redacted. */
function actionsLog(): ActionsLog {
  return logEdge(text => redactor.text(text))
}

/**
 * A job that runs a pull request's code should not hold a deploy key at all: the checks cannot read it, but the
 * job's other steps (and anything they leave running) run that code as the same user (SECURITY.md).
 */
function adviseOnPullRequestSecrets(eventName: string): void {
  if (!eventName.startsWith('pull_request') || !core.getInput('ssh-key')) return
  core.warning(
    `ssh-key is set on a ${eventName} event, in a job that runs the pull request's code. The action keeps the key ` +
      `from the checks' processes, but every step of this job runs that code as the same user: keep deploy ` +
      `secrets out of such jobs. Deploy from a separate job (on push or release) with a GitHub environment that ` +
      `has protection rules, and store the key as that environment's secret.`,
    { title: 'django-deploy: deploy key in a pull-request job' }
  )
}

export async function run(): Promise<void> {
  for (const [name, spec] of Object.entries(INPUTS)) {
    if ('secret' in spec && spec.secret) mask(core.getInput(name))
  }
  for (const part of urlCredentials(core.getInput('health-check-url'))) mask(part)
  let settings: Settings
  try {
    settings = loadSettings({ input: (name: InputName) => core.getInput(name), env: process.env })
  } catch (e) {
    if (e instanceof SettingsError) {
      for (const p of e.problems)
        core.error(`${p.where}: ${p.message}`, { title: 'django-deploy: invalid input' })
      core.setFailed(
        `invalid input (${e.problems.length} problem${e.problems.length > 1 ? 's' : ''}); nothing was changed on any server`
      )
      return
    }
    throw e
  }
  core.setOutput('mode', settings.mode)
  core.info(
    `mode: ${settings.mode}${settings.requestedMode === 'auto' ? ` (auto, ${settings.context.eventName || 'no event'})` : ''}`
  )
  if (settings.requestedMode === 'auto' && settings.context.eventName === 'workflow_dispatch') {
    core.info(
      'mode auto on workflow_dispatch runs the checks only; give `mode: deploy` to deploy from a manual run.'
    )
  }
  if (settings.configFile) core.info(`config file: ${settings.configFile}`)
  adviseOnPullRequestSecrets(settings.context.eventName)
  // A health URL from the config file is known only now.
  for (const part of urlCredentials(settings.deploy.healthCheckUrl)) mask(part)

  const report: Report = { mode: settings.mode, checks: [] }
  const job: Job = { settings, report, signals: 0 }
  // The last resort: a bug anywhere (an uncaught exception, an unhandled rejection) puts back what the deploy
  // switched and still writes the report, instead of ending the action half-way.
  const onFatal = (e: unknown): void => fatal(job, e)
  const onSignal = (signal: NodeJS.Signals): void => cancelled(job, signal)
  process.on('uncaughtException', onFatal)
  process.on('unhandledRejection', onFatal)
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    let failure: string | undefined
    try {
      failure = await pipeline(job)
    } catch (e) {
      failure = report.error = e instanceof Error ? e.message : String(e)
    }
    await finish(job, failure)
  } finally {
    clearTimeout(job.watchdog)
    process.removeListener('uncaughtException', onFatal)
    process.removeListener('unhandledRejection', onFatal)
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
  }
}

/** One run of the action: what the last-resort handlers need to finish it. */
interface Job {
  settings: Settings
  report: Report
  /** The deploy's runner, once it exists; `release` is what it deploys. */
  runner?: Runner
  /** mode: setup's runner, once it exists. */
  setup?: SetupRunner
  release?: string
  deployment?: DeploymentHandle
  /** The GitHub deployment's final status, once known. */
  final?: { state: 'success' | 'failure'; description: string }
  /** An internal error (uncaught), if one happened. */
  fatal?: string
  signals: number
  /** Outputs and summary were written (the final ones, or early ones a later write replaces). */
  written?: boolean
  finished?: boolean
  watchdog?: NodeJS.Timeout
}

/** Writes outputs and summary first (files, at once), then what needs the GitHub API, then the job's outcome. */
async function finish(job: Job, failed: string | undefined): Promise<void> {
  if (job.finished) return
  job.finished = true
  const failure = job.fatal && !failed ? job.fatal : failed
  if (failure) job.report.error ??= failure
  await writeReport(job)
  const final = job.final ?? { state: 'failure' as const, description: failure ?? 'failed' }
  await finishDeployment(job.deployment, final.state, final.description)
  await publishComment(job.settings, job.report, failure !== undefined)
  // setFailed is an annotation too: published text.
  if (failure) core.setFailed(redactor.text(failure))
}

async function writeReport(job: Job): Promise<void> {
  publishOutputs(job.report)
  await publishSummary(job.settings, job.report)
  job.written = true
}

/** Seconds the deploy's flow gets, after an internal error, to put things back by itself. */
const RESCUE_AFTER_SECONDS = 30

function fatal(job: Job, e: unknown): void {
  const message = e instanceof Error ? e.message : String(e)
  core.error(`internal error: ${redactor.text(e instanceof Error ? (e.stack ?? message) : message)}`)
  if (job.fatal) return
  job.fatal = `internal error (${message}): the run was stopped`
  job.runner?.fail(job.fatal)
  // The flow may never end (the error broke it): then what was switched is put back from here.
  job.watchdog = setTimeout(() => void rescue(job), RESCUE_AFTER_SECONDS * 1000)
}

async function rescue(job: Job): Promise<void> {
  if (job.finished) return
  core.warning(
    `the run did not end ${RESCUE_AFTER_SECONDS} s after an internal error: putting things back now`
  )
  if (job.runner) job.report.deploy = await job.runner.rescue(job.release ?? '')
  job.final = { state: 'failure', description: job.fatal ?? 'internal error' }
  await finish(job, job.report.deploy?.error ?? job.fatal)
  process.exit(1)
}

/**
 * A cancelled job: GitHub sends SIGINT, SIGTERM 7.5 s later and SIGKILL 2.5 s after that. The first signal
 * stops the deploy (the running step is killed on the server, what was switched is put back); the second
 * writes the report now if it is not written yet, and the put-back goes on until it ends or the job is killed.
 */
function cancelled(job: Job, signal: NodeJS.Signals): void {
  job.signals += 1
  if (job.signals === 1 && job.setup) return job.setup.cancel(`cancelled (${signal})`)
  if (job.signals === 1 && job.runner) return job.runner.cancel(`cancelled (${signal})`)
  if (!job.runner) {
    // Before the deploy began (checks, the release being described): nothing to put back; report and end.
    const why = `cancelled (${signal}) before the deploy began: nothing was changed on any server`
    job.report.error ??= why
    job.final = { state: 'failure', description: why }
    void finish(job, why).finally(() => process.exit(130))
    return
  }
  if (job.signals > 2) process.exit(130)
  core.warning(
    `${signal} again: ${job.written ? 'the report is written' : 'writing the report now'}; still putting back`
  )
  if (job.written) return
  job.report.error ??= `cancelled (${signal}) while putting back what was switched: what is live is unknown`
  void writeReport(job)
}

/** Runs what the mode asks for and fills the report; returns why the run failed, if it did. */
async function pipeline(job: Job): Promise<string | undefined> {
  const { settings, report } = job
  if (settings.mode === 'setup') return setup(job)
  if (settings.mode !== 'rollback' && settings.checks.length > 0) {
    report.checks = await runChecks({
      workingDirectory: settings.workingDirectory,
      python: settings.python,
      checks: settings.checks,
      testCommand: settings.testCommand,
      repoRoot: settings.context.workspace,
      runnerEnv: process.env,
      timeoutSeconds: settings.checkTimeout,
      log: actionsLog()
    })
  }
  if (settings.mode === 'check' && settings.context.baseSha) {
    report.migrations = await analyzeMigrations({
      base: settings.context.baseSha,
      repoRoot: settings.context.workspace,
      workingDirectory: settings.workingDirectory,
      python: settings.python,
      runnerEnv: process.env,
      timeoutSeconds: settings.checkTimeout,
      info: line => core.info(line)
    })
  }
  const findings = migrationFindings(report.migrations)
  const annotated = findings.length ? [...report.checks, migrationsAsCheck(findings)] : report.checks
  if (annotated.length > 0) {
    const omitted = annotate(redactor.value(annotated))
    if (omitted > 0) report.annotationsOmitted = omitted
  }
  const failedChecks = report.checks.filter(c => c.outcome === 'failed').map(c => c.name)
  if (settings.mode === 'check') {
    return failedChecks.length ? `Django checks failed: ${failedChecks.join(', ')}` : undefined
  }
  if (failedChecks.length) {
    report.error = `Django checks failed (${failedChecks.join(', ')}): nothing was deployed`
    return report.error
  }

  // The release is described before a GitHub deployment exists, so a bad checkout cannot leave one in_progress.
  const d = settings.deploy
  const source =
    settings.mode === 'deploy'
      ? await describeRelease(settings.workingDirectory, d.releaseName ?? '', {
          python: d.remotePython,
          options: d.venvOptions,
          pipArgs: d.pipArgs
        })
      : undefined
  if (source) {
    core.info(
      `release ${source.name} from ${source.revision.slice(0, 12)} (virtualenv key ${source.venvKey})`
    )
    for (const w of source.warnings ?? []) core.warning(w)
  }
  // A rollback's deployment is made once the release it puts back (and so its commit) is known: GitHub then
  // shows the commit that is live, not the workflow's.
  if (source) job.deployment = await startGithubDeployment(settings)
  const onTarget = async (release: string, revision: string | undefined): Promise<void> => {
    job.deployment = await startGithubDeployment(settings, release, revision)
  }
  const log = actionsLog()
  const runner = (job.runner = new Runner(settings, log, testFaults()))
  job.release = source?.name
  // Cancelled before the runner existed: it starts stopped.
  if (job.signals > 0) runner.cancel('cancelled')
  if (job.fatal) runner.fail(job.fatal)
  let r: NonNullable<Report['deploy']>
  try {
    r = source ? await runner.deploy(source) : await runner.rollback(onTarget)
  } finally {
    log.flush?.()
  }
  report.deploy = r
  if (r.dryRun) await printPlan(r.plan ?? [])
  job.final = r.error
    ? { state: 'failure', description: r.rolledBack ? `rolled back: ${r.error}` : r.error }
    : { state: 'success', description: `${r.release} is live` }
  if (r.error) {
    return r.rolledBack
      ? `${r.error}\nRolled back: ${previousReleases(r) ?? 'no release (first deploy)'} is live again.`
      : r.error
  }
  return undefined
}

/** mode: setup on every host (setup/run.ts); the dry run prints each host's steps as a deploy's dry run does. */
async function setup(job: Job): Promise<string | undefined> {
  const log = actionsLog()
  const runner = (job.setup = new SetupRunner(job.settings, log))
  if (job.signals > 0) runner.cancel('cancelled')
  try {
    job.report.setup = await runner.run()
  } finally {
    log.flush?.()
  }
  if (job.report.setup.dryRun) await printPlan(job.report.setup.plan ?? [])
  return job.report.setup.error
}

/**
 * The dry run: the phases the deploy would run, in order, each host's steps of each phase in a group of its own
 * (`plan N/M phase[, batch I/J]: host`), its commands printed as data (never as workflow commands).
 */
async function printPlan(plan: PlannedPhase[]): Promise<void> {
  const fails = { stop: 'stops the deploy', revert: 'puts back every host switched', warn: 'is a warning' }
  for (const [i, p] of plan.entries()) {
    core.info(`phase ${i + 1} of ${plan.length}: ${p.phase} (a failure ${fails[p.onFailure]})`)
    for (const [j, b] of p.batches.entries()) {
      const batch = p.batches.length > 1 ? `, batch ${j + 1}/${p.batches.length}` : ''
      for (const h of b)
        await core.group(`plan ${i + 1}/${plan.length} ${p.phase}${batch}: ${h.host}`, async () => {
          core.info(asData(h.steps.join('\n\n')))
        })
    }
  }
}

/**
 * For the end-to-end tests only: DJANGO_DEPLOY_TEST_FAULT makes a bug happen after a host's switch, to show
 * that the last-resort handlers put back what was switched. `rejection`: an unhandled rejection; `exception`:
 * an uncaught exception; `stuck`: an unhandled rejection and a deploy flow that never ends.
 */
function testFaults(): ConstructorParameters<typeof Runner>[2] {
  const fault = process.env.DJANGO_DEPLOY_TEST_FAULT
  if (!fault) return {}
  return {
    afterSwitch: () => {
      const e = new Error(`injected fault (${fault})`)
      if (fault === 'exception')
        setImmediate(() => {
          throw e
        })
      else void Promise.reject(e)
      return fault === 'stuck' ? new Promise<void>(() => undefined) : undefined
    }
  }
}

/** Posts the deployment's final status; an API failure only warns, it never changes the deploy's result. */
async function finishDeployment(
  deployment: DeploymentHandle | undefined,
  state: 'success' | 'failure',
  description: string
): Promise<void> {
  try {
    await deployment?.finish(state, redactor.text(description))
  } catch (e) {
    core.warning(
      `could not set the GitHub deployment's final status (${state}); the deploy's result stands: ${redactor.text((e as Error).message)}`
    )
  }
}

/** A GitHub deployment of `release` (default the release-name) built from `ref` (default the workflow's commit). */
async function startGithubDeployment(
  settings: Settings,
  release = settings.deploy.releaseName,
  ref?: string
): Promise<DeploymentHandle | undefined> {
  const g = settings.github
  // With github-deployment: false the job's own `environment:` records the deployment: no second one.
  if (!g.token || !g.deployment || settings.deploy.dryRun || !settings.context.owner) return undefined
  try {
    return await startDeployment({
      token: g.token,
      ctx: settings.context,
      environment: g.environment,
      environmentUrl: g.environmentUrl,
      ref,
      description: redactor.text(`${settings.mode} ${release ?? ''}`.trim())
    })
  } catch (e) {
    core.warning(`could not create a GitHub deployment: ${(e as Error).message}`)
    return undefined
  }
}

function publishOutputs(report: Report): void {
  core.setOutput('checks', checksOutcome(report))
  core.setOutput('release', report.deploy?.release ?? '')
  core.setOutput('previous-release', (report.deploy && previousReleases(report.deploy)) ?? '')
  core.setOutput('deployed', String(report.deploy?.deployed ?? false))
  core.setOutput('rolled-back', String(report.deploy?.rolledBack ?? false))
  core.setOutput('site-url', report.setup?.siteUrl ?? '')
}

async function publishSummary(settings: Settings, unredacted: Report): Promise<void> {
  try {
    await writeSummary(redactor.value(unredacted), { runUrl: settings.context.runUrl })
  } catch (e) {
    core.warning(`could not write the job summary: ${(e as Error).message}`)
  }
}

async function publishComment(settings: Settings, unredacted: Report, failed: boolean): Promise<void> {
  const ctx = { runUrl: settings.context.runUrl }
  const report = redactor.value(unredacted)
  const g = settings.github
  if (g.token && settings.context.prNumber !== undefined && g.comment !== 'never') {
    try {
      const key = g.commentKey ? `<sub>comment-key: ${g.commentKey}</sub>\n\n` : ''
      await upsertPullRequestComment({
        token: g.token,
        ctx: settings.context,
        body: key + renderSummary(report, ctx),
        marker: markerFor(g.commentKey),
        // on-failure: a failed run posts (or updates) the comment; a passing one only updates an earlier one,
        // so a fixed PR does not keep showing the failure.
        updateOnly: g.comment === 'on-failure' && !failed
      })
    } catch (e) {
      core.warning(`could not comment on the pull request: ${(e as Error).message}`)
    }
  }
}
