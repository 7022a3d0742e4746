package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/scanner"
)

var dbTimeoutFlag = &cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, EnvVars: []string{"INUSE_DB_TIMEOUT"}, Usage: "give up a download after this long"}

var dbCommand = &cli.Command{
	Name:  "db",
	Usage: "the grype v6 vulnerability database",
	Subcommands: []*cli.Command{
		{
			Name:  "status",
			Usage: "show the installed database",
			Flags: slices.Concat(scannerFlags, []cli.Flag{&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}}),
			Action: func(c *cli.Context) error {
				db, err := openDB(c, 0)
				if err != nil {
					return err
				}
				st, err := db.Status()
				if err != nil {
					return err
				}
				w := c.App.Writer
				if c.String("format") == "json" {
					enc := json.NewEncoder(w)
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				fmt.Fprintf(w, "path:    %s\n", st.Path)
				if st.SchemaVersion != "" {
					fmt.Fprintf(w, "schema:  %s\nbuilt:   %s\nfrom:    %s\n", st.SchemaVersion, st.Built.Format(time.RFC3339), st.From)
				}
				if !st.Valid {
					fmt.Fprintf(w, "status:  invalid (%s)\n", st.Error)
					return cli.Exit("", 1)
				}
				fmt.Fprintln(w, "status:  valid")
				goSymbols := "no: Go vulnerabilities stay at package level"
				if st.GoSymbols {
					goSymbols = "yes: Go vulnerabilities can be told at function level"
				}
				fmt.Fprintf(w, "go symbols: %s\n", goSymbols)
				return nil
			},
		},
		{
			Name:  "update",
			Usage: "download the newest database from grype's listing",
			Flags: slices.Concat(scannerFlags, []cli.Flag{
				dbTimeoutFlag,
				&cli.StringFlag{Name: "url", EnvVars: []string{"INUSE_DB_UPDATE_URL"}, Usage: "listing to update from (default: grype's)"},
			}),
			Action: func(c *cli.Context) error {
				db, err := openDB(c, c.Duration("timeout"))
				if err != nil {
					return err
				}
				updated, err := db.Update(c.Context, c.App.ErrWriter)
				if err != nil {
					return err
				}
				if updated {
					fmt.Fprintln(c.App.Writer, "vulnerability database updated")
				} else {
					fmt.Fprintln(c.App.Writer, "vulnerability database already up to date")
				}
				return nil
			},
		},
		{
			Name:      "import",
			Usage:     "install a database from a file (vulnerability.db or a grype archive) or a URL",
			ArgsUsage: "FILE|URL",
			Flags:     slices.Concat(scannerFlags, []cli.Flag{dbTimeoutFlag}),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("db import needs one FILE or URL", 2)
				}
				db, err := openDB(c, c.Duration("timeout"))
				if err != nil {
					return err
				}
				if err := db.Import(c.Context, c.Args().First(), c.App.ErrWriter); err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, "vulnerability database imported")
				return nil
			},
		},
	},
}

func openDB(c *cli.Context, timeout time.Duration) (*scanner.DB, error) {
	cfg, err := scannerConfig(c)
	if err != nil {
		return nil, err
	}
	cfg.DB.UpdateTimeout = timeout
	if c.IsSet("url") {
		cfg.DB.UpdateURL = c.String("url")
	}
	return scanner.OpenDB(cfg.DB, cfg.Log), nil
}
