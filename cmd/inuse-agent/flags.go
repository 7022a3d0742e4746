package main

import (
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/agent"
	"github.com/inuse-dev/inuse/collector"
	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/store"
)

// sensorFlags configure the sensor in every command that loads it.
var sensorFlags = []cli.Flag{
	&cli.StringFlag{
		Name: "cgroup-v1-controller", EnvVars: []string{"INUSE_CGROUP_V1_CONTROLLER"},
		Usage: "key containers by their cgroup in this v1 controller hierarchy (hosts without cgroup2); default: cgroup2 when mounted",
	},
	&cli.UintFlag{Name: "ring-buffer-bytes", EnvVars: []string{"INUSE_RING_BUFFER_BYTES"}, Usage: "size of the event ring buffer (power of two; default 8 MiB)"},
	&cli.StringFlag{
		Name: "btf", EnvVars: []string{"INUSE_BTF"},
		Usage: "kernel types for the CO-RE relocations, published apart from the kernel (raw BTF as BTFHub's, or an ELF with .BTF); the kernel must still have BTF of its own",
	},
}

// outputFlag names where events are written.
var outputFlag = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", EnvVars: []string{"INUSE_OUTPUT"}, Usage: "write events as JSON lines to this file (- for stdout; with --redis only when set)"}

// execOutputFlag is outputFlag without a default: the profiled command
// keeps stdout for its own output, so events go to a file of their own
// unless -o - asks to share it.
var execOutputFlag = &cli.StringFlag{Name: outputFlag.Name, Aliases: outputFlag.Aliases, EnvVars: outputFlag.EnvVars, Usage: "write events as JSON lines to this file (- for stdout, shared with the command's output); needed without --redis"}

// storeFlags configure where and how profiles are written.
var storeFlags = slices.Concat([]cli.Flag{
	cliapp.RedisFlag,
	&cli.StringFlag{Name: "node-name", EnvVars: []string{"INUSE_NODE_NAME"}, Usage: "name of this node in the profiles (default: the host name)"},
	&cli.DurationFlag{Name: "flush-interval", Value: time.Second, EnvVars: []string{"INUSE_FLUSH_INTERVAL"}, Usage: "how often profile updates are written"},
	&cli.IntFlag{Name: "max-pending", Value: 1_000_000, EnvVars: []string{"INUSE_MAX_PENDING"}, Usage: "profile members kept in memory while Redis is away; more are counted as lost"},
	&cli.Int64Flag{Name: "max-pending-bytes", Value: collector.DefaultMaxPendingBytes, EnvVars: []string{"INUSE_MAX_PENDING_BYTES"}, Usage: "estimated memory of the profile members kept in memory in all; more are counted as lost in their image's profile"},
	&cli.Int64Flag{Name: "max-image-pending-bytes", Value: collector.DefaultMaxImagePendingBytes, EnvVars: []string{"INUSE_MAX_IMAGE_PENDING_BYTES"}, Usage: "estimated memory of one image's profile members kept in memory; more are counted as lost in its profile"},
	&cli.Float64Flag{Name: "max-cpu", EnvVars: []string{"INUSE_MAX_CPU"}, Usage: "pause profiling while the agent uses more than this share of a core (0: no limit)"},
	&cli.Uint64Flag{Name: "max-rss-bytes", EnvVars: []string{"INUSE_MAX_RSS_BYTES"}, Usage: "pause profiling while the agent's resident memory is above this (0: no limit)"},
	&cli.DurationFlag{Name: "guard-cool-down", Value: 30 * time.Second, EnvVars: []string{"INUSE_GUARD_COOL_DOWN"}, Usage: "least time a resource-guard pause lasts"},
	&cli.Int64Flag{
		Name: "profile-section-cap", Value: store.DefaultLimits.SectionCap, EnvVars: []string{"INUSE_PROFILE_SECTION_CAP"},
		Usage: "most members of each bounded section of an image's profile (runtime files, drift, ports, syscalls); past it, members fold into counted patterns such as /tmp/cache/*",
	},
	&cli.Int64Flag{
		Name: "profile-max-bytes", Value: store.DefaultLimits.MaxBytes, EnvVars: []string{"INUSE_PROFILE_MAX_BYTES"},
		Usage: "ceiling of an image's profile in Redis memory (estimated); past it, new members are counted, not stored, and the profile is truncated",
	},
	&cli.IntFlag{
		Name: "max-probes-per-binary", Value: agent.DefaultProbesPerBinary, EnvVars: []string{"INUSE_MAX_PROBES_PER_BINARY"},
		Usage: "most function probe points (uprobes) in one planned Go binary; a binary over it is not probed at all",
	},
	&cli.IntFlag{
		Name: "max-probes-per-image", Value: agent.DefaultProbesPerImage, EnvVars: []string{"INUSE_MAX_PROBES_PER_IMAGE"},
		Usage: "most function probe points (uprobes) over the planned binaries of one image; a binary past it is not probed",
	},
}, cliapp.LearningFlags)

// agentConfig reads the flags that every command loading the sensor
// shares: sensorFlags, and storeFlags and outputFlag where the command has
// them. JSON lines go to --output without --redis, and with it only when
// --output is set.
func agentConfig(c *cli.Context) agent.Config {
	cfg := agent.Config{
		CgroupV1Controller: c.String("cgroup-v1-controller"),
		RingBufferBytes:    uint32(c.Uint("ring-buffer-bytes")),
		BTF:                c.String("btf"),
		Redis:              c.String(cliapp.RedisFlag.Name),
		Output:             c.String("output"),
		Limits:             store.Limits{SectionCap: c.Int64("profile-section-cap"), MaxBytes: c.Int64("profile-max-bytes")},
		Probes:             agent.ProbeLimits{PerBinary: c.Int("max-probes-per-binary"), PerImage: c.Int("max-probes-per-image")},
		Collector: collector.Config{
			Node:                 c.String("node-name"),
			FlushInterval:        c.Duration("flush-interval"),
			MaxPending:           c.Int("max-pending"),
			MaxPendingBytes:      c.Int64("max-pending-bytes"),
			MaxImagePendingBytes: c.Int64("max-image-pending-bytes"),
			Learning:             cliapp.Learning(c),
			Guard:                collector.GuardConfig{MaxCPU: c.Float64("max-cpu"), MaxRSSBytes: c.Uint64("max-rss-bytes"), CoolDown: c.Duration("guard-cool-down")},
		},
	}
	if cfg.Redis != "" && !c.IsSet("output") {
		cfg.Output = ""
	}
	return cfg
}
