package collector

import (
	"context"
	"fmt"
	"testing"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

// BenchmarkFold measures folding decoded events into deltas, per core:
// the work the agent does for every event the kernel sends. A small set
// of paths repeats, as in a real profile, so that the delta stays small.
func BenchmarkFold(b *testing.B) {
	c := New(quiet, nil, Config{Node: "n"})
	ctr := container("c1")
	events := make([]sensor.Event, 1024)
	for i := range events {
		events[i] = sensor.FileEvent{Path: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/lib%04d.so", i), Access: sensor.AccessRead}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Observe(ctr, events[i&1023])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeAndFold is the whole user-space path of a file event:
// a raw ring buffer record decoded and folded.
func BenchmarkDecodeAndFold(b *testing.B) {
	c := New(quiet, nil, Config{Node: "n"})
	ctr := container("c1")
	raws := make([][]byte, 1024)
	for i := range raws {
		raws[i] = sensor.EncodeFileRecord(sensor.FileEvent{Path: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/lib%04d.so", i), Access: sensor.AccessRead, Ino: uint64(i)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ev, err := sensor.Decode(raws[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		c.Observe(ctr, ev)
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkUniqueFilesIntoRedis measures end to end how many unique file
// events per second reach a real redis-server: folded, flushed every
// 100,000 events, and read back to check that none was lost. Image files
// are stored one by one (the ceiling lifted, so that every one is kept);
// files the container made fill their section to the cap and are counted
// under their directory (1,000 to a directory) past it.
func BenchmarkUniqueFilesIntoRedis(b *testing.B) {
	for _, tc := range []struct {
		name    string
		origin  sensor.Origin
		section store.Section
	}{
		{"image", sensor.OriginImage, store.FilesRead},
		{"container", sensor.OriginContainer, store.RuntimeFilesRead},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := redistest.Start(b)
			st := openStore(b, srv.URL(), store.WithLimits(store.Limits{MaxBytes: 1 << 40}))
			c := New(quiet, st, Config{Node: "n"})
			ctr := container("c1")
			c.ContainerStarted(ctr)
			ctx := context.Background()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				c.Observe(ctr, sensor.FileEvent{Path: fmt.Sprintf("/srv/data/%06d/%03d", n/1000, n%1000), Access: sensor.AccessRead, Origin: tc.origin})
				n++
				if n%100_000 == 0 {
					if err := c.Flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := c.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			p, err := st.Profile(ctx, digest, c.now(), c.cfg.Learning)
			if err != nil {
				b.Fatal(err)
			}
			got := int64(len(p.Sections[tc.section]))
			for _, f := range p.Folded {
				got += f.Count
			}
			if got != int64(n) {
				b.Fatalf("%d of %d files reached redis", got, n)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(p.Meta.Losses), "lost")
			b.ReportMetric(float64(srv.MemoryUsage(b, "inuse:{"+digest+"}:*"))/float64(n), "redis_B/file")
		})
	}
}
