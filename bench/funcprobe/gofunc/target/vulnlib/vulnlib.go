// Package vulnlib stands for a vulnerable Go package: Parse and Count are
// the "vulnerable" functions a probe plan names, Other is not.
package vulnlib

// Parse is called, never inlined: probed at its entry.
//
//go:noinline
func Parse(s string) int { return len(s) * 2 }

// Count is small enough to be inlined into its caller: probed where it was.
func Count(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			n++
		}
	}
	return n
}

// Other is in the same package and not vulnerable.
//
//go:noinline
func Other(s string) int { return len(s) + 1 }
