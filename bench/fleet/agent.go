package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/store"
)

// flushEvery is how many events an agent folds between two flushes: about
// what a busy node sees in the collector's one-second flush interval.
const flushEvery = 100_000

// batch is one flush of the collector: what it asked the store to apply.
type batch struct {
	deltas map[string]*store.Delta
	now    time.Time
}

// recorder is the collector's store while it folds: it keeps every flush,
// so that the very same flushes (same members, same first-seen times) are
// then written to the cluster and to the single server.
type recorder struct{ batches []batch }

func (r *recorder) Apply(_ context.Context, deltas map[string]*store.Delta, now time.Time, _ store.LearningConfig) (map[string]store.Meta, error) {
	r.batches = append(r.batches, batch{deltas, now})
	return nil, nil
}

// runAgent is one node's agent, in its own process. It folds the events of
// the node's containers through the real collector, says "folded EVENTS
// OVERFLOW MEMBERS", then for each line "cluster" or "single" on stdin
// writes the flushes through the real store to that Redis and says
// "applied".
func runAgent(f fleet, node int, clusterURL, singleURL string) error {
	ctx := context.Background()
	targets := map[string]*store.Store{}
	for name, url := range map[string]string{"cluster": clusterURL, "single": singleURL} {
		st, err := store.Open(url)
		if err != nil {
			return err
		}
		defer st.Close()
		// Connect (and read the cluster's slots) before anything is timed.
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("connecting to the %s redis: %w", name, err)
		}
		targets[name] = st
	}

	rec := &recorder{}
	c := collector.New(slog.New(slog.DiscardHandler), rec, collector.Config{Node: nodeName(node)})
	images := map[int]image{}
	since := 0
	for k, p := range f.placements() {
		if p.node != node {
			continue
		}
		img, ok := images[p.image]
		if !ok {
			img = f.image(p.image)
			images[p.image] = img
		}
		ctr := f.container(k, p, img)
		c.ContainerStarted(ctr)
		f.events(k, img, func(ev sensor.Event) {
			c.Observe(ctr, ev)
			if since++; since == flushEvery {
				_ = c.Flush(ctx)
				since = 0
			}
		})
	}
	if err := c.Flush(ctx); err != nil {
		return err
	}
	members := 0
	for _, b := range rec.batches {
		for _, d := range b.deltas {
			members += d.Size()
		}
	}
	st := c.Stats()
	fmt.Printf("folded %d %d %d\n", st.Events, st.Overflow, members)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		target := targets[in.Text()]
		if target == nil {
			return fmt.Errorf("unknown target %q", in.Text())
		}
		for _, b := range rec.batches {
			if _, err := target.Apply(ctx, b.deltas, b.now, store.DefaultLearning); err != nil {
				return fmt.Errorf("writing to the %s redis: %w", in.Text(), err)
			}
		}
		fmt.Println("applied")
	}
	return in.Err()
}
