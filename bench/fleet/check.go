package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
)

// diff returns the first difference between two merged profiles of one
// image, or "". It compares what merging must make equal whatever the
// order of the writes: sections (members and earliest first-seen times),
// sets, counters, first and last seen. Revision and last_new count the
// writes that added something, which depends on the order in which agents
// reached each server, so they are left out.
func diff(c, s *store.Profile) string {
	for _, set := range []struct {
		name string
		c, s []string
	}{
		{"names", c.Names, s.Names}, {"containers", c.Containers, s.Containers}, {"nodes", c.NodeNames, s.NodeNames},
		{"workloads", workloads(c), workloads(s)},
	} {
		if d := firstDiff(set.c, set.s); d != "" {
			return set.name + ": " + d
		}
	}
	for _, sec := range store.Sections {
		ce, se := c.Sections[sec], s.Sections[sec]
		for i := range max(len(ce), len(se)) {
			if i >= len(ce) || i >= len(se) || ce[i].Value != se[i].Value || !ce[i].FirstSeen.Equal(se[i].FirstSeen) {
				return fmt.Sprintf("%s: %d members in the cluster, %d in the single server; first difference at %d: %v / %v",
					sec, len(ce), len(se), i, at(ce, i), at(se, i))
			}
		}
	}
	cm, sm := c.Meta, s.Meta
	for _, f := range []struct {
		name string
		c, s int64
	}{
		{"events", cm.Events, sm.Events}, {"losses", cm.Losses, sm.Losses},
		{"partial_containers", cm.PartialContainers, sm.PartialContainers}, {"guard_pauses", cm.GuardPauses, sm.GuardPauses},
		{"first_seen", cm.FirstSeen.UnixMilli(), sm.FirstSeen.UnixMilli()}, {"last_seen", cm.LastSeen.UnixMilli(), sm.LastSeen.UnixMilli()},
	} {
		if f.c != f.s {
			return fmt.Sprintf("%s: %d in the cluster, %d in the single server", f.name, f.c, f.s)
		}
	}
	return ""
}

func workloads(p *store.Profile) []string {
	var out []string
	for _, w := range p.Workloads {
		out = append(out, w.Member())
	}
	return out
}

func firstDiff(c, s []string) string {
	for i := range max(len(c), len(s)) {
		if i >= len(c) || i >= len(s) || c[i] != s[i] {
			return fmt.Sprintf("%d in the cluster, %d in the single server; first difference at %d: %q / %q", len(c), len(s), i, at(c, i), at(s, i))
		}
	}
	return ""
}

func at[T any](s []T, i int) any {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// expected is what an image's merged profile must hold, from the fleet
// itself: every container and node it ran on, and the size of the union of
// its containers' files per section.
type expected struct {
	containers, nodes []string
	sections          map[store.Section]int
}

func (f fleet) expected() map[string]expected {
	byImage := make([][]int, f.Images)
	ps := f.placements()
	for k, p := range ps {
		byImage[p.image] = append(byImage[p.image], k)
	}
	out := map[string]expected{}
	for i, ks := range byImage {
		img := f.image(i)
		e := expected{sections: map[store.Section]int{
			store.TCPIn: len(img.tcpIn), store.TCPOut: len(img.tcpOut), store.UDPOut: len(img.udpOut), store.Syscalls: len(img.syscalls),
		}}
		used := make([]bool, len(img.files))
		for _, k := range ks {
			e.containers = append(e.containers, f.container(k, ps[k], img).ID)
			e.nodes = append(e.nodes, nodeName(ps[k].node))
			for _, u := range f.uses(k, img) {
				used[u] = true
			}
		}
		for u, ok := range used {
			if !ok {
				continue
			}
			switch img.files[u].kind {
			case read:
				e.sections[store.FilesRead]++
			case library:
				e.sections[store.FilesRead]++
				e.sections[store.Mapped]++
			case binary:
				e.sections[store.Exec]++
			case written:
				e.sections[store.FilesWritten]++
			}
		}
		slices.Sort(e.containers)
		slices.Sort(e.nodes)
		e.nodes = slices.Compact(e.nodes)
		out[img.digest] = e
	}
	return out
}

// check compares every image's profile in the cluster with the single
// server's and with what the fleet ran; it returns the events the cluster
// profiles count and the first difference.
func check(ctx context.Context, f fleet, cluster, single *store.Store) (int64, error) {
	now := time.Now()
	var events int64
	for digest, want := range f.expected() {
		c, err := cluster.Profile(ctx, digest, now, store.DefaultLearning)
		if err != nil {
			return 0, err
		}
		s, err := single.Profile(ctx, digest, now, store.DefaultLearning)
		if err != nil {
			return 0, err
		}
		if d := diff(c, s); d != "" {
			return 0, fmt.Errorf("image %s differs: %s", digest, d)
		}
		if d := firstDiff(c.Containers, want.containers); d != "" {
			return 0, fmt.Errorf("image %s: containers (cluster / fleet): %s", digest, d)
		}
		if d := firstDiff(c.NodeNames, want.nodes); d != "" {
			return 0, fmt.Errorf("image %s: nodes (cluster / fleet): %s", digest, d)
		}
		for _, sec := range store.Sections {
			if got := len(c.Sections[sec]); got != want.sections[sec] {
				return 0, fmt.Errorf("image %s: %s has %d members, the fleet used %d", digest, sec, got, want.sections[sec])
			}
		}
		if c.Meta.Losses != 0 {
			return 0, fmt.Errorf("image %s: %d events lost", digest, c.Meta.Losses)
		}
		events += c.Meta.Events
	}
	return events, nil
}
