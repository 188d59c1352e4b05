/**
 * The release's virtualenv: one per set of requirements under venvs/<key>, reused while they do not change,
 * grown from a copy of the live one when they only add pins, seeded with the pip of one already on the server
 * otherwise.
 */
import type { Deps } from '../release/source.js'
import { IN_RELEASE, IN_VENV, type Layout, releaseDir } from './layout.js'
import { REPOINT_PY } from './python/programs.js'
import { q, words } from './quote.js'
import { script } from './shell.js'

export interface VenvOptions {
  /** Content hash of what the virtualenv is made from; equal keys share one virtualenv. */
  key: string
  python: string
  venvOptions: string[]
  pipArgs: string[]
  hasRequirements: boolean
  /** What the virtualenv is made of (release/source.ts depsOf()); set, a copy of the live one may be grown. */
  deps?: Deps
}

/**
 * What `python -m venv` puts in site-packages through ensurepip (pip; setuptools with it up to Python 3.11),
 * as names in the donor's site-packages. Seeding copies exactly these.
 */
const SEED = [
  'pip',
  'pip-*.dist-info',
  'setuptools',
  'setuptools-*.dist-info',
  'pkg_resources',
  '_distutils_hack',
  'distutils-precedence.pth'
]

/**
 * Requirements that only add lines to the live virtualenv's: a copy of it, where pip installs only what is new
 * (the live one is not touched). Not when anything in it names a path outside bin/ that pip would not redo
 * (editable installs, .pth files, a path of the donor outside its scripts). Sets `grown` when it made one.
 */
function growLines(l: Layout, o: VenvOptions & { deps: Deps }, target: string, done: string): string[] {
  return [
    `deps=${q(o.deps.lines.join('\n'))}`,
    `donor=$(readlink -f ${q(`${l.current}/${IN_RELEASE.venv}`)} 2>/dev/null || true)`,
    `if [ -n "$donor" ] && [ -f "$donor/${IN_VENV.complete}" ] && [ "$(head -n 1 "$donor/${IN_VENV.deps}" 2>/dev/null)" = ${q(o.deps.basis)} ] \\`,
    `  && tail -n +2 "$donor/${IN_VENV.deps}" | { while IFS= read -r line; do printf '%s\\n' "$deps" | grep -Fxq -e "$line" || exit 1; done; } \\`,
    `  && ! ls "$donor"/lib/python*/site-packages 2>/dev/null | grep -v '^distutils-precedence\\.pth$' | grep -Eq '\\.pth$|\\.egg-link$|^__editable__' \\`,
    `  && ! grep -rlsF --exclude-dir=__pycache__ --exclude-dir=bin --exclude=pyvenv.cfg -e "$donor" "$donor" >/dev/null; then`,
    // Hard links (a copy of 25 MB of small files costs seconds of disk writes): pip removes a file before it
    // writes one, moves uninstalled ones away and compiles through a rename, and what is rewritten here is
    // replaced by a rename, so nothing writes into a file the live virtualenv shares.
    // A copy that fails (links refused: a file someone else owns, with fs.protected_hardlinks) is no error:
    // the virtualenv is built as when there is nothing to copy.
    `  if cp -al "$donor" ${q(target)} 2>/dev/null && rm -f ${q(done)} ${q(`${target}/${IN_VENV.deps}`)} && ${words(o.python, '-c', REPOINT_PY)} "$donor" ${q(target)}; then`,
    '    grown=yes',
    '    echo "virtualenv copied from the live one ($donor): pip adds only the new requirements"',
    '  else',
    `    rm -rf ${q(target)}`,
    '    echo "could not copy the live virtualenv ($donor): building a new one"',
    '  fi',
    'fi'
  ]
}

/**
 * A new virtualenv, seeded with the pip of a complete one already on the server when it can be (see `venv`),
 * else made the normal way.
 */
function buildLines(l: Layout, o: VenvOptions, target: string): string[] {
  const normal = `${words(o.python, '-m', 'venv', ...o.venvOptions, target)}`
  if (o.venvOptions.some(v => v === '--without-pip' || v === '--upgrade-deps')) return [normal]
  return [
    // A donor: a complete virtualenv, the live release's first (its pip is the one that last worked).
    'donor=""',
    `for v in ${q(`${l.current}/${IN_RELEASE.venv}`)} ${q(l.venvs)}/*; do`,
    '  d=$(readlink -f "$v" 2>/dev/null) || continue',
    `  if [ -f "$d/${IN_VENV.complete}" ] && [ -d "$d/lib" ]; then donor=$d; break; fi`,
    'done',
    'seeded=""',
    'if [ -n "$donor" ]; then',
    `  ${words(o.python, '-m', 'venv', '--without-pip', ...o.venvOptions, target)}`,
    // Same Python version only: site-packages is lib/pythonX.Y/site-packages in both.
    `  sp=$(cd ${q(target)} && ls -d lib/python*/site-packages | head -n 1)`,
    '  if [ -n "$sp" ] && [ -f "$donor/$sp/pip/__init__.py" ]; then',
    `    for e in ${SEED.join(' ')}; do`,
    `      for f in "$donor/$sp"/$e; do [ ! -e "$f" ] || cp -pR "$f" ${q(target)}/"$sp"/; done`,
    '    done',
    // pip's scripts start with `#!<donor>/bin/python…`; a long path gets a /bin/sh launcher instead, which
    // names the donor further down: those are left out (`python -m pip` works all the same).
    '    for f in "$donor"/bin/pip*; do',
    '      [ -f "$f" ] || continue',
    '      first=$(head -n 1 "$f")',
    '      case "$first" in',
    '        "#!$donor/bin/python"*)',
    `          { printf '#!%s%s\\n' ${q(target)} "\${first#"#!$donor"}"; tail -n +2 "$f"; } > ${q(target)}/bin/"\${f##*/}"`,
    `          chmod 755 ${q(target)}/bin/"\${f##*/}" ;;`,
    '      esac',
    '    done',
    '    seeded=yes',
    '    echo "virtualenv seeded with pip from $donor (no pip bootstrap)"',
    '  else',
    `    rm -rf ${q(target)}`,
    '  fi',
    'fi',
    `[ -n "$seeded" ] || ${normal}`
  ]
}

/**
 * Makes (or reuses) the virtualenv for the release's dependencies under venvs/<key> and links it as
 * <release>/.venv. A virtualenv is built in place (its scripts carry absolute paths) and marked complete only
 * at the end, so a half-built one from a killed deploy is rebuilt, never used.
 *
 * Unchanged requirements (same key) run no pip at all. Requirements that only add exact pins to the live
 * virtualenv's (`deps`, recorded in it as IN_VENV.deps) make the new one a hard-linked copy of it where pip installs
 * only what is new (see README, Choices). Other changes make a new virtualenv without paying
 * ensurepip's bootstrap (≈ 4 s: it runs pip to install pip and setuptools from wheels and compiles them):
 * the venv is made `--without-pip` and seeded with the pip (and setuptools) of a complete virtualenv already
 * on the server (the live release's first), copied with their compiled files and mtimes, and the `pip*`
 * scripts re-pointed at the new interpreter. So the new virtualenv has a working pip of the same version, as
 * a normal one would. With no such donor for the same Python version (first deploy), or with `--without-pip`
 * or `--upgrade-deps` in venv-options, it is made the normal way.
 */
export function venv(l: Layout, release: string, o: VenvOptions): string {
  const target = `${l.venvs}/${o.key}`
  const done = `${target}/${IN_VENV.complete}`
  const grow = o.deps ? growLines(l, { ...o, deps: o.deps }, target, done) : []
  const build = buildLines(l, o, target)
  return script(
    `if [ -f ${q(done)} ]; then`,
    `  echo ${q(`reusing virtualenv ${o.key} (requirements unchanged)`)}`,
    'else',
    `  rm -rf ${q(target)}`,
    '  grown=""',
    ...grow.map(line => `  ${line}`),
    '  if [ -z "$grown" ]; then',
    ...build.map(line => `    ${line}`),
    '  fi',
    ...(o.hasRequirements
      ? [
          `  cd ${q(releaseDir(l, release))}`,
          `  ${words(`${target}/bin/python`, '-m', 'pip', 'install', '--disable-pip-version-check', ...o.pipArgs, '-r', 'requirements.txt')}`
        ]
      : []),
    ...(o.deps
      ? [`  printf '%s\\n%s\\n' ${q(o.deps.basis)} "$deps" > ${q(`${target}/${IN_VENV.deps}`)}`]
      : []),
    `  : > ${q(done)}`,
    'fi',
    `rm -rf ${q(`${releaseDir(l, release)}/${IN_RELEASE.venv}`)}`,
    `ln -s ${words(target, `${releaseDir(l, release)}/${IN_RELEASE.venv}`)}`
  )
}
