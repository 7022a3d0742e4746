package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/syscalls"
)

// fleet is the simulated cluster. Everything is derived from its fields,
// so that every agent process and the checker build the same fleet
// without talking to each other.
type fleet struct {
	Seed       uint64
	Nodes      int
	Images     int
	Files      int // files of an image
	Containers int
}

// kind is how a container touches a file of its image.
type kind uint8

const (
	read    kind = iota // opened for reading
	library             // opened and mapped executable
	binary              // executed
	written             // created or written
)

type file struct {
	path string
	kind kind
}

// image is one Deployment's image: its files and what it does on the network.
type image struct {
	digest, name, namespace, workload string
	files                             []file
	tcpIn, tcpOut, udpOut             []uint16
	syscalls                          []string
}

// words name packages and directories, as in a Debian image.
var words = []string{
	"ssl", "crypto", "z", "ffi", "xml2", "curl", "nghttp2", "pcre2", "gnutls", "systemd",
	"krb5", "ldap", "sasl2", "icu", "png", "jpeg", "freetype", "expat", "sqlite3", "uuid",
	"yaml", "zstd", "lzma", "bz2", "gmp", "idn2", "psl", "ssh2", "pq", "mariadb",
	"python3", "perl", "ruby", "node", "java", "gcc", "stdc++", "m", "nss", "pam",
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// image builds image i: a Debian-like set of paths, many of them shared
// with other images (the same base packages), some of its own under /app.
func (f fleet) image(i int) image {
	r := rand.New(rand.NewPCG(f.Seed, uint64(i)))
	sum := sha256.Sum256(fmt.Appendf(nil, "image/%d/%d", f.Seed, i))
	img := image{
		digest:    "sha256:" + hex.EncodeToString(sum[:]),
		name:      fmt.Sprintf("registry.example.com/team%d/app%d:1.%d", i%37, i, r.IntN(20)),
		namespace: fmt.Sprintf("team%d", i%37),
		workload:  fmt.Sprintf("app%d", i),
	}
	seen := map[string]bool{}
	for len(img.files) < f.Files {
		w, w2, n := pick(r, words), pick(r, words), r.IntN(200)
		var fl file
		switch c := r.IntN(100); {
		case c < 25:
			fl = file{fmt.Sprintf("/usr/lib/x86_64-linux-gnu/lib%s%d.so.%d", w, n, n%5), library}
		case c < 35:
			fl = file{fmt.Sprintf("/usr/bin/%s-%s%d", w, w2, n), binary}
		case c < 45:
			fl = file{fmt.Sprintf("/etc/%s/%s%d.conf", w, w2, n), read}
		case c < 60:
			fl = file{fmt.Sprintf("/usr/share/%s/%s/%d.dat", w, w2, n), read}
		case c < 75:
			fl = file{fmt.Sprintf("/usr/lib/python3/dist-packages/%s/%s_%d.py", w, w2, n), read}
		case c < 80:
			fl = file{fmt.Sprintf("/var/log/%s/%s%d.log", w, w2, n), written}
		default:
			fl = file{fmt.Sprintf("/app/%s/%s/%s%d.js", img.workload, w, w2, n), read}
		}
		if !seen[fl.path] {
			seen[fl.path] = true
			img.files = append(img.files, fl)
		}
	}
	img.tcpIn = []uint16{uint16(8000 + r.IntN(100))}
	img.tcpOut = []uint16{443, 5432}[:1+r.IntN(2)]
	img.udpOut = []uint16{53}
	for _, nr := range r.Perm(300)[:40+r.IntN(50)] {
		img.syscalls = append(img.syscalls, syscalls.Name("amd64", nr))
	}
	return img
}

// placement is where container k runs: replica j of its image's
// Deployment, on consecutive nodes from the Deployment's first one, as a
// scheduler spreading replicas would place them.
type placement struct {
	image, replica, node int
}

// placements places every container. Every image has a replica; the
// others go mostly to popular images.
func (f fleet) placements() []placement {
	r := rand.New(rand.NewPCG(f.Seed, 1<<40))
	first := make([]int, f.Images)
	for i := range first {
		first[i] = r.IntN(f.Nodes)
	}
	replicas := make([]int, f.Images)
	out := make([]placement, f.Containers)
	for k := range out {
		i := k
		if k >= f.Images {
			u := r.Float64()
			i = int(u * u * float64(f.Images))
		}
		out[k] = placement{image: i, replica: replicas[i], node: (first[i] + replicas[i]) % f.Nodes}
		replicas[i]++
	}
	return out
}

func nodeName(n int) string { return fmt.Sprintf("node-%03d", n) }

// container is container k as the runtime would describe it. Each runs
// in a workload of its own (a Deployment of one replica, or a sidecar of
// many Deployments): runtimeimages then lists one entry per container,
// the most it can list for the fleet.
func (f fleet) container(k int, p placement, img image) lifecycle.Container {
	sum := sha256.Sum256(fmt.Appendf(nil, "container/%d/%d", f.Seed, k))
	return lifecycle.Container{
		ID: hex.EncodeToString(sum[:]), Name: "app", Runtime: lifecycle.RuntimeContainerd,
		Image:    lifecycle.Image{Name: img.name, Digest: img.digest},
		Pod:      lifecycle.Pod{Name: fmt.Sprintf("%s-%d", img.workload, p.replica), Namespace: img.namespace},
		Workload: lifecycle.Workload{Kind: "Deployment", Name: fmt.Sprintf("%s-%d", img.workload, p.replica)},
	}
}

// uses lists the files of img that container k touches: nine in ten of
// them, so that replicas overlap heavily but not completely.
func (f fleet) uses(k int, img image) []int {
	r := rand.New(rand.NewPCG(f.Seed^0x9e3779b97f4a7c15, uint64(k)))
	var out []int
	for i := range img.files {
		if r.IntN(10) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// events are what the sensor reports for container k: each file it uses
// one to three times, its ports and its syscalls.
func (f fleet) events(k int, img image, emit func(sensor.Event)) {
	for _, i := range f.uses(k, img) {
		fl := img.files[i]
		var ev sensor.Event
		switch fl.kind {
		case read:
			ev = sensor.FileEvent{Path: fl.path, Access: sensor.AccessRead}
		case library:
			ev = sensor.FileEvent{Path: fl.path, Access: sensor.AccessRead | sensor.AccessMapped}
		case binary:
			ev = sensor.ExecEvent{Path: fl.path, Role: sensor.RoleBinary}
		case written:
			ev = sensor.FileEvent{Path: fl.path, Access: sensor.AccessWrite | sensor.AccessCreate}
		}
		for range 1 + (i+k)%3 {
			emit(ev)
		}
	}
	for _, p := range img.tcpIn {
		emit(sensor.NetEvent{Protocol: sensor.TCP, Direction: sensor.Inbound, Port: p})
	}
	for _, p := range img.tcpOut {
		emit(sensor.NetEvent{Protocol: sensor.TCP, Direction: sensor.Outbound, Port: p})
	}
	for _, p := range img.udpOut {
		emit(sensor.NetEvent{Protocol: sensor.UDP, Direction: sensor.Outbound, Port: p})
	}
	emit(sensor.SyscallEvent{Names: img.syscalls})
}
