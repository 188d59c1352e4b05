/** Checks: the Django project on the runner and which checks run on it. */
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { didYouMean, splitList, type RawValues } from './sources.js'

export const CHECK_NAMES = ['check', 'deploy', 'migrations', 'test'] as const
export type CheckName = (typeof CHECK_NAMES)[number]

export interface ChecksSettings {
  /** Absolute path of the Django project on the runner (holds manage.py). */
  workingDirectory: string
  python: string
  checks: CheckName[]
  testCommand?: string
  /** Seconds one check may run before its process group is killed. */
  checkTimeout: number
}

export function readChecks(raw: RawValues, workspace: string): ChecksSettings {
  const wdRaw = raw.get('working-directory')
  const workingDirectory = resolve(workspace, wdRaw.value)
  if (!existsSync(workingDirectory))
    raw.fail(
      wdRaw,
      `"${wdRaw.value}" does not exist in the workspace; expected the folder that holds manage.py`
    )
  return {
    workingDirectory,
    python: raw.get('python').value,
    checks: checkList(raw),
    testCommand: raw.text('test-command'),
    checkTimeout: raw.int('check-timeout')
  }
}

function checkList(raw: RawValues): CheckName[] {
  const checksRaw = raw.get('checks')
  const words = splitList(checksRaw.value.toLowerCase())
  if (words.length === 1 && words[0] === 'none') return []
  if (words.length === 1 && words[0] === 'all') return [...CHECK_NAMES]
  const checks: CheckName[] = []
  for (const w of words) {
    if ((CHECK_NAMES as readonly string[]).includes(w)) {
      if (!checks.includes(w as CheckName)) checks.push(w as CheckName)
    } else {
      raw.fail(
        checksRaw,
        `unknown check "${w}"${didYouMean(w, CHECK_NAMES)}; expected any of ${CHECK_NAMES.join(', ')}, all or none`
      )
    }
  }
  return checks
}
