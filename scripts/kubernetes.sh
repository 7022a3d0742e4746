#!/usr/bin/env bash
# Builds the single-node Kubernetes the cluster test (make test-k8s) runs,
# from released Go modules only, into the cache directory beside containerd
# (scripts/runtimes.sh): kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy and kubectl from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd/server/v3, helm from helm.sh/helm/v3.
# Idempotent: a binary whose embedded module version (go version -m) is the
# pinned one is kept. Cold, the Kubernetes build takes about 20 minutes on
# two busy cores and 2.7 GB of memory (docs/benchmarks.md).
set -euo pipefail

cache=${INUSE_CACHE:-$HOME/.cache/inuse}
bin=$cache/bin
mkdir -p "$bin"

kubernetes_version=v1.37.2
# The staging modules (k8s.io/api, client-go, ...) are published at v0.X.Y
# for Kubernetes v1.X.Y.
staging_version=v0.${kubernetes_version#v1.}
etcd_version=v3.7.3
helm_version=v3.22.0

# The node's pod network: Debian's CNI plugins (bridge, host-local,
# portmap, loopback).
if [[ ! -x /usr/lib/cni/bridge ]]; then
	if [[ $(id -u) != 0 ]]; then
		echo "missing Debian package containernetworking-plugins; run as root" >&2
		exit 1
	fi
	echo "installing containernetworking-plugins" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containernetworking-plugins >/dev/null
fi

export GOFLAGS=-mod=mod CGO_ENABLED=0
build=(nice -n 15 go build -trimpath)

# has BINARY MODULE VERSION: the binary exists and was built with MODULE at
# VERSION (as its main module or a dependency).
has() {
	[[ -x $bin/$1 ]] && go version -m "$bin/$1" 2>/dev/null | awk -v m="$2" -v v="$3" '($1 == "mod" || $1 == "dep") && $2 == m && $3 == v { found = 1 } END { exit !found }'
}

kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
need=()
for b in "${kube[@]}"; do
	has "$b" k8s.io/kubernetes "$kubernetes_version" || need+=("$b")
done
if ((${#need[@]})); then
	echo "building Kubernetes $kubernetes_version (${need[*]}) into $bin" >&2
	src=$cache/src/kubernetes-$kubernetes_version
	mkdir -p "$src"
	# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
	# them with ./staging directories, which a dependency's replace cannot
	# do: this module replaces each with its published release instead.
	# sample-* are examples that nothing builds here.
	modfile=$(cd "$src" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$kubernetes_version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
	{
		echo "module inuse.local/kubernetes"
		echo
		echo "go $(sed -n 's/^go //p' "$modfile")"
		echo
		echo "require k8s.io/kubernetes $kubernetes_version"
		echo
		echo "replace ("
		sed -n '/^replace (/,/^)/p' "$modfile" | awk -v v="$staging_version" \
			'$2 == "=>" && $1 !~ /sample-/ { printf "\t%s => %s %s\n", $1, $1, v }'
		echo ")"
	} >"$src/go.mod.new"
	if ! cmp -s "$src/go.mod.new" "$src/go.mod.in" 2>/dev/null; then
		cp "$src/go.mod.new" "$src/go.mod"
		cp "$src/go.mod.new" "$src/go.mod.in"
		rm -f "$src/go.sum"
	fi
	rm -f "$src/go.mod.new"
	# The version the binaries report (hack/lib/version.sh does the same):
	# the kubelet and kubectl compare it with the API server's.
	minor=${kubernetes_version#v1.}
	minor=${minor%%.*}
	ldflags="-s -w"
	for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		ldflags+=" -X $p.gitVersion=$kubernetes_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	pkgs=()
	for b in "${need[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$b")
	done
	(cd "$src" && "${build[@]}" -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}")
fi

if ! has etcd go.etcd.io/etcd/server/v3 "$etcd_version"; then
	# go install go.etcd.io/etcd/v3@... is refused by the proxy (its go.mod
	# replaces); the server module's own main is etcd.
	echo "building etcd $etcd_version into $bin" >&2
	src=$cache/src/etcd-$etcd_version
	mkdir -p "$src"
	if [[ ! -f $src/go.mod ]]; then
		printf 'module inuse.local/etcd\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" >"$src/go.mod"
	fi
	(cd "$src" && "${build[@]}" -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
fi

if ! has helm helm.sh/helm/v3 "$helm_version"; then
	echo "building helm $helm_version into $bin" >&2
	GOFLAGS= GOBIN=$bin nice -n 15 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$helm_version"
fi
