#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, type-checks, lints, checks that the
# committed dist/ is what src/ builds, and runs every test (unit, then e2e against real Django, OpenSSH,
# Gunicorn and nginx started on loopback by the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

echo "== typecheck"
npx tsc --noEmit -p tsconfig.test.json
echo "== lint"
npx eslint .
npx prettier --check . >/dev/null || { npx prettier --check .; exit 1; }

echo "== dist/ is fresh"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
npx ncc build src/index.ts -o "$fresh" --license licenses.txt >/dev/null
if ! diff -r -q dist "$fresh" >/dev/null; then
  diff -r -q dist "$fresh" || true
  echo "dist/ does not match src/: run 'npm run bundle' and commit dist/" >&2
  exit 1
fi

echo "== tests"
results="$fresh/jest.json"
status=0
NODE_OPTIONS=--experimental-vm-modules npx jest --ci --json --outputFile="$results" "$@" || status=$?
# One plain closing line, whatever the runner printed before it.
node -e 'const r = require(process.argv[1]); console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`)' "$results" || true
exit $status
