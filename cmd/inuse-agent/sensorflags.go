package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cgroups"
)

// sensorFlags configure the sensor in every command that loads it.
var sensorFlags = []cli.Flag{
	&cli.StringFlag{
		Name: "cgroup-v1-controller", EnvVars: []string{"INUSE_CGROUP_V1_CONTROLLER"},
		Usage: "key containers by their cgroup in this v1 controller hierarchy (hosts without cgroup2); default: cgroup2 when mounted",
	},
	&cli.UintFlag{Name: "ring-buffer-bytes", EnvVars: []string{"INUSE_RING_BUFFER_BYTES"}, Usage: "size of the event ring buffer (power of two; default 8 MiB)"},
}

// openSensor picks the cgroup hierarchy and loads the sensor for it; tune
// adjusts the configuration of one command.
func openSensor(c *cli.Context, log *slog.Logger, tune ...func(*sensor.Config)) (*sensor.Sensor, cgroups.Hierarchy, error) {
	if err := prepareKernel(log); err != nil {
		return nil, cgroups.Hierarchy{}, err
	}
	var (
		h   cgroups.Hierarchy
		err error
	)
	if ctl := c.String("cgroup-v1-controller"); ctl != "" {
		h, err = cgroups.V1Controller(ctl)
	} else {
		h, err = cgroups.Detect()
	}
	if err != nil {
		return nil, h, err
	}
	log.Debug("keying cgroups", "hierarchy", h.String())
	cfg := sensor.Config{CgroupV1Controller: h.Controller, RingBufferBytes: uint32(c.Uint("ring-buffer-bytes"))}
	for _, t := range tune {
		t(&cfg)
	}
	s, err := sensor.Open(log, cfg)
	return s, h, err
}

// outputFlag names where events are written.
var outputFlag = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", EnvVars: []string{"INUSE_OUTPUT"}, Usage: "write events as JSON lines to this file (- for stdout)"}

func openOutput(c *cli.Context) (io.WriteCloser, error) {
	name := c.String("output")
	if name == "-" {
		return nopCloser{os.Stdout}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("opening output: %w", err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// jsonLines writes one event per line; write errors are counted into err.
type jsonLines struct {
	enc *json.Encoder
	err error
}

func (j *jsonLines) emit(e sensor.Event) {
	if err := j.enc.Encode(e); err != nil && j.err == nil {
		j.err = fmt.Errorf("writing event: %w", err)
	}
}
