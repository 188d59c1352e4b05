#!/usr/bin/env bash
# Builds the action into OUT (default dist/): the one build that `npm run bundle`, the dist-freshness check in
# scripts/test.sh, the check-dist CI job and scripts/release.sh all run, so they cannot disagree.
#
# ncc copies ssh2's pagent.exe (a Windows Pageant helper used only by ssh2's agent code) next to the bundle; the
# action never uses an SSH agent, so the 50 KB Windows executable is dropped rather than shipped in every tag.
#
# Usage: bash scripts/bundle.sh [OUT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-dist}"

# The remote Python programs (src/remote/python/*.py) go into the bundle as strings of a generated module.
node scripts/embed-python.mjs
npx ncc build src/index.ts -o "$out" --license licenses.txt >/dev/null
rm -f "$out/pagent.exe"
# Nothing else should appear beside the bundle: a new asset means a dependency started shipping files.
extra="$(find "$out" -mindepth 1 -maxdepth 1 ! -name index.js ! -name licenses.txt ! -name package.json ! -name '*.map')"
if [ -n "$extra" ]; then
  echo "bundle: unexpected files in $out (add them here on purpose or drop them): $extra" >&2
  exit 1
fi
