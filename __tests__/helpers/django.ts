/**
 * The Django versions tests can run: Debian's own 3.2 (importable by /usr/bin/python3 as is) and the 4.2/5.2
 * trees that `bash scripts/django-versions.sh` unpacks into .django/<version>/.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DjangoVersion {
  /** major.minor, e.g. '4.2' */
  version: string
  /** Environment that makes /usr/bin/python3 import this version. */
  env: Record<string, string>
}

export const SYSTEM_PYTHON = '/usr/bin/python3'
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const UNPACKED = ['4.2', '5.2']

export function djangoVersions(): DjangoVersion[] {
  if (!existsSync(SYSTEM_PYTHON) || !existsSync('/usr/lib/python3/dist-packages/django')) {
    throw new Error(`Debian's Django 3.2 is missing: apt-get install python3-django (for ${SYSTEM_PYTHON}).`)
  }
  const versions: DjangoVersion[] = [{ version: '3.2', env: {} }]
  for (const version of UNPACKED) {
    const dir = path.join(REPO_ROOT, '.django', version)
    const sitePackages = path.join(dir, 'usr/lib/python3/dist-packages')
    // .complete is written last by the script, so a half-unpacked tree does not count.
    if (!existsSync(path.join(dir, '.complete')) || !existsSync(path.join(sitePackages, 'django'))) {
      throw new Error(
        `Django ${version} is not unpacked in ${dir}: run \`bash scripts/django-versions.sh\` first.`
      )
    }
    versions.push({ version, env: { PYTHONPATH: sitePackages } })
  }
  return versions
}
