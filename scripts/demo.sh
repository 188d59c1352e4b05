#!/usr/bin/env bash
# The README's main job: a real deploy of example/ to a sandbox server on this machine (needs root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
[ -f dist/index.js ] || npm run bundle
exec npx tsx scripts/demo.mts "$@"
