#!/usr/bin/env bash
# The deploy benchmark: the built action against a hand-written `tar | ssh` + restart baseline, in one run,
# on two identical sandbox targets (sshd + nginx + gunicorn on loopback), under the same HTTP load.
#
# Usage: npm run bench            (= bash bench/run.sh; needs root: the sandbox makes users, sudoers, nginx)
#        npm run bench:broken     (= bash bench/run.sh broken: a 500-answering release, before vs now)
#        npm run bench:venv       (= bash bench/run.sh venv: dependency changes, action vs a hand-written deploy)
#        npm run bench:memory     (= bash bench/run.sh memory: peak RSS of the action for 5, 50 and 500 MB releases)
#        BENCH_ROUNDS=5 npm run bench
# Writes bench/results.md and prints the same Markdown.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh needs root (the sandbox target creates users, a sudoers file and a root nginx)" >&2
  exit 1
fi

bash scripts/setup.sh
if [ "${1:-}" = upload ] && ! command -v rsync >/dev/null; then
  echo "== installing rsync (the upload benchmark compares with it; the action never needs it)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
fi
if [ ! -f dist/index.js ]; then
  echo "== dist/index.js missing: npm run bundle"
  npm run bundle
fi
exec npx tsx "bench/${1:-deploy}.mts"
