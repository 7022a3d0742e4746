// Command fleet measures many nodes' agents writing runtime profiles into
// a 3-master Redis Cluster, against the same writes into a single
// redis-server, in one run: ingest rate, Redis memory per image, and a
// check that every merged profile is the same in both, with nothing lost.
// Then two `inuse serve` replicas (the real binary, built by the run)
// serve the cluster with the scanner on, over generated images: the time
// until every image has a report, the scans of each replica (one per
// image and revision in all, or the run fails), runtimeimages paging and
// each replica's memory.
//
// Each simulated node is its own process (this binary again, with -agent)
// with its own connections, folding its containers' events through the
// real collector and writing them through the real store.
//
//	go run ./bench/fleet -nodes 100 -images 1000 -files 1000 -containers 20000
//	go run ./bench/fleet -small   # 10 nodes, 100 images, 300 files, 2,000 containers
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

func main() {
	var f fleet
	flag.IntVar(&f.Nodes, "nodes", 100, "simulated nodes, one agent process each")
	flag.IntVar(&f.Images, "images", 1000, "distinct images")
	flag.IntVar(&f.Files, "files", 3000, "files of an image")
	flag.IntVar(&f.Containers, "containers", 20000, "containers over all nodes")
	flag.Uint64Var(&f.Seed, "seed", 1, "seed of the simulated fleet")
	parallel := flag.Int("parallel", 10, "agent processes at a time")
	small := flag.Bool("small", false, "a quick run: 10 nodes, 100 images of 300 files, 2,000 containers (overrides those flags)")
	serve := flag.Bool("serve", true, "then run two inuse serve replicas over the cluster")
	limit := flag.Int("page", 250, "runtimeimages entries per page (its default)")
	agent := flag.Int("agent", -1, "run as the agent of this node (internal)")
	clusterURL := flag.String("cluster", "", "cluster URL (internal, with -agent)")
	singleURL := flag.String("single", "", "single server URL (internal, with -agent)")
	flag.Parse()
	if *small {
		f.Nodes, f.Images, f.Files, f.Containers = 10, 100, 300, 2000
	}

	var err error
	if *agent >= 0 {
		err = runAgent(f, *agent, *clusterURL, *singleURL)
	} else {
		err = run(f, *parallel, *serve, *limit)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(f fleet, parallel int, serve bool, limit int) (err error) {
	if f.Containers < f.Images {
		return fmt.Errorf("-containers (%d) must be at least -images (%d): every image runs", f.Containers, f.Images)
	}
	start := time.Now()
	root, err := os.MkdirTemp("", "inuse-fleet-")
	if err != nil {
		return err
	}
	tb := &processTB{root: root}
	defer func() { tb.cleanup(err != nil) }()
	cluster, single, err := servers(tb)
	if err != nil {
		return fmt.Errorf("starting redis: %w", err)
	}
	ctx := context.Background()
	clients := map[string]redis.UniversalClient{
		"cluster": redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()}),
		"single":  redis.NewClient(&redis.Options{Addr: single.Addr()}),
	}
	for _, c := range clients {
		defer c.Close()
	}
	before, err := usedMemory(ctx, cluster, single)
	if err != nil {
		return err
	}

	var t totals
	for first := 0; first < f.Nodes; first += parallel {
		if err := t.wave(f, first, min(first+parallel, f.Nodes), cluster.URL(), single.URL()); err != nil {
			return err
		}
	}
	if t.overflow != 0 {
		return fmt.Errorf("the collectors dropped %d members (overflow)", t.overflow)
	}

	cst, err := store.Open(cluster.URL())
	if err != nil {
		return err
	}
	defer cst.Close()
	sst, err := store.Open(single.URL())
	if err != nil {
		return err
	}
	defer sst.Close()
	checkStart := time.Now()
	events, err := check(ctx, f, cst, sst)
	if err != nil {
		return err
	}
	if events != t.events {
		return fmt.Errorf("the profiles count %d events, the agents folded %d", events, t.events)
	}
	checked := time.Since(checkStart)

	mem, perContainer, err := imageMemory(ctx, f, clients)
	if err != nil {
		return err
	}
	after, err := usedMemory(ctx, cluster, single)
	if err != nil {
		return err
	}

	fmt.Printf("fleet: %d nodes (%d agent processes at a time), %d images of %d files, %d containers, seed %d\n",
		f.Nodes, min(parallel, f.Nodes), f.Images, f.Files, f.Containers, f.Seed)
	fmt.Printf("folded: %d events into %d members in %.1f s (collector, all agents)\n", t.events, t.members, t.fold.Seconds())
	for _, target := range []string{"cluster", "single"} {
		d := t.apply[target]
		fmt.Printf("ingest %-7s: %.1f s, %.0f events/s, %.0f members/s\n", target, d.Seconds(),
			float64(t.events)/d.Seconds(), float64(t.members)/d.Seconds())
	}
	fmt.Printf("ingest cluster/single: %.2f\n", t.apply["single"].Seconds()/t.apply["cluster"].Seconds())
	for _, target := range []string{"cluster", "single"} {
		fmt.Printf("memory %-7s: MEMORY USAGE %.0f KiB per image (mean), used_memory %.1f MiB (+%.1f MiB, %.0f KiB per image)\n",
			target, mem[target]/1024, float64(after[target])/(1<<20), float64(after[target]-before[target])/(1<<20),
			float64(after[target]-before[target])/float64(f.Images)/1024)
	}
	fmt.Printf("memory per container: %.0f bytes of the image's containers, nodes and workloads sets (cluster, MEMORY USAGE)\n", perContainer)
	fmt.Printf("memory cluster/single: MEMORY USAGE %.2f, used_memory %.2f\n", mem["cluster"]/mem["single"],
		float64(after["cluster"]-before["cluster"])/float64(after["single"]-before["single"]))
	fmt.Printf("check: %d images identical in the cluster and the single server, as the fleet ran them; 0 lost (losses 0, overflow 0), %d events counted (%.1f s)\n",
		f.Images, events, checked.Seconds())
	if serve {
		if err := serveFleet(ctx, f, root, cluster.URL(), cst, clients["cluster"], limit); err != nil {
			return err
		}
	}
	fmt.Printf("wall: %.1f s\n", time.Since(start).Seconds())
	return nil
}

// totals add up the agents' reports and the phases' wall times.
type totals struct {
	events, overflow, members int64
	fold                      time.Duration
	apply                     map[string]time.Duration
}

type agentProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// wave runs the agents of nodes [from, to) together: all fold, then all
// write to the cluster, then all write to the single server; each phase
// is timed from its start to the last agent's answer.
func (t *totals) wave(f fleet, from, to int, clusterURL, singleURL string) error {
	if t.apply == nil {
		t.apply = map[string]time.Duration{}
	}
	var agents []*agentProc
	defer func() {
		for _, a := range agents {
			_ = a.in.Close()
			_ = a.cmd.Wait()
		}
	}()
	start := time.Now()
	for node := from; node < to; node++ {
		cmd := exec.Command(os.Args[0], "-agent", strconv.Itoa(node), "-cluster", clusterURL, "-single", singleURL,
			"-nodes", strconv.Itoa(f.Nodes), "-images", strconv.Itoa(f.Images), "-files", strconv.Itoa(f.Files),
			"-containers", strconv.Itoa(f.Containers), "-seed", strconv.FormatUint(f.Seed, 10))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting agent %d: %w", node, err)
		}
		agents = append(agents, &agentProc{cmd, in, bufio.NewScanner(out)})
	}
	for _, a := range agents {
		line, err := a.answer("folded")
		if err != nil {
			return err
		}
		var events, overflow, members int64
		if _, err := fmt.Sscan(line, &events, &overflow, &members); err != nil {
			return fmt.Errorf("agent said %q: %w", line, err)
		}
		t.events, t.overflow, t.members = t.events+events, t.overflow+overflow, t.members+members
	}
	t.fold += time.Since(start)
	for _, target := range []string{"cluster", "single"} {
		start := time.Now()
		for _, a := range agents {
			if _, err := fmt.Fprintln(a.in, target); err != nil {
				return err
			}
		}
		for _, a := range agents {
			if _, err := a.answer("applied"); err != nil {
				return err
			}
		}
		t.apply[target] += time.Since(start)
	}
	return nil
}

// answer reads the agent's next line, which must start with word, and
// returns the rest.
func (a *agentProc) answer(word string) (string, error) {
	if !a.out.Scan() {
		return "", fmt.Errorf("agent %v ended before saying %q", a.cmd.Args[2], word)
	}
	rest, ok := strings.CutPrefix(a.out.Text(), word)
	if !ok {
		return "", fmt.Errorf("agent %v said %q, not %q", a.cmd.Args[2], a.out.Text(), word)
	}
	return rest, nil
}

// usedMemory is INFO's used_memory of the single server and the sum over
// the cluster's masters.
func usedMemory(ctx context.Context, cluster *redistest.Cluster, single *redistest.Server) (map[string]int64, error) {
	out := map[string]int64{}
	for target, srvs := range map[string][]*redistest.Server{"cluster": cluster.Servers, "single": {single}} {
		for _, s := range srvs {
			c := redis.NewClient(&redis.Options{Addr: s.Addr()})
			info, err := c.Info(ctx, "memory").Result()
			c.Close()
			if err != nil {
				return nil, fmt.Errorf("reading memory of %s: %w", s.Addr(), err)
			}
			for line := range strings.SplitSeq(info, "\r\n") {
				if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						return nil, fmt.Errorf("used_memory of %s: %w", s.Addr(), err)
					}
					out[target] += n
				}
			}
		}
	}
	return out, nil
}

// imageMemory is the mean over images of the sum of MEMORY USAGE (every
// element counted: SAMPLES 0) of an image's keys, in each target, and the
// bytes per container of the sets that grow with containers (containers,
// nodes, workloads) in the cluster.
func imageMemory(ctx context.Context, f fleet, clients map[string]redis.UniversalClient) (map[string]float64, float64, error) {
	digests := make([]string, f.Images)
	for i := range digests {
		digests[i] = f.image(i).digest
	}
	out := map[string]float64{}
	var perContainer int64
	for target, c := range clients {
		var sum int64
		for _, digest := range digests {
			keys := store.Keys(digest)
			names := []string{keys.Meta()}
			for _, s := range []store.Set{store.Names, store.Containers, store.Nodes, store.Workloads} {
				names = append(names, keys.Set(s))
			}
			for _, s := range store.Sections {
				names = append(names, keys.Section(s))
			}
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range names {
					p.MemoryUsage(ctx, k, 0)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, 0, fmt.Errorf("memory usage in the %s: %w", target, err)
			}
			for i, cmd := range cmds {
				n, _ := cmd.(*redis.IntCmd).Result() // a section never written is missing: 0
				sum += n
				if target == "cluster" && i >= 2 && i <= 4 { // containers, nodes, workloads
					perContainer += n
				}
			}
		}
		out[target] = float64(sum) / float64(f.Images)
	}
	return out, float64(perContainer) / float64(f.Containers), nil
}
