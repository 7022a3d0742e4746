// Command inuse is the CLI and server of inuse: it scans images, joins
// their runtime profiles with their vulnerabilities, and serves the verdicts.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

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
			fmt.Fprintln(os.Stderr, "inuse:", msg)
		}
		os.Exit(exit.ExitCode())
	case err != nil:
		fmt.Fprintln(os.Stderr, "inuse:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "inuse",
		Usage:   "which vulnerable packages of a container image are actually in use",
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
		// Each command lives in its own file and adds itself here.
		Commands: []*cli.Command{},
	}
}

// logger returns the logger built in Before.
func logger(c *cli.Context) *slog.Logger {
	return c.App.Metadata["log"].(*slog.Logger)
}
