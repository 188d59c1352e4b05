/**
 * A GitHub deployment for the deploy mode, so the environment page and the PR show what is live and link to
 * the run. Missing permission only warns: the deploy itself must not depend on it.
 */
import * as core from '@actions/core'
import * as github from '@actions/github'
import type { RunContext } from '../settings.js'
import { describeError, isPermissionError } from './errors.js'

// GitHub rejects deployment status descriptions longer than 140 characters.
const MAX_DESCRIPTION = 140

export interface StartDeploymentOptions {
  token: string
  ctx: RunContext
  environment: string
  environmentUrl?: string
  description?: string
  /** The commit that goes live; default the workflow's. A rollback gives the commit of the release it puts back. */
  ref?: string
}

export interface DeploymentHandle {
  id: number
  /** Posts the final status. A missing permission warns; other API errors throw. */
  finish(state: 'success' | 'failure', description?: string): Promise<void>
}

export async function startDeployment(opts: StartDeploymentOptions): Promise<DeploymentHandle | undefined> {
  const { ctx, environment } = opts
  const octokit = github.getOctokit(opts.token)
  const repo = { owner: ctx.owner, repo: ctx.repo }
  const hint = 'The token needs `permissions: deployments: write`; continuing without a GitHub deployment.'

  let id: number
  try {
    const res = await octokit.rest.repos.createDeployment({
      ...repo,
      ref: opts.ref || ctx.sha || ctx.ref,
      environment,
      description: shorten(opts.description ?? `django-deploy to ${environment}`),
      auto_merge: false,
      required_contexts: [],
      transient_environment: false,
      production_environment: environment === 'production'
    })
    // 202 means GitHub merged the default branch instead of creating a deployment (only with auto_merge).
    if (!('id' in res.data) || typeof res.data.id !== 'number') {
      const message = (res.data as { message?: string }).message
      core.warning(`GitHub did not create a deployment: ${message ?? `HTTP ${res.status}`}`)
      return undefined
    }
    id = res.data.id
  } catch (err) {
    if (isPermissionError(err)) {
      core.warning(`Could not create a GitHub deployment for ${environment} (${describeError(err)}). ${hint}`)
      return undefined
    }
    throw new Error(`Could not create a GitHub deployment for ${environment}: ${describeError(err)}`, {
      cause: err
    })
  }

  const post = async (
    state: 'in_progress' | 'success' | 'failure',
    description: string | undefined,
    final: boolean
  ): Promise<void> => {
    try {
      await octokit.rest.repos.createDeploymentStatus({
        ...repo,
        deployment_id: id,
        state,
        environment,
        ...(ctx.runUrl ? { log_url: ctx.runUrl } : {}),
        ...(final && opts.environmentUrl ? { environment_url: opts.environmentUrl } : {}),
        ...(description ? { description: shorten(description) } : {})
      })
    } catch (err) {
      if (isPermissionError(err)) {
        core.warning(`Could not set GitHub deployment ${id} to ${state} (${describeError(err)}). ${hint}`)
        return
      }
      throw new Error(`Could not set GitHub deployment ${id} to ${state}: ${describeError(err)}`, {
        cause: err
      })
    }
  }

  await post('in_progress', opts.description ?? 'Deploying', false)
  return {
    id,
    finish: (state, description) => post(state, description, true)
  }
}

function shorten(description: string): string {
  const flat = description.replace(/\s+/g, ' ').trim()
  // By code point, so an emoji at the cut is not split into half a surrogate pair.
  const chars = Array.from(flat)
  return chars.length <= MAX_DESCRIPTION ? flat : `${chars.slice(0, MAX_DESCRIPTION - 1).join('')}…`
}
