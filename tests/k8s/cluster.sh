#!/usr/bin/env bash
# A single-node Kubernetes on this machine, for the cluster test: etcd,
# kube-apiserver (certificates made here with openssl), kube-controller-
# manager, kube-scheduler and a kubelet on the tests' containerd 2.4 (CRI
# and NRI on, CNI from Debian's containernetworking-plugins, the pause image
# built from tests/testdata/pause and imported: no registry is reached).
# The binaries are those scripts/kubernetes.sh and scripts/runtimes.sh
# build into the cache.
#
#   tests/k8s/cluster.sh up DIR     start everything, state under DIR;
#                                   DIR/kubeconfig is the admin's,
#                                   DIR/containerd/containerd.sock CRI and
#                                   containerd's API, DIR/nri/nri.sock NRI
#   tests/k8s/cluster.sh down DIR   stop what up started, remove DIR
#
# Run as root. The host's cgroups may be v1 (hybrid, without systemd):
# the kubelet runs with cgroupDriver cgroupfs and failCgroupV1 false.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down DIR}
dir=${2:?usage: cluster.sh up|down DIR}
cache=${INUSE_CACHE:-$HOME/.cache/inuse}
bin=$cache/bin
repo=$(cd "$(dirname "$0")/../.." && pwd)
node=${INUSE_K8S_NODE:-inuse-node}
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16

down() {
	[[ -d $dir ]] || return 0
	# Reverse order; each started process's pid is in DIR/pids.
	if [[ -f $dir/pids ]]; then
		tac "$dir/pids" | while read -r name pid; do
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		done
	fi
	# Shims outlive containerd: end those of this instance.
	for p in $(pgrep -f "containerd-shim-runc-v2 .*$dir" || true); do kill -9 "$p" 2>/dev/null || true; done
	ip link del cni0 2>/dev/null || true
	grep -o " $dir[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$dir"
}

if [[ $cmd == down ]]; then
	down
	exit 0
fi
[[ $cmd == up ]] || { echo "usage: cluster.sh up|down DIR" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "cluster.sh runs as root" >&2; exit 1; }
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl containerd ctr; do
	[[ -x $bin/$b ]] || { echo "$bin/$b is missing: run scripts/kubernetes.sh and scripts/runtimes.sh" >&2; exit 1; }
done
[[ -x /usr/lib/cni/bridge ]] || { echo "CNI plugins are missing: apt-get install containernetworking-plugins" >&2; exit 1; }

mkdir -p "$dir"/{pki,etcd,log,cni,kubelet,containerd,nri}
: >"$dir/pids"

# start NAME CMD...: runs CMD in the background with its log in DIR/log.
start() {
	local name=$1
	shift
	setsid "$@" >"$dir/log/$name.log" 2>&1 &
	echo "$name $!" >>"$dir/pids"
}

# wait_for WHAT CMD...: retries CMD for a minute.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 600); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "$what did not come up; logs in $dir/log" >&2
	tail -n 30 "$dir"/log/*.log >&2
	return 1
}

# Certificates: one CA signs the API server's serving certificate and one
# client certificate in system:masters, used by every component (the
# single node needs no Node authorizer); a key pair signs service account
# tokens.
pki=$dir/pki
ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
ip=${ip:-127.0.0.1}
(
	cd "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=inuse-test-ca 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
	printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:%s\n' "$ip" >apiserver.ext
	openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile apiserver.ext 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=inuse-test-admin" 2>/dev/null
	openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 2>/dev/null
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: inuse-test
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
- name: inuse-test
  context: {cluster: inuse-test, user: admin}
current-context: inuse-test
EOF
kubectl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

start etcd "$bin/etcd" --data-dir "$dir/etcd" --name inuse-test \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster inuse-test=http://127.0.0.1:2380 --unsafe-no-fsync
wait_for etcd curl -sf http://127.0.0.1:2379/health

start kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
	--bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$ip" \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-cluster-ip-range "$service_cidr" --authorization-mode RBAC --allow-privileged \
	--kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key"
wait_for kube-apiserver kubectl get --raw /readyz

start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
	--authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
	--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
	--cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
	--use-service-account-credentials --leader-elect=false --bind-address 127.0.0.1 \
	--service-cluster-ip-range "$service_cidr"
start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" \
	--authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
	--leader-elect=false --bind-address 127.0.0.1

# containerd 2.4 with CRI and NRI, its own state, CNI from Debian.
ctrd=$dir/containerd
cat >"$dir/cni/10-inuse.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "inuse-test", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$dir/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}
]}
EOF
cat >"$ctrd/config.toml" <<EOF
version = 3
root = '$ctrd/root'
state = '$ctrd/state'
[grpc]
  address = '$ctrd/containerd.sock'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'docker.io/inuse-test/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/usr/lib/cni']
  conf_dir = '$dir/cni'
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = '$dir/nri/nri.sock'
  plugin_path = '$ctrd/nri-plugins'
  plugin_config_path = '$ctrd/nri-conf'
EOF
PATH=$bin:$PATH start containerd "$bin/containerd" --config "$ctrd/config.toml"
wait_for containerd "$bin/ctr" -a "$ctrd/containerd.sock" version

# The sandbox image, built here.
pause=$dir/pause
mkdir -p "$pause"
(cd "$repo" && CGO_ENABLED=0 go build -o "$pause/pause" ./tests/testdata/pause)
(cd "$repo" && go run ./tests/k8s/ociimage -root "$pause" -ref docker.io/inuse-test/pause:1 -o "$dir/pause.tar" -- /pause)
"$bin/ctr" -a "$ctrd/containerd.sock" -n k8s.io images import "$dir/pause.tar" >/dev/null

cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$ctrd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
podCIDR: $pod_cidr
resolvConf: /etc/resolv.conf
enforceNodeAllocatable: []
cgroupsPerQOS: true
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
start kubelet "$bin/kubelet" --config "$dir/kubelet/config.yaml" --kubeconfig "$dir/kubeconfig" \
	--root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki" --hostname-override "$node" \
	--node-ip "$ip"
wait_for "node $node" kubectl wait --for=condition=Ready "node/$node" --timeout=1s
echo "cluster up: KUBECONFIG=$dir/kubeconfig" >&2
