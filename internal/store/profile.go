package store

import (
	"strconv"
	"strings"
	"time"
)

// State is how far learning an image's behaviour has come.
type State string

// Learning states.
const (
	// Learning: observed for too short a time, or still finding new things.
	Learning State = "learning"
	// Done: observed long enough and stable: what was not seen is not used.
	Done State = "done"
	// Incomplete: long enough and stable, but events were lost, or the
	// profile reached its ceiling (Meta.Truncated), so it cannot say that
	// something was not used.
	Incomplete State = "incomplete"
)

// Confidence in a profile.
type Confidence string

// Confidence levels.
const (
	Low    Confidence = "low"
	Medium Confidence = "medium"
	High   Confidence = "high"
)

// LearningConfig sets when a profile is done.
type LearningConfig struct {
	// MinObserved is the least time between first and last sight.
	MinObserved time.Duration
	// StableWindow is how long nothing new must have appeared.
	StableWindow time.Duration
}

// DefaultLearning are the windows of a production node.
var DefaultLearning = LearningConfig{MinObserved: 15 * time.Minute, StableWindow: 10 * time.Minute}

// Meta is the meta hash of a profile.
type Meta struct {
	FirstSeen         time.Time `json:"first_seen"`
	LastSeen          time.Time `json:"last_seen"`
	LastNew           time.Time `json:"last_new"`
	Events            int64     `json:"events"`
	Losses            int64     `json:"losses"`
	PartialContainers int64     `json:"partial_containers"`
	GuardPauses       int64     `json:"guard_pauses"`
	Revision          int64     `json:"revision"`
	Containers        int64     `json:"containers"`
	Nodes             int64     `json:"nodes"`
	// Bytes estimates the Redis memory of the profile's members.
	Bytes int64 `json:"bytes"`
	// Truncated says the profile reached its ceiling (Limits.MaxBytes):
	// Dropped new members were counted, not stored.
	Truncated bool  `json:"truncated"`
	Dropped   int64 `json:"dropped"`
}

// State of the profile at now. It is derived from times and counters
// whenever it is read, so it moves on even when no agent writes.
func (m Meta) State(now time.Time, lc LearningConfig) State {
	if m.FirstSeen.IsZero() || now.Sub(m.FirstSeen) < lc.MinObserved {
		return Learning
	}
	last := m.LastNew
	if last.IsZero() {
		last = m.FirstSeen
	}
	if now.Sub(last) < lc.StableWindow {
		return Learning
	}
	if m.Losses > 0 || m.Truncated {
		return Incomplete
	}
	return Done
}

// Confidence grows with observed time, containers and nodes, and falls
// with losses, partial containers and resource-guard pauses.
func (m Meta) Confidence(now time.Time, lc LearningConfig) Confidence {
	score := 0
	observed := m.LastSeen.Sub(m.FirstSeen)
	if observed >= lc.MinObserved {
		score++
	}
	if observed >= 4*lc.MinObserved {
		score++
	}
	if m.Containers >= 3 {
		score++
	}
	if m.Nodes >= 2 {
		score++
	}
	if m.State(now, lc) == Done {
		score++
	}
	if m.Losses > 0 || m.Truncated {
		score -= 2
	}
	if m.PartialContainers > 0 {
		score--
	}
	if m.GuardPauses > 0 {
		score--
	}
	switch {
	case score >= 4:
		return High
	case score >= 2:
		return Medium
	}
	return Low
}

// parseMeta reads the meta hash; cards are the sizes of containers and nodes.
func parseMeta(h map[string]string, containers, nodes int64) Meta {
	ms := func(f string) time.Time {
		v, err := strconv.ParseInt(h[f], 10, 64)
		if err != nil || v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v)
	}
	n := func(f string) int64 {
		v, _ := strconv.ParseInt(h[f], 10, 64)
		return v
	}
	return Meta{
		FirstSeen: ms(FieldFirstSeen), LastSeen: ms(FieldLastSeen), LastNew: ms(FieldLastNew),
		Events: n(FieldEvents), Losses: n(FieldLosses), PartialContainers: n(FieldPartialContainers),
		GuardPauses: n(FieldGuardPauses), Revision: n(FieldRevision), Containers: containers, Nodes: nodes,
		Bytes: n(FieldBytes), Truncated: n(FieldTruncated) != 0, Dropped: n(FieldDropped),
	}
}

// Entry is one member of a section.
type Entry struct {
	Value     string    `json:"value"`
	FirstSeen time.Time `json:"first_seen"`
}

// Profile is everything stored for one image.
type Profile struct {
	Digest     string              `json:"digest"`
	Names      []string            `json:"names"`
	Meta       Meta                `json:"meta"`
	State      State               `json:"learning_state"`
	Confidence Confidence          `json:"confidence"`
	Containers []string            `json:"containers"`
	NodeNames  []string            `json:"nodes"`
	Workloads  []Workload          `json:"workloads"`
	Sections   map[Section][]Entry `json:"sections"`
	// Folded are the patterns that bounded sections count members under
	// past their cap.
	Folded []FoldedPattern `json:"folded"`
}

// ProfileStats is one line of the image index: what a profile is (its
// names, state and confidence) and how much it holds, without its members.
type ProfileStats struct {
	Digest     string     `json:"digest"`
	Names      []string   `json:"names"`
	LastSeen   time.Time  `json:"last_seen"`
	State      State      `json:"learning_state"`
	Confidence Confidence `json:"confidence"`
	Revision   int64      `json:"revision"`
	Files      int64      `json:"files"`
}

// Workload is one place an image runs: a container of a workload (a
// Kubernetes controller, a Compose service) in a namespace. Any part may be
// empty: a plain Docker container has only its name.
type Workload struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"workload_kind"`
	Name      string `json:"workload_name"`
	Container string `json:"container"`
}

// workloadSep cannot occur in a namespace, a workload name or a container
// name (DNS labels and Docker names), so a member splits back unambiguously.
const workloadSep = "|"

// Member encodes w as a member of the Workloads set.
func (w Workload) Member() string {
	return strings.Join([]string{w.Namespace, w.Kind, w.Name, w.Container}, workloadSep)
}

// ParseWorkload decodes a member of the Workloads set.
func ParseWorkload(member string) Workload {
	parts := strings.SplitN(member, workloadSep, 4)
	parts = append(parts, make([]string, 4-len(parts))...)
	return Workload{Namespace: parts[0], Kind: parts[1], Name: parts[2], Container: parts[3]}
}
