#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need: Debian packages (when root and missing),
# npm packages (when package-lock.json changed), and pinned Django 4.2 / 5.2 / 6.1 beside Debian's 3.2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ansible: its ansible-inventory is the oracle of the inventory tests (≈ 260 MB, ≈ 40 s to install here).
debs=(git openssh-server openssh-client nginx gunicorn python3-gunicorn python3-django python3-venv python3-pip sudo wrk
  iproute2 xz-utils curl debian-archive-keyring ansible openssl systemd
  python3-whitenoise python3-dj-database-url python3-dotenv pyflakes3
  systemd-container pebble certbot python3-certbot-nginx postgresql-15 python3-psycopg2)
# The python3-whitenoise, -dj-database-url and -dotenv packages: the fixture project __tests__/fixtures/realproject.
# pyflakes3: the lint of the remote Python programs (src/remote/python/*.py, __tests__/unit/remote-python.test.ts).
# systemd-container (systemd-nspawn), pebble (a test ACME server standing in for Let's Encrypt), certbot and its
# nginx plugin: the tests of `mode: setup`, which boot a whole systemd in a container on an overlay of this machine's
# root (so everything installed here is inside it). postgresql-15 and python3-psycopg2: the migration-safety tests'
# real PostgreSQL, shared by the fleet sandbox's hosts.
# systemd is installed for `systemd-analyze verify` only (the README's units): nothing here boots it, and without
# a running systemd (containers, these machines) package scripts start no service.
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages (run as root to install them): ${missing[*]}" >&2
    exit 1
  fi
fi

# Scripts are ignored so ssh2's optional native add-ons are not built: dist/ then comes out the same everywhere.
if ! cmp -s package-lock.json node_modules/.package-lock.json.copy 2>/dev/null; then
  echo "== npm ci"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.package-lock.json.copy
fi

bash scripts/django-versions.sh
