// Command prog calls the vulnerable functions of its own module and of
// golang.org/x/text (mode a) or only safe ones (mode b).
package main

import (
	"fmt"
	"os"

	"golang.org/x/text/language"

	"example.com/inusetest/vuln"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "a" {
		tags, _, err := language.ParseAcceptLanguage("en-US,fr;q=0.5")
		var c vuln.Counter
		c.Add(vuln.Small(len(tags)))
		fmt.Println(tags, err, vuln.Outer(c.Get()), vuln.Map([]string{"x"}, func(s string) string { return s + s }), vuln.Map([]int{1}, func(i int) int { return -i }))
		return
	}
	t, err := language.Parse("en-US")
	fmt.Println(t, err, vuln.Safe(len(os.Args)))
}
