#!/usr/bin/env bash
# Installs the container runtimes the end-to-end tests drive: Debian's
# dockerd and runc, and containerd 2.4.2 (NRI) built from the Go module
# proxy into a cache directory. Idempotent and quick once cached.
set -euo pipefail

cache=${INUSE_CACHE:-$HOME/.cache/inuse}
bin=$cache/bin
mkdir -p "$bin"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v readelf >/dev/null 2>&1 || missing+=(binutils)
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "missing Debian packages: ${missing[*]}; run as root" >&2
		exit 1
	fi
	echo "installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

containerd_version=v2.4.2
if [[ ! -x $bin/ctr ]] || ! "$bin/containerd" --version 2>/dev/null | grep -q " ${containerd_version#v}"; then
	echo "building containerd $containerd_version into $bin" >&2
	GOBIN=$bin go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version" \
		"github.com/containerd/containerd/v2/cmd/ctr@$containerd_version"
fi
