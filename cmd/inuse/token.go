package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/store"
)

var expiresFlag = &cli.StringFlag{Name: "expires", Value: "3mo", Usage: "lifetime: " + strings.Join(store.Expiries, ", ")}

// withTokens opens the store and runs f over its tokens.
func withTokens(c *cli.Context, f func(*store.Tokens) error) error {
	st, err := cliapp.OpenStore(c)
	if err != nil {
		return err
	}
	defer st.Close()
	return f(store.NewTokens(st))
}

var tokenCommand = &cli.Command{
	Name:  "token",
	Usage: "manage the integration tokens that third-party tools use to read the API",
	Subcommands: []*cli.Command{
		{
			Name:  "create",
			Usage: "create a token and print its secret (shown only this once)",
			Flags: []cli.Flag{cliapp.RedisFlag, &cli.StringFlag{Name: "name", Required: true, Usage: "what the token is for"}, expiresFlag},
			Action: func(c *cli.Context) error {
				if _, err := store.ExpiryAfter(time.Now(), c.String("expires")); err != nil {
					return cli.Exit(fmt.Sprintf("--expires: %v", err), 2)
				}
				if !store.ValidTokenName(c.String("name")) {
					return cli.Exit(fmt.Sprintf("--name must be 1 to %d printable characters", store.MaxTokenName), 2)
				}
				return withTokens(c, func(t *store.Tokens) error {
					tok, secret, err := t.Create(c.Context, c.String("name"), c.String("expires"))
					if err != nil {
						return err
					}
					w := c.App.Writer
					fmt.Fprintf(w, "id       %s\nname     %s\nexpires  %s\n\n", tok.ID, tok.Name, tok.Expires.Format(time.DateOnly))
					fmt.Fprintf(w, "%s\n\n", secret)
					fmt.Fprintln(w, "Store the secret now: it is not kept and cannot be shown again.")
					return nil
				})
			},
		},
		{
			Name:  "list",
			Usage: "list the tokens: id, name, created, expires, last used (never the secrets)",
			Flags: []cli.Flag{cliapp.RedisFlag, formatFlag},
			Action: func(c *cli.Context) error {
				return withTokens(c, func(t *store.Tokens) error {
					toks, err := t.List(c.Context)
					if err != nil {
						return err
					}
					return render(c, toks, func(w io.Writer) {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "ID\tNAME\tCREATED\tEXPIRES\tLAST USED")
						now := time.Now()
						for _, tok := range toks {
							expires := tok.Expires.Format(time.DateOnly)
							if !now.Before(tok.Expires) {
								expires += " (expired)"
							}
							used := "never"
							if !tok.LastUsed.IsZero() {
								used = tok.LastUsed.Format(time.RFC3339)
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", tok.ID, tok.Name, tok.Created.Format(time.DateOnly), expires, used)
						}
						tw.Flush()
					})
				})
			},
		},
		{
			Name:      "renew",
			Usage:     "set a token's expiry again, from now",
			ArgsUsage: "ID",
			Flags:     []cli.Flag{cliapp.RedisFlag, expiresFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("token renew needs one ID", 2)
				}
				if _, err := store.ExpiryAfter(time.Now(), c.String("expires")); err != nil {
					return cli.Exit(fmt.Sprintf("--expires: %v", err), 2)
				}
				return withTokens(c, func(t *store.Tokens) error {
					tok, err := t.Renew(c.Context, c.Args().First(), c.String("expires"))
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "token %s (%s) now expires %s\n", tok.ID, tok.Name, tok.Expires.Format(time.DateOnly))
					return nil
				})
			},
		},
		{
			Name:      "delete",
			Usage:     "revoke a token at once",
			ArgsUsage: "ID",
			Flags:     []cli.Flag{cliapp.RedisFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("token delete needs one ID", 2)
				}
				return withTokens(c, func(t *store.Tokens) error {
					if err := t.Delete(c.Context, c.Args().First()); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "token %s deleted\n", c.Args().First())
					return nil
				})
			},
		},
	},
}
