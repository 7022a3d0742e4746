// Package termsafe makes strings that containers made (file paths,
// package names and versions, image names, symbols) safe to print on a
// terminal: a file named "\x1b[2J" must not clear the screen of whoever
// reads a report, nor a newline in a name forge a line of it.
package termsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s as is when every rune of it is printable (a space
// included), else quoted with strconv.Quote: control characters, escape
// sequences, invalid UTF-8 and format characters (such as the
// right-to-left override) are then shown as escapes (\x1b, \n, \u202e).
func String(s string) string {
	if printable(s, false) {
		return s
	}
	return strconv.Quote(s)
}

// Strings applies String to each of ss.
func Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = String(s)
	}
	return out
}

// Text returns a message of several lines (an error) with every control
// character but newline and tab escaped, without quoting it.
func Text(s string) string {
	if printable(s, true) {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		switch {
		case r == '\n' || r == '\t' || r != utf8.RuneError && unicode.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteToASCII(s[i : i+n])
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

func printable(s string, lines bool) bool {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && (!lines || r != '\n' && r != '\t') {
			return false
		}
	}
	return true
}
