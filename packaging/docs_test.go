package packaging

import (
	"cmp"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// The documentation is checked against what it describes: the flags the
// binaries print, and the files its links point to.

const configurationDoc = "../docs/configuration.md"

// helpFlag is one option line of a command's --help.
type helpFlag struct {
	names []string // every spelling: --long, -short, deprecated aliases
	vars  []string // its INUSE_* variables
}

var (
	helpHeader = regexp.MustCompile(`^([A-Z][A-Z ]*):\s*$`)
	helpVars   = regexp.MustCompile(`\[(\$[A-Z0-9_]+(?:, \$[A-Z0-9_]+)*)\]$`)
	flagWord   = regexp.MustCompile(`^-{1,2}[a-zA-Z0-9][a-zA-Z0-9-]*$`)
)

// parseHelp reads urfave/cli's help: the flags of the command (its OPTIONS,
// or the binary's GLOBAL OPTIONS) and the names of its subcommands. An
// entry is an indented line whose names end at the first two spaces.
// --help is on every command and is documented once, so it is left out.
func parseHelp(text string) (flags []helpFlag, commands []string) {
	section := ""
	for _, line := range strings.Split(text, "\n") {
		if m := helpHeader.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		entry := strings.TrimSpace(line)
		if entry == "" || entry == line {
			continue
		}
		names, _, _ := strings.Cut(entry, "  ")
		words := strings.Fields(strings.ReplaceAll(names, ",", " "))
		switch section {
		case "COMMANDS":
			if words[0] != "help" {
				commands = append(commands, words[0])
			}
		case "OPTIONS", "GLOBAL OPTIONS":
			var f helpFlag
			for _, w := range words {
				if flagWord.MatchString(w) && !slices.Contains(f.names, w) {
					f.names = append(f.names, w)
				}
			}
			if m := helpVars.FindStringSubmatch(entry); m != nil {
				for _, v := range strings.Split(m[1], ", ") {
					f.vars = append(f.vars, strings.TrimPrefix(v, "$"))
				}
			}
			if len(f.names) > 0 && !slices.Contains(f.names, "--help") {
				flags = append(flags, f)
			}
		}
	}
	return flags, commands
}

// commandFlags runs --help on a binary and, recursively, on each of its
// commands: the flags of every command by its full name ("inuse db
// status"), so that a new command is checked without naming it here.
func commandFlags(t *testing.T, name string) map[string][]helpFlag {
	t.Helper()
	out := map[string][]helpFlag{}
	var walk func(args []string)
	walk = func(args []string) {
		flags, subs := parseHelp(helpOf(t, name, args...))
		out[strings.Join(append([]string{name}, args...), " ")] = flags
		for _, sub := range subs {
			walk(append(slices.Clip(args), sub))
		}
	}
	walk(nil)
	return out
}

// mdSection is the text under one heading of a Markdown file.
type mdSection struct {
	heading string
	lines   []string
}

var (
	mdHeading = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	mdFence   = regexp.MustCompile("^\\s{0,3}(```|~~~)")
)

// mdSections splits Markdown at its headings; fenced code is left out, so
// that a `# comment` in a shell example is no heading.
func mdSections(text string) []mdSection {
	out := []mdSection{{}}
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if mdFence.MatchString(line) {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if m := mdHeading.FindStringSubmatch(line); m != nil {
			out = append(out, mdSection{heading: m[1]})
			continue
		}
		out[len(out)-1].lines = append(out[len(out)-1].lines, line)
	}
	return out
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// documentedFlags reads docs/configuration.md. A section documents flags
// for the commands it names in backquotes, in its heading or on a line
// starting with "Used by:"; its flags are the backquoted spellings in the
// first cell of its table rows. It returns each command's rows by flag.
func documentedFlags(t *testing.T) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(configurationDoc)
	require.NoError(t, err)
	out := map[string]map[string]string{}
	for _, s := range mdSections(string(b)) {
		scope := s.heading
		var rows []string
		for _, l := range s.lines {
			switch {
			case strings.HasPrefix(l, "Used by:"):
				scope += " " + l
			case strings.HasPrefix(l, "| `-"):
				rows = append(rows, l)
			}
		}
		for _, m := range codeSpan.FindAllStringSubmatch(scope, -1) {
			for _, row := range rows {
				cells := strings.Split(row, "|")
				for _, f := range codeSpan.FindAllStringSubmatch(cells[1], -1) {
					if out[m[1]] == nil {
						out[m[1]] = map[string]string{}
					}
					out[m[1]][f[1]] = row
				}
			}
		}
	}
	return out
}

// Every flag that --help prints, of every command of both binaries, is in
// docs/configuration.md in a section for that command, on a row that names
// its variables; and the file documents no flag a command does not have.
func TestDocsConfigurationFlags(t *testing.T) {
	printed := commandFlags(t, "inuse-agent")
	maps.Copy(printed, commandFlags(t, "inuse"))
	documented := documentedFlags(t)
	for _, cmd := range slices.Sorted(maps.Keys(printed)) {
		for _, f := range printed[cmd] {
			for _, name := range f.names {
				row, ok := documented[cmd][name]
				if !ok {
					t.Errorf("`%s --help` prints %s, which docs/configuration.md does not document in a section naming `%s`", cmd, name, cmd)
					continue
				}
				for _, v := range f.vars {
					if !strings.Contains(row, "`"+v+"`") {
						t.Errorf("docs/configuration.md: the row of %s for `%s` does not name its variable %s", name, cmd, v)
					}
				}
			}
		}
	}
	for _, cmd := range slices.Sorted(maps.Keys(documented)) {
		flags, ok := printed[cmd]
		if !ok {
			t.Errorf("docs/configuration.md documents flags for `%s`, which is no command", cmd)
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(documented[cmd])) {
			if !slices.ContainsFunc(flags, func(f helpFlag) bool { return slices.Contains(f.names, name) }) {
				t.Errorf("docs/configuration.md documents %s for `%s`, which it does not have", name, cmd)
			}
		}
	}
}

// docFiles are the Markdown files a reader of a clone follows: the
// README, docs/ and the packaging READMEs, relative to the repository root.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	docs, err := filepath.Glob("../docs/*.md")
	require.NoError(t, err)
	for _, d := range docs {
		files = append(files, strings.TrimPrefix(d, "../"))
	}
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "README.md" {
			files = append(files, filepath.Join("packaging", path))
		}
		return err
	})
	require.NoError(t, err)
	require.Contains(t, files, "docs/configuration.md")
	return files
}

var (
	// Inline links and images, [text](target "title"), once code spans
	// are blanked (their brackets are no link).
	mdInlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	mdRefLink    = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)`)
	mdAutoLink   = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s>]*)>`)
	// GitHub turns bare addresses into links too.
	mdBareURL = regexp.MustCompile(`(?i)\b(?:https?://|www\.)\S+`)
	urlScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// mdLinks returns the link targets of Markdown text, outside code.
func mdLinks(text string) []string {
	var prose []string
	for _, s := range mdSections(text) {
		prose = append(prose, s.heading)
		prose = append(prose, s.lines...)
	}
	body := codeSpan.ReplaceAllString(strings.Join(prose, "\n"), "code")
	var out []string
	for _, re := range []*regexp.Regexp{mdInlineLink, mdRefLink, mdAutoLink} {
		for _, m := range re.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		body = re.ReplaceAllString(body, " ") // found: not again as a bare address
	}
	for _, u := range mdBareURL.FindAllString(body, -1) {
		out = append(out, strings.TrimRight(u, `.,:;!?"')`))
	}
	return out
}

// mdAnchors returns the anchors GitHub gives the headings of Markdown
// text: lower case, letters, digits, '-' and '_' kept, spaces to '-',
// other characters dropped; a repeated anchor gets -1, -2, ...
func mdAnchors(text string) map[string]bool {
	out := map[string]bool{}
	for _, s := range mdSections(text) {
		if s.heading == "" {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(s.heading) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		anchor := b.String()
		for i := 1; out[anchor]; i++ {
			anchor = b.String() + "-" + strconv.Itoa(i)
		}
		out[anchor] = true
	}
	return out
}

// No link of the README, docs/ or a packaging README leaves the
// repository: a clone is read without network and without the checkout
// around it. Every link is relative, stays under the repository root and
// names an existing file, and an anchor names a heading of that file.
// There is no allow-list of addresses: upstream projects are named in plain
// text, which keeps the docs true offline and free of dead links.
func TestDocsLinksStayInRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(filepath.Join(root, file))
		require.NoError(t, err)
		for _, link := range mdLinks(string(b)) {
			if urlScheme.MatchString(link) || strings.HasPrefix(strings.ToLower(link), "www.") || strings.HasPrefix(link, "/") {
				t.Errorf("%s: %s leaves the repository (link a file of the repository, relative to %s)", file, link, file)
				continue
			}
			target, anchor, _ := strings.Cut(link, "#")
			if slices.Contains(strings.Split(target, "/"), "..") {
				// A link that climbs out of its folder reads, to a checker
				// (and a reader of a copied file), as one that leaves the
				// repository: name the file as a repository path instead.
				t.Errorf("%s: %s climbs out of its folder (write the repository path in code)", file, link)
				continue
			}
			path := filepath.Join(root, file)
			if target != "" {
				path = filepath.Join(filepath.Dir(path), target)
			}
			if rel, err := filepath.Rel(root, path); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				t.Errorf("%s: %s leaves the repository", file, link)
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: %s names no file of the repository", file, link)
				continue
			}
			if anchor == "" {
				continue
			}
			text, err := os.ReadFile(path)
			if err != nil || filepath.Ext(path) != ".md" || !mdAnchors(string(text))[anchor] {
				t.Errorf("%s: %s names no heading of %s", file, link, cmp.Or(target, file))
			}
		}
	}
}
