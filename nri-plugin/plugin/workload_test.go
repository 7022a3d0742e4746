package plugin

import (
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// Label sets as the controllers and the kubelet put them on pods.
func TestWorkload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pod    string
		labels map[string]string
		want   lifecycle.Workload
	}{
		{"deployment", "web-7c9d8f6b5-x2x4z",
			map[string]string{"app": "web", "pod-template-hash": "7c9d8f6b5"},
			lifecycle.Workload{Kind: "Deployment", Name: "web"}},
		{"deployment with dashes in its name", "shop-api-v2-5f4d8b7c96-q8n2k",
			map[string]string{"app.kubernetes.io/name": "shop-api", "pod-template-hash": "5f4d8b7c96"},
			lifecycle.Workload{Kind: "Deployment", Name: "shop-api-v2"}},
		{"statefulset", "db-12",
			map[string]string{"app": "db", "controller-revision-hash": "db-6b8d9c7f5", "statefulset.kubernetes.io/pod-name": "db-12", "apps.kubernetes.io/pod-index": "12"},
			lifecycle.Workload{Kind: "StatefulSet", Name: "db"}},
		{"daemonset", "node-exporter-x7k2p",
			map[string]string{"name": "node-exporter", "controller-revision-hash": "5d4b8c9f7", "pod-template-generation": "3"},
			lifecycle.Workload{Kind: "DaemonSet", Name: "node-exporter"}},
		{"job", "migrate-schema-r5tzq",
			map[string]string{"batch.kubernetes.io/controller-uid": "0b6f", "batch.kubernetes.io/job-name": "migrate-schema", "controller-uid": "0b6f", "job-name": "migrate-schema"},
			lifecycle.Workload{Kind: "Job", Name: "migrate-schema"}},
		{"job of a cronjob", "nightly-backup-29412360-hx8vd",
			map[string]string{"batch.kubernetes.io/controller-uid": "77aa", "batch.kubernetes.io/job-name": "nightly-backup-29412360", "controller-uid": "77aa", "job-name": "nightly-backup-29412360"},
			lifecycle.Workload{Kind: "CronJob", Name: "nightly-backup"}},
		{"job before batch.kubernetes.io labels", "report-4kq7w",
			map[string]string{"controller-uid": "1c2d", "job-name": "report"},
			lifecycle.Workload{Kind: "Job", Name: "report"}},
		{"bare replicaset", "cache-9fzm2",
			map[string]string{"app": "cache"},
			lifecycle.Workload{Kind: "ReplicaSet", Name: "cache"}},
		{"bare pod", "debug-shell",
			map[string]string{"run": "debug-shell"},
			lifecycle.Workload{Kind: "Pod", Name: "debug-shell"}},
		{"bare pod without labels", "nginx",
			nil,
			lifecycle.Workload{Kind: "Pod", Name: "nginx"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, workload(&api.PodSandbox{Name: tc.pod, Namespace: "prod", Labels: tc.labels}))
		})
	}
}
