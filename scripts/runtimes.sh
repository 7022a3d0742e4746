#!/usr/bin/env bash
# Installs the container runtimes the end-to-end tests drive: Debian's
# dockerd, runc and crun (both linked against the host's libseccomp, as
# distributions ship them), containerd 2.4.2 (NRI) and a static runc (as
# upstream releases it) built from the Go module proxy into a cache
# directory. Idempotent and quick once cached.
set -euo pipefail

cache=${INUSE_CACHE:-$HOME/.cache/inuse}
bin=$cache/bin
mkdir -p "$bin"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v crun >/dev/null 2>&1 || missing+=(crun)
[[ -e /usr/lib/$(gcc -dumpmachine)/libseccomp.a ]] || missing+=(libseccomp-dev) # the static runc
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

# The upstream release build: cgo with libseccomp linked in, static.
runc_version=v1.5.3
if [[ ! -x $bin/static-runc/runc ]] || ! "$bin/static-runc/runc" --version 2>/dev/null | grep -q "version ${runc_version#v}"; then
	echo "building a static runc $runc_version into $bin/static-runc" >&2
	GOBIN=$bin/static-runc CGO_ENABLED=1 go install -trimpath -tags "seccomp urfave_cli_no_docs netgo osusergo" \
		-ldflags "-extldflags -static" "github.com/opencontainers/runc@$runc_version"
fi
