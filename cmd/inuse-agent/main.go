// Command inuse-agent is the node agent of inuse: it loads the kernel
// sensor, follows the container runtimes and folds what containers load
// into runtime profiles.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cilium/ebpf/rlimit"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/logging"
	"github.com/inuse-dev/inuse/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	var exit cli.ExitCoder
	switch {
	case errors.As(err, &exit):
		if msg := exit.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "inuse-agent:", msg)
		}
		os.Exit(exit.ExitCode())
	case err != nil:
		fmt.Fprintln(os.Stderr, "inuse-agent:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "inuse-agent",
		Usage:   "observe what containers load, with eBPF",
		Version: version.Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"INUSE_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", EnvVars: []string{"INUSE_LOG_FORMAT"}, Usage: "text or json (default: text on a terminal, else json)"},
		},
		Before: func(c *cli.Context) error {
			log, err := logging.New(os.Stderr, c.String("log-level"), c.String("log-format"))
			if err != nil {
				return err
			}
			c.App.Metadata = map[string]any{"log": log}
			return nil
		},
		Commands: []*cli.Command{traceCommand, execCommand},
	}
}

// logger returns the logger built in Before.
func logger(c *cli.Context) *slog.Logger {
	return c.App.Metadata["log"].(*slog.Logger)
}

// prepareKernel does what every sensor user does once per process.
func prepareKernel(log *slog.Logger) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lifting the memlock limit: %w", err)
	}
	mounted, err := sensor.MountKernelFS()
	for _, dir := range mounted {
		log.Info("mounted missing kernel file system", "dir", dir)
	}
	if err != nil {
		// Our programs attach without tracefs or bpffs; say so and go on.
		log.Warn("kernel file systems missing", "error", err)
	}
	return nil
}
