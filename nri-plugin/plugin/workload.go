package plugin

import (
	"cmp"
	"strings"

	"github.com/containerd/nri/pkg/api"

	"github.com/inuse-dev/inuse/internal/lifecycle"
)

// workload names the Kubernetes workload that owns a pod, as its owner
// would name itself, from what NRI hands the plugin: the pod's name and
// the labels its controller and the kubelet put on it (NRI carries no
// owner references). The rules, first match wins:
//
//	label (value)                                   kind         name
//	statefulset.kubernetes.io/pod-name              StatefulSet  pod name less "-<ordinal>"
//	controller-revision-hash + pod-template-generation
//	                                                DaemonSet    pod name less "-<random>"
//	pod-template-hash (H)                           Deployment   pod name less "-H-<random>"
//	batch.kubernetes.io/job-name or job-name (J),
//	  J = "<name>-<scheduled minute>"               CronJob      J less "-<scheduled minute>"
//	  otherwise                                     Job          J
//	a name "<name>-<random>" and no label above     ReplicaSet   pod name less "-<random>"
//	anything else                                   Pod          pod name
//
// <random> is the five characters the API server appends to a generated
// name (consonants and digits, never a vowel, so a word is not mistaken
// for it); a CronJob names its Jobs after the scheduled time in minutes
// since the epoch (eight digits and more).
func workload(pod *api.PodSandbox) lifecycle.Workload {
	labels, name := pod.GetLabels(), pod.GetName()
	switch {
	case labels["statefulset.kubernetes.io/pod-name"] != "":
		return lifecycle.Workload{Kind: "StatefulSet", Name: trimSuffix(name, isDigits)}
	case labels["controller-revision-hash"] != "" && labels["pod-template-generation"] != "":
		return lifecycle.Workload{Kind: "DaemonSet", Name: trimSuffix(name, isGenerated)}
	case labels["pod-template-hash"] != "":
		hash := labels["pod-template-hash"]
		if i := strings.LastIndex(name, "-"+hash+"-"); i > 0 {
			return lifecycle.Workload{Kind: "Deployment", Name: name[:i]}
		}
		return lifecycle.Workload{Kind: "Deployment", Name: trimSuffix(trimSuffix(name, isGenerated), isHash)}
	}
	if job := cmp.Or(labels["batch.kubernetes.io/job-name"], labels["job-name"]); job != "" {
		if cron := trimSuffix(job, isScheduledMinute); cron != job {
			return lifecycle.Workload{Kind: "CronJob", Name: cron}
		}
		return lifecycle.Workload{Kind: "Job", Name: job}
	}
	if rs := trimSuffix(name, isGenerated); rs != name {
		return lifecycle.Workload{Kind: "ReplicaSet", Name: rs}
	}
	return lifecycle.Workload{Kind: "Pod", Name: name}
}

// trimSuffix drops the last "-suffix" of name when is says the suffix is
// of the kind looked for; otherwise it returns name.
func trimSuffix(name string, is func(string) bool) string {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 || !is(name[i+1:]) {
		return name
	}
	return name[:i]
}

// generatedAlphabet is what the API server draws generated name suffixes
// from (k8s.io/apimachinery's rand.String).
const generatedAlphabet = "bcdfghjklmnpqrstvwxz2456789"

func isGenerated(s string) bool {
	return len(s) == 5 && strings.Trim(s, generatedAlphabet) == ""
}

// isHash is a pod-template-hash: up to ten of the same characters.
func isHash(s string) bool {
	return len(s) > 0 && len(s) <= 10 && strings.Trim(s, generatedAlphabet) == ""
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

func isScheduledMinute(s string) bool { return len(s) >= 8 && isDigits(s) }
