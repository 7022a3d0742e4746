// Package vuln has the shapes of functions a vulnerability names: a small
// function the compiler inlines, methods on a value and on a pointer, and
// a generic function.
package vuln

// Small is inlined at its call sites.
func Small(x int) int { return x*x ^ 0x5a5a }

// Outer is inlined too, and Small inside it.
func Outer(x int) int { return Small(x+7) + x }

// Counter has methods of both receivers.
type Counter struct{ n int }

// Add is a pointer method.
//
//go:noinline
func (c *Counter) Add(d int) { c.n += d }

// Get is a value method.
//
//go:noinline
func (c Counter) Get() int { return c.n }

// Map is generic.
//
//go:noinline
func Map[T any](xs []T, f func(T) T) []T {
	out := make([]T, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// Safe is never named by a vulnerability.
//
//go:noinline
func Safe(x int) int { return x - 1 }
