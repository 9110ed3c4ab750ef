#!/usr/bin/env bash
# Builds helm and gitops-verdict from the Go module proxy into
# ${PPO_CACHE_DIR:-$HOME/.cache/photo-policy-operator}/gitops-<hash>/, or reuses
# that directory when both binaries are there. The directory is the last line
# of stdout:
#   BIN=$(tests/gitops/build.sh | tail -1)
# Progress goes to stderr. This module is apart from tests/apiserver so that
# its dependencies (helm pulls in many k8s.io modules) never change the API
# server's cache key.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

helm_version=v4.3.2
bins=(helm gitops-verdict)

command -v go >/dev/null || { echo "build.sh: go not found in PATH" >&2; exit 1; }

# The hash covers everything that changes the binaries.
hash="$(
  {
    go env GOVERSION GOOS GOARCH
    cat go.mod go.sum build.sh
    find . -name '*.go' -type f | LC_ALL=C sort | while read -r f; do
      echo "$f"
      cat "$f"
    done
  } | sha256sum | cut -c1-12
)"
cache="${PPO_CACHE_DIR:-${HOME:-/tmp}/.cache/photo-policy-operator}"
out="$cache/gitops-$hash"

have_all() {
  local b
  for b in "${bins[@]}"; do
    [[ -x "$out/$b" ]] || return 1
  done
}

if have_all; then
  echo "build.sh: reusing $out" >&2
  touch "$out" # marks it used for the pruning below
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.gitops-build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# helm prints this version in `helm version`.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"

echo "build.sh: building ${bins[*]} into $out (first build takes a few minutes)" >&2
start=$SECONDS
# -mod=readonly: fail if go.mod/go.sum are incomplete instead of editing them.
GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
  go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  helm.sh/helm/v4/cmd/helm \
  ./cmd/gitops-verdict >&2
echo "build.sh: built in $((SECONDS - start))s" >&2

# Publish the directory in one rename. If a concurrent build got there first, keep its copy.
if ! have_all; then
  rm -rf "$out"
  mv -T "$tmp" "$out" 2>/dev/null || true
fi
have_all || { echo "build.sh: binaries missing in $out" >&2; exit 1; }
# Drop builds of other versions unused for 7 days, and abandoned temp dirs.
find "$cache" -mindepth 1 -maxdepth 1 -type d \( -name 'gitops-*' -mtime +7 -o -name '.gitops-build-*' -mtime +1 \) \
  ! -path "$out" -exec rm -rf {} + 2>/dev/null || true
echo "$out"
