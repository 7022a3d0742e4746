// Package redistest starts real redis-server processes (Debian's package,
// installed by `make deps`) on free loopback ports for tests, and stops
// them when the test ends.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	tb   testing.TB
	Host string
	Port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// MemoryUsage sums MEMORY USAGE over the keys that match pattern: what
// they cost the server, as an operator would measure it.
func (s *Server) MemoryUsage(tb testing.TB, pattern string) int64 {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, pattern).Result()
	if err != nil {
		tb.Fatalf("listing keys %s: %v", pattern, err)
	}
	var total int64
	for _, k := range keys {
		n, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			tb.Fatalf("memory usage of %s: %v", k, err)
		}
		total += n
	}
	return total
}

// Start runs a standalone redis-server without persistence.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, freeAddr(tb))
}

// StartWith runs a standalone redis-server with more arguments (an ACL
// file).
func StartWith(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	return start(tb, freeAddr(tb), extra...)
}

// StartDurable runs a standalone redis-server that writes every command to
// its append-only file before answering, so that it restarts with all it
// acknowledged, as a production Redis with persistence would.
func StartDurable(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, freeAddr(tb), "--appendonly", "yes", "--appendfsync", "always")
}

func start(tb testing.TB, addr *net.TCPAddr, extra ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is missing (run `make deps`): %v", err)
	}
	dir := tb.TempDir()
	args := append([]string{
		"--port", strconv.Itoa(addr.Port), "--bind", addr.IP.String(), "--save", "",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning",
	}, extra...)
	s := &Server{tb: tb, Host: addr.IP.String(), Port: addr.Port, dir: dir, args: append([]string{bin}, args...)}
	s.Restart()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			tb.Logf("redis-server %s log:\n%s", s.Addr(), log)
		}
	})
	return s
}

// Stop kills the server, as an outage would.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port and waits until it answers.
func (s *Server) Restart() {
	s.tb.Helper()
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("starting redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	// A refusal (NOAUTH, with an ACL file) is an answer too.
	var refused redis.Error
	for err := c.Ping(context.Background()).Err(); err != nil && !errors.As(err, &refused); err = c.Ping(context.Background()).Err() {
		if time.Now().After(deadline) {
			s.tb.Fatalf("redis-server on %s did not answer", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Servers []*Server
}

// Addrs lists the masters' addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Addr())
	}
	return out
}

// URL is a redis:// URL naming every master, as inuse's --redis accepts it.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// StartCluster starts n masters in cluster mode, assigns the slots with
// redis-cli and waits until the cluster is ok.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{}
	for range n {
		addr := freeAddr(tb)
		// Peers see connections from 127.0.0.1 (the source address of
		// loopback): each node must announce the address it listens on.
		s := start(tb, addr, "--cluster-enabled", "yes", "--cluster-announce-ip", addr.IP.String(),
			"--cluster-config-file", filepath.Join(tb.TempDir(), "nodes.conf"))
		c.Servers = append(c.Servers, s)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("creating redis cluster: %v\n%s", err, out)
	}
	// Every master must know the whole slot map before clients use it.
	deadline := time.Now().Add(20 * time.Second)
	for _, srv := range c.Servers {
		client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		for {
			info, err := client.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_assigned:16384") {
				break
			}
			if time.Now().After(deadline) {
				client.Close()
				tb.Fatalf("redis cluster not ok on %s: %v %s", srv.Addr(), err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		client.Close()
	}
	return c
}

// freeAddr picks a free port on a loopback address of the server's own,
// chosen at random in 127.0.0.0/8: while a test stops its server for an
// outage, the freed port cannot be taken by a server of another test, which
// would otherwise answer in its place.
func freeAddr(tb testing.TB) *net.TCPAddr {
	tb.Helper()
	for range 100 {
		ip := net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
		l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			tb.Fatal(err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		// Cluster mode also binds port+10000: make sure that one is free too.
		if addr.Port+10000 > 65535 {
			continue
		}
		if l2, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, addr.Port+10000)); err == nil {
			l2.Close()
			return addr
		}
	}
	tb.Fatal("no free loopback port")
	return nil
}
