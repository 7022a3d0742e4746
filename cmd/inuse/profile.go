package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
	"github.com/inuse-dev/inuse/internal/store"
	"github.com/inuse-dev/inuse/internal/termsafe"
)

var formatFlag = &cli.StringFlag{Name: "format", Value: "table", EnvVars: []string{"INUSE_FORMAT"}, Usage: "table or json"}

var profileCommand = &cli.Command{
	Name:  "profile",
	Usage: "read the runtime profiles in the store",
	Subcommands: []*cli.Command{
		{
			Name:  "list",
			Usage: "list the profiled images, most recently seen first",
			Flags: slices.Concat([]cli.Flag{cliapp.RedisFlag, formatFlag}, cliapp.LearningFlags),
			Action: func(c *cli.Context) error {
				st, err := cliapp.OpenStore(c)
				if err != nil {
					return err
				}
				defer st.Close()
				images, err := st.Images(c.Context, time.Now(), cliapp.Learning(c))
				if err != nil {
					return err
				}
				return render(c, images, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "IMAGE\tDIGEST\tSTATE\tCONFIDENCE\tFILES\tREVISION\tLAST SEEN")
					for _, im := range images {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", strings.Join(termsafe.Strings(im.Names), ","), termsafe.String(short(im.Digest)),
							termsafe.String(string(im.State)), termsafe.String(string(im.Confidence)), im.Files, im.Revision, im.LastSeen.Format(time.RFC3339))
					}
					tw.Flush()
				})
			},
		},
		{
			Name:      "show",
			Usage:     "show the profile of one image",
			ArgsUsage: "IMAGE (a name the store has seen, or a digest)",
			Flags:     slices.Concat([]cli.Flag{cliapp.RedisFlag, formatFlag}, cliapp.LearningFlags),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("profile show needs one IMAGE", 2)
				}
				st, err := cliapp.OpenStore(c)
				if err != nil {
					return err
				}
				defer st.Close()
				digest, err := st.Resolve(c.Context, c.Args().First())
				if err != nil {
					return err
				}
				p, err := st.Profile(c.Context, digest, time.Now(), cliapp.Learning(c))
				if err != nil {
					return err
				}
				return render(c, p, func(w io.Writer) { showProfile(w, p) })
			},
		},
	},
}

// render writes v as JSON or through table.
func render(c *cli.Context, v any, table func(io.Writer)) error {
	w := c.App.Writer
	switch c.String("format") {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		table(w)
		return nil
	}
	return cli.Exit(fmt.Sprintf("unknown --format %q (want table or json)", c.String("format")), 2)
}

// showProfile writes a profile as text. Everything in it may come from a
// container (paths, names) or from whoever writes to Redis: each string
// is escaped (termsafe.String), so that no escape sequence reaches the
// terminal and no newline forges a line.
func showProfile(w io.Writer, p *store.Profile) {
	m := p.Meta
	q := termsafe.String
	fmt.Fprintf(w, "image       %s\ndigest      %s\nstate       %s\nconfidence  %s\n",
		strings.Join(termsafe.Strings(p.Names), ", "), q(p.Digest), q(string(p.State)), q(string(p.Confidence)))
	fmt.Fprintf(w, "observed    %s to %s (%s)\n", m.FirstSeen.Format(time.RFC3339), m.LastSeen.Format(time.RFC3339), m.LastSeen.Sub(m.FirstSeen).Round(time.Second))
	fmt.Fprintf(w, "containers  %d   nodes %s\n", len(p.Containers), strings.Join(termsafe.Strings(p.NodeNames), ", "))
	fmt.Fprintf(w, "events      %d   lost %d   partial containers %d   guard pauses %d   revision %d\n",
		m.Events, m.Losses, m.PartialContainers, m.GuardPauses, m.Revision)
	fmt.Fprintf(w, "size        %d bytes (estimated)\n", m.Bytes)
	if m.Truncated {
		fmt.Fprintf(w, "truncated   yes: the profile reached its ceiling; %d new members were counted, not stored, and nothing is not_observed\n", m.Dropped)
	}
	for _, sec := range store.Sections {
		entries := p.Sections[sec]
		fmt.Fprintf(w, "\n%s (%d)\n", sec, len(entries))
		for _, e := range entries {
			if sec == store.Drift {
				d := store.ParseDrift(e.Value)
				fmt.Fprintf(w, "  %-7s %-10s %s\n", q(d.How), q(d.Origin), q(d.Path))
				continue
			}
			fmt.Fprintf(w, "  %s\n", q(e.Value))
		}
	}
	if len(p.Folded) > 0 {
		fmt.Fprintf(w, "\nfolded (members past a section's cap, counted)\n")
		for _, f := range p.Folded {
			fmt.Fprintf(w, "  %-22s %-40s %d\n", q(string(f.Section)), q(f.Pattern), f.Count)
		}
	}
}

// short abbreviates a digest for tables.
func short(digest string) string {
	if algo, hex, ok := strings.Cut(digest, ":"); ok && len(hex) > 12 {
		return algo + ":" + hex[:12]
	}
	return digest
}
