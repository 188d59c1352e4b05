/**
 * The Django versions tests run, as `bash scripts/django-versions.sh` unpacks them into .django/<version>/
 * (or $DJANGO_DIR): 4.2 LTS and 5.2 LTS with bookworm's /usr/bin/python3 (3.11), 6.1 with the Python >= 3.12 the
 * script recorded in .django/6.1/python; Debian's own 3.2 (importable by /usr/bin/python3 as is) as an extra.
 * A version that is not there fails the test run: nothing is skipped silently.
 */
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DjangoVersion {
  /** major.minor, e.g. '4.2' */
  version: string
  /** The interpreter that runs this version. */
  python: string
  /** Environment that makes `python` import this version. */
  env: Record<string, string>
}

export const SYSTEM_PYTHON = '/usr/bin/python3'
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const DJANGO_DIR = process.env.DJANGO_DIR || path.join(REPO_ROOT, '.django')
/** Runner side: the checks run with these (6.1 needs Python >= 3.12). */
export const RUNNER_VERSIONS = ['3.2', '4.2', '5.2', '6.1']
/** Server side: bookworm's Python 3.11 runs these. */
export const SERVER_VERSIONS = ['3.2', '4.2', '5.2']

function unpacked(version: string): DjangoVersion {
  if (version === '3.2') {
    if (!existsSync(SYSTEM_PYTHON) || !existsSync('/usr/lib/python3/dist-packages/django')) {
      throw new Error(
        `Debian's Django 3.2 is missing: apt-get install python3-django (for ${SYSTEM_PYTHON}).`
      )
    }
    return { version, python: SYSTEM_PYTHON, env: {} }
  }
  const dir = path.join(DJANGO_DIR, version)
  const sitePackages = path.join(dir, 'usr/lib/python3/dist-packages')
  const pythonFile = path.join(dir, 'python')
  // .complete is written last by the script, so a half-unpacked tree does not count. A tree unpacked before the
  // script recorded its interpreter is bookworm's python3's (only 6.x needs another one).
  const python = existsSync(pythonFile)
    ? readFileSync(pythonFile, 'utf8').trim()
    : Number(version.split('.')[0]) < 6
      ? SYSTEM_PYTHON
      : undefined
  if (!existsSync(path.join(dir, '.complete')) || !python || !existsSync(path.join(sitePackages, 'django'))) {
    throw new Error(
      `Django ${version} is not unpacked in ${dir}: run \`bash scripts/django-versions.sh\` first.`
    )
  }
  return { version, python, env: { PYTHONPATH: sitePackages } }
}

export function runnerDjangoVersions(): DjangoVersion[] {
  return RUNNER_VERSIONS.map(unpacked)
}

/** The versions a deploy target runs (bookworm's /usr/bin/python3). */
export function djangoVersions(): DjangoVersion[] {
  return SERVER_VERSIONS.map(unpacked)
}
