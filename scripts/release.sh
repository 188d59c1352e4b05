#!/usr/bin/env bash
# Cuts a release the way GitHub's actions/typescript-action template does: tag vX.Y.Z on the release commit and
# move the major tag vX to it, so users of `uses: <owner>/django-deploy@vX` get the new version.
#
# Usage: bash scripts/release.sh X.Y.Z [--dry-run]      (REMOTE=origin by default)
#
# Before anything is tagged: the version is semver and newer than the latest vX.Y.Z tag, the working tree is clean,
# package.json says X.Y.Z, CHANGELOG.md has a `## [X.Y.Z]` section, and dist/ as committed is byte-for-byte what
# scripts/bundle.sh builds from src/ (a tag is what users run: it must carry a fresh dist/).
# --dry-run does all of those checks and prints the tags it would create and move; it changes nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
  echo "release: $*" >&2
  exit 1
}

version="" dry_run=false
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=true ;;
    -*) fail "unknown option $arg (expected: X.Y.Z [--dry-run])" ;;
    *) [ -z "$version" ] || fail "one version expected, got '$version' and '$arg'"; version="${arg#v}" ;;
  esac
done
[ -n "$version" ] || fail "usage: bash scripts/release.sh X.Y.Z [--dry-run]"
[[ "$version" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] ||
  fail "version '$version' is not X.Y.Z (three numbers without leading zeros, e.g. 1.2.0)"
major="v${BASH_REMATCH[1]}"
tag="v$version"
remote="${REMOTE:-origin}"

[ -z "$(git status --porcelain)" ] || fail "the working tree has uncommitted changes: commit or stash them first"

latest="$(git tag --list 'v[0-9]*.[0-9]*.[0-9]*' --sort=-v:refname | head -1)"
if [ -n "$latest" ]; then
  newest="$(printf '%s\n%s\n' "$latest" "$tag" | sort -V | tail -1)"
  if [ "$tag" = "$latest" ] || [ "$newest" != "$tag" ]; then
    fail "$tag is not newer than the latest release tag $latest"
  fi
fi

pkg_version="$(node -p 'JSON.parse(require("fs").readFileSync("package.json", "utf8")).version')"
[ "$pkg_version" = "$version" ] || fail "package.json says version $pkg_version, not $version: bump it in the release commit"
grep -Eq "^## \[$version\]" CHANGELOG.md || fail "CHANGELOG.md has no '## [$version]' section: add one in the release commit"

echo "== building dist/ to compare with the committed one"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
bash scripts/bundle.sh "$fresh/dist"
if ! diff -r -q dist "$fresh/dist"; then
  fail "dist/ as committed is not what src/ builds: run 'npm run bundle', commit dist/, then release"
fi

sha="$(git rev-parse HEAD)"
old_major="$(git rev-parse -q --verify "refs/tags/$major^{commit}" || true)"
echo "release $tag at $sha ($(git log -1 --format=%s HEAD))"
echo "tag $tag: create at $sha"
if [ -z "$old_major" ]; then
  echo "tag $major: create at $sha"
elif [ "$old_major" = "$sha" ]; then
  echo "tag $major: already at $sha"
else
  echo "tag $major: move from $old_major to $sha"
fi
echo "push: git push $remote refs/tags/$tag && git push --force $remote refs/tags/$major"

if $dry_run; then
  echo "dry run: nothing was tagged or pushed"
  exit 0
fi

git tag -a "$tag" -m "$tag"
git tag -fa "$major" -m "$major (moved to $tag)"
git push "$remote" "refs/tags/$tag"
git push --force "$remote" "refs/tags/$major"
echo "released $tag; $major now points at it"
