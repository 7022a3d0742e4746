package gosym

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzLimits keep one input's work small: the limits themselves are what
// a crafted input meets.
var fuzzLimits = Limits{Instances: 10_000, PerFunc: 1_000, Steps: 200_000}

// FuzzTable reads any bytes as a Go binary: the pclntab, the module data,
// the inline trees and the build id. It never panics, and every error is
// ErrNotGo or ErrLimit. Seeds: testdata/fuzz/FuzzTable (crafted binaries).
func FuzzTable(f *testing.F) {
	f.Add(smallCraft().bytes())
	many := smallCraft()
	many.funcs[0].inl = inlinedRuns(50)
	f.Add(many.bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := NewTable(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrNotGo) && !errors.Is(err, ErrLimit) {
				t.Fatalf("NewTable: an error neither ErrNotGo nor ErrLimit: %v", err)
			}
			return
		}
		tb.Limits = fuzzLimits
		ins, err := tb.Instances(func(string) bool { return true })
		if err != nil && !errors.Is(err, ErrLimit) {
			t.Fatalf("Instances: %v", err)
		}
		for i := 1; i < len(ins); i++ {
			if ins[i].Addr < ins[i-1].Addr {
				t.Fatalf("instances out of order: %#x after %#x", ins[i].Addr, ins[i-1].Addr)
			}
		}
		_, _ = tb.BuildID()
		for _, in := range ins {
			_, _ = tb.FileOffset(in.Addr)
		}
	})
}

// FuzzBuildID reads the build id of any bytes, as the agent does of a
// container's binary before probing it.
func FuzzBuildID(f *testing.F) {
	f.Add(smallCraft().bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ReadBuildIDAt(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(id) > len(b) {
			t.Fatalf("a build id of %d bytes from %d", len(id), len(b))
		}
	})
}
