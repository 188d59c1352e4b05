/**
 * run(): settings → mode → checks → release → deploy/rollback → report. The one place that calls setFailed.
 */
import * as core from '@actions/core'
import { runChecks } from './django/checks.js'
import { Runner, type Log } from './deploy/run.js'
import { annotate } from './github/annotate.js'
import { upsertPullRequestComment } from './github/comment.js'
import { startDeployment, type DeploymentHandle } from './github/deployment.js'
import { renderSummary, writeSummary } from './github/summary.js'
import { describeRelease } from './release/source.js'
import { checksOutcome, type Report } from './report.js'
import { INPUTS, loadSettings, SettingsError, type InputName, type Settings } from './settings.js'

/** Registers every line of a secret with the runner, so a multi-line key is masked line by line too. */
function mask(secret: string | undefined): void {
  if (!secret) return
  core.setSecret(secret)
  for (const line of secret.split('\n')) if (line.trim().length >= 8) core.setSecret(line.trim())
}

const actionsLog: Log = {
  startGroup: title => core.startGroup(title),
  endGroup: () => core.endGroup(),
  info: m => core.info(m),
  warning: m => core.warning(m)
}

export async function run(): Promise<void> {
  for (const [name, spec] of Object.entries(INPUTS)) {
    if ('secret' in spec && spec.secret) mask(core.getInput(name))
  }
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
  if (settings.configFile) core.info(`config file: ${settings.configFile}`)

  const report: Report = { mode: settings.mode, checks: [] }
  let failure: string | undefined
  try {
    failure = await pipeline(settings, report)
  } catch (e) {
    failure = e instanceof Error ? e.message : String(e)
    report.error = failure
  }
  publishOutputs(report)
  await publishReport(settings, report)
  if (failure) core.setFailed(failure)
}

/** Runs what the mode asks for and fills the report; returns why the run failed, if it did. */
async function pipeline(settings: Settings, report: Report): Promise<string | undefined> {
  if (settings.mode !== 'rollback' && settings.checks.length > 0) {
    report.checks = await runChecks({
      workingDirectory: settings.workingDirectory,
      python: settings.python,
      checks: settings.checks,
      testCommand: settings.testCommand,
      repoRoot: settings.context.workspace
    })
    annotate(report.checks)
  }
  const failedChecks = report.checks.filter(c => c.outcome === 'failed').map(c => c.name)
  if (settings.mode === 'check') {
    return failedChecks.length ? `Django checks failed: ${failedChecks.join(', ')}` : undefined
  }
  if (failedChecks.length) {
    report.error = `Django checks failed (${failedChecks.join(', ')}): nothing was deployed`
    return report.error
  }

  const deployment = await startGithubDeployment(settings)
  const runner = new Runner(settings, actionsLog)
  if (settings.mode === 'deploy') {
    const d = settings.deploy
    const source = await describeRelease(settings.workingDirectory, d.releaseName ?? '', {
      python: d.remotePython,
      options: d.venvOptions,
      pipArgs: d.pipArgs
    })
    core.info(
      `release ${source.name} from ${source.revision.slice(0, 12)} (virtualenv key ${source.venvKey})`
    )
    report.deploy = await runner.deploy(source)
  } else {
    report.deploy = await runner.rollback()
  }
  const r = report.deploy
  if (r.dryRun) {
    for (const [host, lines] of Object.entries(r.plan ?? {})) {
      await core.group(`plan for ${host}`, async () => core.info(lines.join('\n\n')))
    }
  }
  await deployment?.finish(
    r.error ? 'failure' : 'success',
    r.error ? (r.rolledBack ? `rolled back: ${r.error}` : r.error) : `${r.release} is live`
  )
  if (r.error) {
    return r.rolledBack
      ? `${r.error}\nRolled back: ${r.previousRelease ?? 'no release (first deploy)'} is live again.`
      : r.error
  }
  return undefined
}

async function startGithubDeployment(settings: Settings): Promise<DeploymentHandle | undefined> {
  const g = settings.github
  if (!g.token || settings.deploy.dryRun || !settings.context.owner) return undefined
  try {
    return await startDeployment({
      token: g.token,
      ctx: settings.context,
      environment: g.environment,
      environmentUrl: g.environmentUrl,
      description: `${settings.mode} ${settings.deploy.releaseName ?? ''}`.trim()
    })
  } catch (e) {
    core.warning(`could not create a GitHub deployment: ${(e as Error).message}`)
    return undefined
  }
}

function publishOutputs(report: Report): void {
  core.setOutput('checks', checksOutcome(report))
  core.setOutput('release', report.deploy?.release ?? '')
  core.setOutput('previous-release', report.deploy?.previousRelease ?? '')
  core.setOutput('deployed', String(report.deploy?.deployed ?? false))
  core.setOutput('rolled-back', String(report.deploy?.rolledBack ?? false))
}

async function publishReport(settings: Settings, report: Report): Promise<void> {
  const ctx = { runUrl: settings.context.runUrl }
  try {
    await writeSummary(report, ctx)
  } catch (e) {
    core.warning(`could not write the job summary: ${(e as Error).message}`)
  }
  if (settings.github.token && settings.context.prNumber !== undefined) {
    try {
      await upsertPullRequestComment({
        token: settings.github.token,
        ctx: settings.context,
        body: renderSummary(report, ctx)
      })
    } catch (e) {
      core.warning(`could not comment on the pull request: ${(e as Error).message}`)
    }
  }
}
