#!/usr/bin/env bash
# Runs golangci-lint (.golangci.yml), built once from the Go module proxy
# into the cache, and checks that the module vets on arm64 too.
set -euo pipefail
cd "$(dirname "$0")/.."

version=v2.15.0
bin=${INUSE_CACHE:-$HOME/.cache/inuse}/bin
lint=$bin/golangci-lint
if [[ ! -x $lint ]] || ! "$lint" version 2>/dev/null | grep -q " ${version#v} "; then
	echo "building golangci-lint $version into $bin" >&2
	GOBIN=$bin go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$version"
fi
"$lint" run ./...
GOARCH=arm64 go vet ./...
