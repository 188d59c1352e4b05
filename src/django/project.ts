/**
 * What the checks need to know about the project before they run, read from its own settings: whether its
 * static files storage keeps a manifest (hashed names that exist only after `collectstatic`), and which SQLite
 * files a check may create in the checkout. With these the `test` check makes the manifest first (in a temporary
 * STATIC_ROOT, outside the checkout) and the checks leave no file of their own behind.
 */
import { execFile } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import path from 'node:path'
import type { CheckCommand } from './checks.js'

export interface ProjectFacts {
  /** The staticfiles storage backend, when it keeps a manifest (a ManifestFilesMixin). */
  manifestStorage?: string
  /** Absolute paths of the SQLite databases of the settings (a check that connects creates them). */
  sqliteFiles: string[]
}

const MARK = 'django-deploy-project:'

/**
 * Sets Django up the way manage.py does (its DJANGO_SETTINGS_MODULE, its sys.path), then prints the facts as
 * JSON on a marked line, connecting to no database and writing nothing.
 */
export const PROBE_PY = [
  'import json, runpy, sys',
  'import django.core.management as management',
  'def probe(argv=None):',
  '    import django',
  '    from django.conf import settings',
  '    django.setup()',
  '    from django.contrib.staticfiles.storage import ManifestFilesMixin',
  '    from django.utils.module_loading import import_string',
  '    storages = getattr(settings, "STORAGES", None) or {}',
  '    backend = storages.get("staticfiles", {}).get("BACKEND") if "staticfiles" in storages else getattr(settings, "STATICFILES_STORAGE", None)',
  '    try:',
  '        manifest = bool(backend) and issubclass(import_string(backend), ManifestFilesMixin)',
  '    except Exception:',
  '        manifest = False',
  '    sqlite = [str(d.get("NAME")) for d in settings.DATABASES.values()',
  '              if str(d.get("ENGINE", "")).endswith("sqlite3") and d.get("NAME")]',
  '    sqlite = [n for n in sqlite if n != ":memory:" and not n.startswith("file:")]',
  `    print("${MARK}" + json.dumps({"manifestStorage": backend if manifest else None, "sqliteFiles": sqlite}), flush=True)`,
  '    sys.exit(0)',
  'management.execute_from_command_line = probe',
  'sys.argv = ["manage.py"]',
  'runpy.run_path("manage.py", run_name="__main__")'
].join('\n')

/**
 * Runs manage.py with STATIC_ROOT set to its first argument (the rest are manage.py's): the project's settings
 * are otherwise used as they are. Set where Django loads the settings module, so it holds however manage.py
 * starts Django. Arguments: static root, then the manage.py command.
 */
export const WITH_STATIC_ROOT_PY = [
  'import runpy, sys',
  'import django.conf',
  'root = sys.argv.pop(1)',
  'load = django.conf.Settings.__init__',
  'def settings_with_root(self, *args, **kwargs):',
  '    load(self, *args, **kwargs)',
  '    self.STATIC_ROOT = root',
  'django.conf.Settings.__init__ = settings_with_root',
  'sys.argv[0] = "manage.py"',
  'runpy.run_path("manage.py", run_name="__main__")'
].join('\n')

/** Reads the facts; undefined when the settings do not load (the checks themselves then say why). */
export async function probeProject(
  python: string,
  cwd: string,
  env: Record<string, string>
): Promise<ProjectFacts | undefined> {
  const stdout = await new Promise<string>(resolve => {
    execFile(python, ['-c', PROBE_PY], { cwd, env, timeout: 120_000, maxBuffer: 4 << 20 }, (_e, out) =>
      resolve(String(out ?? ''))
    )
  })
  const line = stdout.split('\n').find(l => l.startsWith(MARK))
  if (!line) return undefined
  try {
    const raw = JSON.parse(line.slice(MARK.length)) as {
      manifestStorage: string | null
      sqliteFiles: string[]
    }
    return {
      manifestStorage: raw.manifestStorage ?? undefined,
      sqliteFiles: raw.sqliteFiles.map(f => path.resolve(cwd, f))
    }
  } catch {
    return undefined
  }
}

/**
 * `manage.py test` after `collectstatic` into `staticRoot`, both with STATIC_ROOT set to it: the manifest the
 * storage needs exists, and nothing is written into the checkout.
 */
export function manifestTestCommand(python: string, staticRoot: string, display: string): CheckCommand {
  const script = [
    '"$0" -c "$1" "$2" collectstatic --noinput -v 0 ||',
    '{ echo "collectstatic (into a temporary STATIC_ROOT, to make the manifest the tests need) failed" >&2; exit 1; }',
    'exec "$0" -c "$1" "$2" test --noinput'
  ].join('\n')
  return {
    tool: 'bash',
    args: ['-c', script, python, WITH_STATIC_ROOT_PY, staticRoot],
    display,
    usesManagePy: true
  }
}

/** Removes the SQLite files (and their journals) that were not there before the checks; returns them. */
export function removeMadeFiles(files: string[], before: Set<string>): string[] {
  const removed: string[] = []
  for (const f of files) {
    if (before.has(f)) continue
    for (const p of [f, `${f}-journal`, `${f}-wal`, `${f}-shm`]) {
      if (!existsSync(p)) continue
      rmSync(p, { force: true })
      removed.push(p)
    }
  }
  return removed
}
