// Package cliapp holds what both binaries share on the command line: the
// global flags, the logger they build, and how errors become exit codes.
package cliapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/logging"
	"github.com/inuse-dev/inuse/internal/termsafe"
	"github.com/inuse-dev/inuse/internal/version"
)

// New returns an app with the global logging flags.
func New(name, usage string, commands []*cli.Command) *cli.App {
	return &cli.App{
		Name:    name,
		Usage:   usage,
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
			// go-redis logs connection failures itself; the commands
			// report them, once, through log.
			redis.SetLogger(quietRedis{})
			return nil
		},
		Commands: commands,
		// Main picks the exit code; urfave's default handler would os.Exit
		// from inside RunContext.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// Logger returns the logger built before the command ran.
func Logger(c *cli.Context) *slog.Logger {
	return c.App.Metadata["log"].(*slog.Logger)
}

// Main runs the app with args until SIGINT or SIGTERM and exits with its status.
func Main(app *cli.App, args []string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.RunContext(ctx, args)
	stop()
	var exit cli.ExitCoder
	switch {
	case errors.As(err, &exit):
		if msg := exit.Error(); msg != "" {
			fmt.Fprintf(os.Stderr, "%s: %s\n", app.Name, termsafe.Text(msg))
		}
		os.Exit(exit.ExitCode())
	case err != nil:
		// errors name container-made paths: never their escapes raw
		fmt.Fprintf(os.Stderr, "%s: %s\n", app.Name, termsafe.Text(err.Error()))
		os.Exit(1)
	}
}
