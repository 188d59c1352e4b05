#!/usr/bin/env bash
# Unpacks Django 4.2 (Debian trixie) and 5.2 (Debian sid) into .django/<version>/ so tests can run the checks
# against several Django releases with bookworm's /usr/bin/python3. PyPI is not reachable here, Debian is.
# The system's apt sources and state are never touched: apt runs with its own lists, cache and sources.
#
# Usage: bash scripts/django-versions.sh
# Then:  PYTHONPATH=.django/4.2/usr/lib/python3/dist-packages /usr/bin/python3 -m django --version
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.django"
versions=(4.2 5.2)

# Fast path: a version counts as present once it imports and reports the right major.minor.
have() {
  local v="$1" dp="$dest/$1/usr/lib/python3/dist-packages"
  [ -f "$dest/$v/.complete" ] || return 1
  local got
  got="$(PYTHONPATH="$dp" /usr/bin/python3 -m django --version 2>/dev/null)" || return 1
  [[ "$got" == "$v".* ]]
}

missing=()
for v in "${versions[@]}"; do have "$v" || missing+=("$v"); done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

# The main archive's URI as the system is configured (a mirror or a snapshot may stand in for deb.debian.org).
uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
  /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
uri="${uri:-http://deb.debian.org/debian}"
security_uri="${uri%/debian}/debian-security"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

apt_dir="$dest/.apt"
mkdir -p "$apt_dir/debs"

# One private apt tree per suite, so "the candidate" of python3-django is the suite's own version.
apt_for() {
  local suite="$1" d="$apt_dir/$1"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  if [ ! -f "$d/sources.list" ]; then
    {
      echo "deb [signed-by=$keyring] $uri $suite main"
      if [ "$suite" = trixie ]; then echo "deb [signed-by=$keyring] $security_uri trixie-security main"; fi
    } >"$d/sources.list"
  fi
  local opts=(
    -o "Dir::Etc::SourceList=$d/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$d/lists"
    -o "Dir::Cache=$d/cache"
    -o APT::Sandbox::User=root
    -qq
  )
  printf '%s\n' "${opts[@]}"
}

apt_update() {
  local suite="$1"
  mapfile -t opts < <(apt_for "$suite")
  # Re-fetching indexes is the slow part: do it at most once a day.
  if [ -z "$(find "$apt_dir/$suite/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get "${opts[@]}" update >"$apt_dir/$suite/update.log" 2>&1 || {
      cat "$apt_dir/$suite/update.log" >&2
      echo "django-versions: apt-get update for $suite failed" >&2
      exit 1
    }
  fi
}

# Highest available version of PACKAGE in SUITE whose Debian version starts with PREFIX (e.g. 3:4.2).
pick() {
  local suite="$1" pkg="$2" prefix="$3"
  mapfile -t opts < <(apt_for "$suite")
  apt-cache "${opts[@]}" madison "$pkg" 2>/dev/null | awk -F'|' -v p="$prefix" '
    { gsub(/ /, "", $2); if (index($2, p) == 1) { print $2; exit } }'
}

# Downloads PACKAGE=VERSION from SUITE into the shared deb directory, prints the .deb path.
fetch() {
  local suite="$1" pkg="$2" ver="$3"
  mapfile -t opts < <(apt_for "$suite")
  local existing
  existing="$(find "$apt_dir/debs" -maxdepth 1 -name "${pkg}_*.deb" | while read -r f; do
    if [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then echo "$f"; fi
  done | head -1)"
  if [ -n "$existing" ]; then
    echo "$existing"
    return
  fi
  (cd "$apt_dir/debs" && apt-get "${opts[@]}" download "$pkg=$ver" >"$apt_dir/$suite/download.log" 2>&1) || {
    cat "$apt_dir/$suite/download.log" >&2
    echo "django-versions: could not download $pkg=$ver from $suite" >&2
    exit 1
  }
  find "$apt_dir/debs" -maxdepth 1 -name "${pkg}_*.deb" | while read -r f; do
    if [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then echo "$f"; fi
  done | head -1
}

for v in "${missing[@]}"; do
  apt_update "$([ "$v" = 4.2 ] && echo trixie || echo sid)"
done
apt_update sid # asgiref and sqlparse come from sid for every version

# Django 5.2 needs asgiref >= 3.8.1 (bookworm has 3.6); sid's serves 4.2 and 5.2 alike.
asgiref_ver="$(pick sid python3-asgiref '')"
sqlparse_ver="$(pick sid python3-sqlparse '')"
asgiref_deb="$(fetch sid python3-asgiref "$asgiref_ver")"
sqlparse_deb="$(fetch sid python3-sqlparse "$sqlparse_ver")"

for v in "${missing[@]}"; do
  suite="$([ "$v" = 4.2 ] && echo trixie || echo sid)"
  django_ver="$(pick "$suite" python3-django "3:$v.")"
  if [ -z "$django_ver" ]; then
    echo "django-versions: Debian $suite has no python3-django $v.x any more" >&2
    exit 1
  fi
  django_deb="$(fetch "$suite" python3-django "$django_ver")"
  out="$dest/$v"
  rm -rf "$out"
  mkdir -p "$out"
  for deb in "$django_deb" "$asgiref_deb" "$sqlparse_deb"; do dpkg-deb -x "$deb" "$out"; done
  have_ver="$(PYTHONPATH="$out/usr/lib/python3/dist-packages" /usr/bin/python3 -m django --version)"
  if [[ "$have_ver" != "$v".* ]]; then
    echo "django-versions: unpacked $v but python reports $have_ver" >&2
    exit 1
  fi
  touch "$out/.complete"
done
