#!/usr/bin/env bash
# Unpacks pinned Django releases from Debian's archives into .django/<major.minor>/ so the tests run the checks
# against the Django versions teams run (PyPI is not reachable here, Debian is):
#   4.2 LTS  (trixie)        and 5.2 LTS (sid)  run by bookworm's /usr/bin/python3 (3.11): runner and server side
#   6.1      (experimental)  needs Python >= 3.12: runner side, with the interpreter recorded in .django/6.1/python
# Debian's own 3.2 (python3-django in bookworm) stays importable by /usr/bin/python3 as an extra.
#
# Reproducible: every .deb is pinned to an exact Debian version AND its sha256. apt itself verifies what it
# downloads against the signed Release files (debian-archive-keyring); the sha256 below additionally pins the exact
# bytes, so a rebuilt package under the same version, or a different mirror, cannot slip in unnoticed. A pin that
# is no longer in its suite fails the run naming the version and the archive; nothing falls back to another version.
# The system's apt sources and state are never touched: apt runs with its own lists, cache and sources.
#
# Usage: bash scripts/django-versions.sh          (DJANGO_DIR=... to unpack elsewhere than .django/)
# Then:  PYTHONPATH=.django/4.2/usr/lib/python3/dist-packages /usr/bin/python3 -m django --version
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${DJANGO_DIR:-$root/.django}"

# major.minor  suite  Debian version  sha256 of the .deb
DJANGO_PINS=(
  "4.2 trixie 3:4.2.30-0+deb13u1 ac416501972eb8519a3e6c99f28be4eafccfc02b054da85a7de195d81de610cb"
  "5.2 sid 3:5.2.18-2 6c8eb4bebb9408f7b6578be3ebbb2600d4675e752ca163e99c28f79948ba44dd"
  "6.1 experimental 3:6.1.1-1 48692d48955c5fb64d41b7febf7a441dc8f8c154c67246488bccd8336fb21f38"
)
# package  suite  Debian version  sha256: unpacked into every tree (bookworm's asgiref 3.6 is too old for 5.2+).
# Debian's Django links the admin's vendored jQuery to ../../(…)/usr/share/javascript/jquery/ (libjs-jquery):
# unpacked into the same tree, those links resolve there, and collectstatic works for a project with the admin.
DEP_PINS=(
  "python3-asgiref sid 3.12.1-1 1363e8c6ff1291625036e8501be342238ac27452c140abb30a0c5225735021e2"
  "python3-sqlparse sid 0.5.5-2 5d4e32eca4e46a1a48a4e0f4f62f04ad8d899b5cdf91d1a87dc88f7e25dfd9fd"
  "libjs-jquery sid 3.7.1+dfsg+~3.5.33-1 818d6383b5b8f33734f682076b02fe3e765af23251ff6bf2b47747a4484e19d3"
)
# Django 6 needs Python >= 3.12; bookworm has 3.11. The first of these that exists runs the 6.1 tree.
PY312_CANDIDATES=(
  "${DJANGO6_PYTHON:-}" /root/.pyenv/versions/3.13.0/bin/python3 /root/.pyenv/versions/3.12.1/bin/python3
  /usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/bin/python3.13 /usr/bin/python3.12
)

fail() {
  echo "django-versions: $*" >&2
  exit 1
}

python_for() {
  local v="$1" p
  if [ "${v%%.*}" -lt 6 ]; then
    echo /usr/bin/python3
    return
  fi
  for p in "${PY312_CANDIDATES[@]}"; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  fail "Django $v needs Python >= 3.12 and none was found (tried: ${PY312_CANDIDATES[*]}); set DJANGO6_PYTHON"
}

# A symlink in the tree that leads nowhere (a file of a Debian package the tree lacks), if any.
dangling() {
  find "$1" -xtype l -print -quit
}

# A tree counts as present when it was unpacked from exactly the pinned version, has no dangling symlink (trees
# made before libjs-jquery was unpacked into them are made again) and still imports as that version.
have() {
  local v="$1" debver="$2" py dp="$dest/$1/usr/lib/python3/dist-packages"
  [ "$(cat "$dest/$v/.complete" 2>/dev/null)" = "$debver" ] || return 1
  [ -z "$(dangling "$dest/$v")" ] || return 1
  py="$(cat "$dest/$v/python" 2>/dev/null)" || return 1
  [[ "$(PYTHONPATH="$dp" "$py" -m django --version 2>/dev/null)" == "$v".* ]]
}

missing=()
for pin in "${DJANGO_PINS[@]}"; do
  read -r v _ debver _ <<<"$pin"
  have "$v" "$debver" || missing+=("$pin")
done
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

# One private apt tree per suite.
apt_opts() {
  local suite="$1" d="$apt_dir/$1"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  if [ ! -f "$d/sources.list" ]; then
    {
      echo "deb [signed-by=$keyring] $uri $suite main"
      if [ "$suite" = trixie ]; then echo "deb [signed-by=$keyring] $security_uri trixie-security main"; fi
    } >"$d/sources.list"
  fi
  printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root -qq
}

updated=()
apt_update() {
  local suite="$1" opts
  [[ " ${updated[*]} " == *" $suite "* ]] && return
  mapfile -t opts < <(apt_opts "$suite")
  apt-get "${opts[@]}" update >"$apt_dir/$suite/update.log" 2>&1 || {
    cat "$apt_dir/$suite/update.log" >&2
    fail "apt-get update for Debian $suite ($uri) failed"
  }
  updated+=("$suite")
}

# Prints the path of PACKAGE=DEBVER's .deb, downloading it from SUITE unless a copy with the pinned sha256 is there.
fetch() {
  local pkg="$1" suite="$2" debver="$3" sha="$4" label="$5" opts file
  file="$apt_dir/debs/${pkg}_${debver//:/%3a}_all.deb"
  if [ ! -f "$file" ] || [ "$(sha256sum "$file" | cut -d' ' -f1)" != "$sha" ]; then
    rm -f "$file"
    apt_update "$suite"
    mapfile -t opts < <(apt_opts "$suite")
    if ! apt-cache "${opts[@]}" madison "$pkg" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | grep -qxF "$debver"; then
      fail "$label: $pkg $debver is no longer in Debian $suite ($uri); pin a version it has in scripts/django-versions.sh" \
        "(it has: $(apt-cache "${opts[@]}" madison "$pkg" | awk -F'|' '{ gsub(/ /, "", $2); printf "%s ", $2 }'))"
    fi
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" download "$pkg=$debver" >"$apt_dir/$suite/download.log" 2>&1) || {
      cat "$apt_dir/$suite/download.log" >&2
      fail "$label: could not download $pkg=$debver from Debian $suite ($uri)"
    }
    [ -f "$file" ] || fail "$label: apt-get download of $pkg=$debver did not write $file"
  fi
  local got
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    rm -f "$file"
    fail "$label: $pkg $debver from Debian $suite has sha256 $got, the pin in scripts/django-versions.sh is $sha"
  fi
  echo "$file"
}

dep_debs=()
for pin in "${DEP_PINS[@]}"; do
  read -r pkg suite debver sha <<<"$pin"
  dep_debs+=("$(fetch "$pkg" "$suite" "$debver" "$sha" "dependency $pkg")")
done

for pin in "${missing[@]}"; do
  read -r v suite debver sha <<<"$pin"
  py="$(python_for "$v")"
  django_deb="$(fetch python3-django "$suite" "$debver" "$sha" "Django $v")"
  out="$dest/$v"
  rm -rf "$out"
  mkdir -p "$out"
  for deb in "$django_deb" "${dep_debs[@]}"; do dpkg-deb -x "$deb" "$out"; done
  link="$(dangling "$out")"
  [ -z "$link" ] || fail "Django $v: $link in $out leads nowhere ($(readlink "$link")); unpack the package it belongs to"
  have_ver="$(PYTHONPATH="$out/usr/lib/python3/dist-packages" "$py" -m django --version)" ||
    fail "Django $v: $py cannot import the unpacked tree in $out"
  if [[ "$have_ver" != "$v".* ]]; then
    fail "Django $v: unpacked $debver but $py reports $have_ver"
  fi
  echo "$py" >"$out/python"
  echo "$debver" >"$out/.complete"
  echo "django-versions: Django $have_ver ($debver from Debian $suite) in $out, run by $py"
done
