package main

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/store"
)

// storeFlags configure where and how profiles are written.
var storeFlags = slices.Concat([]cli.Flag{
	cliapp.RedisFlag,
	&cli.StringFlag{Name: "node-name", EnvVars: []string{"INUSE_NODE_NAME"}, Usage: "name of this node in the profiles (default: the host name)"},
	&cli.DurationFlag{Name: "flush-interval", Value: time.Second, EnvVars: []string{"INUSE_FLUSH_INTERVAL"}, Usage: "how often profile updates are written"},
	&cli.IntFlag{Name: "max-pending", Value: 1_000_000, EnvVars: []string{"INUSE_MAX_PENDING"}, Usage: "profile members kept in memory while Redis is away; more are counted as lost"},
	&cli.Float64Flag{Name: "max-cpu", EnvVars: []string{"INUSE_MAX_CPU"}, Usage: "pause profiling while the agent uses more than this share of a core (0: no limit)"},
	&cli.Uint64Flag{Name: "max-rss-bytes", EnvVars: []string{"INUSE_MAX_RSS_BYTES"}, Usage: "pause profiling while the agent's resident memory is above this (0: no limit)"},
	&cli.DurationFlag{Name: "guard-cool-down", Value: 30 * time.Second, EnvVars: []string{"INUSE_GUARD_COOL_DOWN"}, Usage: "least time a resource-guard pause lasts"},
}, cliapp.LearningFlags)

// openCollector connects to the store of --redis and returns a collector
// writing to it, or nil when no store is configured. wrap, when given,
// wraps the store (run times its flushes for /metrics).
func openCollector(c *cli.Context, wrap ...func(collector.Writer) collector.Writer) (*collector.Collector, *store.Store, error) {
	if c.String(cliapp.RedisFlag.Name) == "" {
		return nil, nil, nil
	}
	st, err := cliapp.OpenStore(c)
	if err != nil {
		return nil, nil, err
	}
	node := c.String("node-name")
	if node == "" {
		if node, err = os.Hostname(); err != nil {
			st.Close()
			return nil, nil, fmt.Errorf("naming this node: %w", err)
		}
	}
	var w collector.Writer = st
	for _, f := range wrap {
		w = f(w)
	}
	col := collector.New(cliapp.Logger(c), w, collector.Config{
		Node:          node,
		FlushInterval: c.Duration("flush-interval"),
		MaxPending:    c.Int("max-pending"),
		Learning:      cliapp.Learning(c),
		Guard:         collector.GuardConfig{MaxCPU: c.Float64("max-cpu"), MaxRSSBytes: c.Uint64("max-rss-bytes"), CoolDown: c.Duration("guard-cool-down")},
	})
	return col, st, nil
}

// rootfsDigest is the stable image id of a root directory profiled
// without a digest; `inuse scan --rootfs` derives the same.
func rootfsDigest(root string) (string, error) { return lifecycle.RootfsDigest(root) }
