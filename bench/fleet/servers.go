package main

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/inuse-dev/inuse/internal/redistest"
)

// processTB lets redistest, written for tests, start the benchmark's
// servers: temporary directories under one root, cleanups run by cleanup,
// and a fatal error turned into a panic that servers recovers.
type processTB struct {
	testing.TB
	root     string
	cleanups []func()
	failed   bool
}

type fatal string

func (*processTB) Helper()                           {}
func (*processTB) Fatal(args ...any)                 { panic(fatal(fmt.Sprint(args...))) }
func (*processTB) Fatalf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (*processTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (t *processTB) Failed() bool     { return t.failed }
func (t *processTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

func (t *processTB) TempDir() string {
	d, err := os.MkdirTemp(t.root, "redis-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// cleanup stops the servers (printing their logs if the run failed) and
// removes the run's directory, which a failed run keeps for its logs.
func (t *processTB) cleanup(failed bool) {
	t.failed = failed
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	if failed {
		fmt.Fprintln(os.Stderr, "fleet: the run's files (the replicas' logs) are kept in", t.root)
		return
	}
	_ = os.RemoveAll(t.root)
}

// servers starts a 3-master Redis Cluster and a single redis-server on
// loopback.
func servers(tb *processTB) (cluster *redistest.Cluster, single *redistest.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	return redistest.StartCluster(tb, 3), redistest.Start(tb), nil
}
