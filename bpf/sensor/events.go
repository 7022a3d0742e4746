package sensor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event is one decoded observation of a tracked cgroup.
type Event interface {
	// Cgroup is the tracking key of the cgroup the event belongs to.
	Cgroup() uint64
	// Kind names the event in its JSON form: file, exec, net, syscalls,
	// loss, cgroup here; function and probed in package funcprobe.
	Kind() string
}

// Header is common to the events the kernel sends.
type Header struct {
	CgroupID uint64 `json:"cgroup_id"`
	PID      uint32 `json:"pid"`
	// Monotonic is CLOCK_MONOTONIC in nanoseconds when the kernel saw it.
	Monotonic uint64 `json:"monotonic_ns"`
	// Seeded is set on events that the agent read from /proc for a
	// process that ran before its container was tracked, rather than
	// events the kernel reported.
	Seeded bool `json:"seeded,omitempty"`
	// ExecSession is set on events of an exec session: a process that a
	// runtime started in the running container from outside it (docker
	// exec, kubectl exec), or one it started (bpf/sensor/runtime.h).
	ExecSession bool `json:"exec_session,omitempty"`
}

// Cgroup implements Event.
func (h Header) Cgroup() uint64 { return h.CgroupID }

func (h Header) header() Header { return h }

// Seeded reports whether ev was read from /proc (Header.Seeded).
func Seeded(ev Event) bool {
	h, ok := ev.(interface{ header() Header })
	return ok && h.header().Seeded
}

// ExecSession reports whether ev is an exec session's (Header.ExecSession).
func ExecSession(ev Event) bool {
	h, ok := ev.(interface{ header() Header })
	return ok && h.header().ExecSession
}

// Access says how a file was used.
type Access uint16

// Access bits of a file event (enum access in events.h).
const (
	AccessRead   = Access(sensorAccessACCESS_READ)
	AccessWrite  = Access(sensorAccessACCESS_WRITE)
	AccessCreate = Access(sensorAccessACCESS_CREATE)
	AccessMapped = Access(sensorAccessACCESS_MAPPED)
)

var accessNames = []struct {
	bit  Access
	name string
}{{AccessRead, "read"}, {AccessWrite, "write"}, {AccessCreate, "create"}, {AccessMapped, "mapped"}}

// Strings lists the access bits by name.
func (a Access) Strings() []string {
	names := []string{}
	for _, n := range accessNames {
		if a&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return names
}

// MarshalJSON writes the access as a list of names.
func (a Access) MarshalJSON() ([]byte, error) { return json.Marshal(a.Strings()) }

// Origin says where a file comes from (enum file_origin in events.h).
type Origin uint8

// File origins, decided in the kernel from the opened file.
const (
	// OriginImage is a file of an image layer (or, for a plain directory
	// root, any file on the root's filesystem).
	OriginImage = Origin(sensorFileOriginORIGIN_IMAGE)
	// OriginContainer is a file only the container's writable layer holds.
	OriginContainer = Origin(sensorFileOriginORIGIN_CONTAINER)
	// OriginVolume is a file on another mount: a volume, a tmpfs, /proc, /dev.
	OriginVolume = Origin(sensorFileOriginORIGIN_VOLUME)
)

var originNames = map[Origin]string{OriginImage: "image", OriginContainer: "container", OriginVolume: "volume"}

func (o Origin) String() string { return nameOf(originNames, o, "origin") }

// MarshalJSON writes the origin's name.
func (o Origin) MarshalJSON() ([]byte, error) { return json.Marshal(o.String()) }

// FromImage reports whether the file came with the image. An unknown
// origin (a script, whose file is closed when it is reported) counts as the
// image's: only image files can put a package in use, and a script's path
// is checked against the image's files anyway.
func (o Origin) FromImage() bool { return o != OriginContainer && o != OriginVolume }

// FileEvent is a file a tracked process opened, or mapped executable.
type FileEvent struct {
	Header
	// Path is resolved in the kernel from the opened file, relative to the
	// process's root directory.
	Path      string      `json:"path"`
	Access    Access      `json:"access"`
	Origin    Origin      `json:"origin,omitempty"`
	Mode      fs.FileMode `json:"-"`
	Dir       bool        `json:"dir,omitempty"`
	Dev       uint32      `json:"dev"`
	Ino       uint64      `json:"ino"`
	Truncated bool        `json:"truncated,omitempty"`
}

// Kind implements Event.
func (FileEvent) Kind() string { return "file" }

// ExecRole says what an executed file was to the exec.
type ExecRole uint8

// Exec roles (enum exec_role in events.h).
const (
	// RoleBinary is the file the kernel ran: the interpreter of a script.
	RoleBinary = ExecRole(sensorExecRoleEXEC_BINARY)
	// RoleScript is a #! script.
	RoleScript = ExecRole(sensorExecRoleEXEC_SCRIPT)
	// RoleLoader is the ELF interpreter of the binary (PT_INTERP).
	RoleLoader = ExecRole(sensorExecRoleEXEC_LOADER)
)

var roleNames = map[ExecRole]string{RoleBinary: "binary", RoleScript: "script", RoleLoader: "loader"}

func (r ExecRole) String() string { return nameOf(roleNames, r, "role") }

// MarshalJSON writes the role's name.
func (r ExecRole) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// ExecEvent is a file a tracked process executed.
type ExecEvent struct {
	Header
	Role ExecRole `json:"role"`
	// Path is resolved in the kernel for binaries and loaders. For scripts,
	// whose file is closed by the time the interpreter runs, it is the argv
	// filename joined to the resolved working directory.
	Path      string `json:"path"`
	Argv0     string `json:"argv0,omitempty"`
	Origin    Origin `json:"origin,omitempty"`
	Dev       uint32 `json:"dev,omitempty"`
	Ino       uint64 `json:"ino,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Kind implements Event.
func (ExecEvent) Kind() string { return "exec" }

// Protocol is a transport protocol.
type Protocol uint8

// Protocols the sensor reports.
const (
	TCP Protocol = unix.IPPROTO_TCP
	UDP Protocol = unix.IPPROTO_UDP
)

var protocolNames = map[Protocol]string{TCP: "tcp", UDP: "udp"}

func (p Protocol) String() string { return nameOf(protocolNames, p, "proto") }

// MarshalJSON writes the protocol's name.
func (p Protocol) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// Direction is inbound (a port served) or outbound (a port reached).
type Direction uint8

// Directions (enum net_direction in events.h).
const (
	Inbound  = Direction(sensorNetDirectionDIR_IN)
	Outbound = Direction(sensorNetDirectionDIR_OUT)
)

func (d Direction) String() string {
	if d == Inbound {
		return "in"
	}
	return "out"
}

// MarshalJSON writes the direction's name.
func (d Direction) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// NetOp is the socket call that revealed a port.
type NetOp uint8

// Socket calls (enum net_op in events.h).
const (
	OpListen  = NetOp(sensorNetOpNET_LISTEN)
	OpAccept  = NetOp(sensorNetOpNET_ACCEPT)
	OpConnect = NetOp(sensorNetOpNET_CONNECT)
	OpBind    = NetOp(sensorNetOpNET_BIND)
	OpSend    = NetOp(sensorNetOpNET_SEND)
)

var netOpNames = map[NetOp]string{OpListen: "listen", OpAccept: "accept", OpConnect: "connect", OpBind: "bind", OpSend: "send"}

func (o NetOp) String() string { return nameOf(netOpNames, o, "op") }

// MarshalJSON writes the operation's name.
func (o NetOp) MarshalJSON() ([]byte, error) { return json.Marshal(o.String()) }

// NetEvent is a port a tracked process served or reached.
type NetEvent struct {
	Header
	Protocol  Protocol  `json:"protocol"`
	Direction Direction `json:"direction"`
	Port      uint16    `json:"port"`
	IPv6      bool      `json:"ipv6,omitempty"`
	Op        NetOp     `json:"op"`
}

// Kind implements Event.
func (NetEvent) Kind() string { return "net" }

// SyscallEvent lists syscalls a cgroup made for the first time since the
// last read of its bitmap.
type SyscallEvent struct {
	CgroupID uint64 `json:"cgroup_id"`
	// Numbers are the architecture's syscall numbers; Names their names.
	Numbers []int    `json:"numbers"`
	Names   []string `json:"names"`
}

// Cgroup implements Event.
func (e SyscallEvent) Cgroup() uint64 { return e.CgroupID }

// Kind implements Event.
func (SyscallEvent) Kind() string { return "syscalls" }

// LossEvent says that events of a cgroup were dropped because the ring
// buffer was full.
type LossEvent struct {
	CgroupID uint64 `json:"cgroup_id"`
	// Lost is the number dropped since the last LossEvent, Total since tracking began.
	Lost  uint64 `json:"lost"`
	Total uint64 `json:"total"`
}

// Cgroup implements Event.
func (e LossEvent) Cgroup() uint64 { return e.CgroupID }

// Kind implements Event.
func (LossEvent) Kind() string { return "loss" }

// CgroupEvent says that a new cgroup under an early prefix was tracked
// the moment it was created, before any runtime named its container.
type CgroupEvent struct {
	Header
	// Path is the cgroup's path in the cgroup2 hierarchy (/docker/<id>).
	Path string `json:"path"`
}

// Kind implements Event.
func (CgroupEvent) Kind() string { return "cgroup" }

// nameOf names a value of an enum; a value without a name shows its number.
func nameOf[T ~uint8](names map[T]string, v T, kind string) string {
	if n, ok := names[v]; ok {
		return n
	}
	return fmt.Sprintf("%s(%d)", kind, uint8(v))
}

// JSON is an event as the agent writes it: its fields after a leading
// "kind" member, the one place that names events in JSON.
type JSON struct{ Event }

// MarshalJSON implements json.Marshaler.
func (j JSON) MarshalJSON() ([]byte, error) {
	body, err := json.Marshal(j.Event)
	if err != nil {
		return nil, err
	}
	kind, _ := json.Marshal(j.Kind())
	var buf bytes.Buffer
	buf.Grow(len(body) + len(kind) + 10)
	buf.WriteString(`{"kind":`)
	buf.Write(kind)
	if len(body) > 2 {
		buf.WriteByte(',')
	}
	buf.Write(body[1:])
	return buf.Bytes(), nil
}

// ErrMalformed is returned for a ring buffer record that cannot be decoded.
var ErrMalformed = errors.New("sensor: malformed record")

var (
	headerSize = int(unsafe.Sizeof(sensorEventHeader{}))
	fileSize   = int(unsafe.Sizeof(sensorFileEvent{}))
	execSize   = int(unsafe.Sizeof(sensorExecEvent{}))
	netSize    = int(unsafe.Sizeof(sensorNetEvent{}))
	mkdirSize  = int(unsafe.Sizeof(sensorCgroupEvent{}))
	kindOffset = int(unsafe.Offsetof(sensorEventHeader{}.Kind))
)

// Decode turns one ring buffer record into a typed event.
func Decode(raw []byte) (Event, error) {
	if len(raw) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	switch sensorEventKind(raw[kindOffset]) {
	case sensorEventKindEVENT_FILE:
		var r sensorFileEvent
		tail, err := decodeFixed(raw, fileSize, &r)
		if err != nil {
			return nil, err
		}
		p, err := take(tail, int(r.PathLen))
		if err != nil {
			return nil, err
		}
		mode := fileMode(r.Mode)
		return FileEvent{
			Header: header(r.Hdr), Path: string(p), Access: Access(r.Access), Origin: Origin(r.Origin), Mode: mode,
			Dir: mode.IsDir(), Dev: r.Dev, Ino: r.Ino, Truncated: r.Truncated != 0,
		}, nil
	case sensorEventKindEVENT_EXEC:
		var r sensorExecEvent
		tail, err := decodeFixed(raw, execSize, &r)
		if err != nil {
			return nil, err
		}
		p, err := take(tail, int(r.PathLen))
		if err != nil {
			return nil, err
		}
		aux, err := take(tail[len(p):], int(r.AuxLen))
		if err != nil {
			return nil, err
		}
		ev := ExecEvent{Header: header(r.Hdr), Role: ExecRole(r.Role), Path: string(p), Origin: Origin(r.Origin), Dev: r.Dev, Ino: r.Ino, Truncated: r.Truncated != 0}
		if ev.Role == RoleScript {
			ev.Path = scriptPath(string(p), string(aux))
		} else {
			ev.Argv0 = string(aux)
		}
		return ev, nil
	case sensorEventKindEVENT_NET:
		var r sensorNetEvent
		if _, err := decodeFixed(raw, netSize, &r); err != nil {
			return nil, err
		}
		return NetEvent{
			Header: header(r.Hdr), Protocol: Protocol(r.Protocol), Direction: Direction(r.Direction),
			Port: r.Port, IPv6: r.Family == unix.AF_INET6, Op: NetOp(r.Op),
		}, nil
	case sensorEventKindEVENT_MKDIR:
		var r sensorCgroupEvent
		tail, err := decodeFixed(raw, mkdirSize, &r)
		if err != nil {
			return nil, err
		}
		p, err := take(tail, int(r.PathLen))
		if err != nil {
			return nil, err
		}
		return CgroupEvent{Header: header(r.Hdr), Path: string(p)}, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, raw[kindOffset])
}

func decodeFixed(raw []byte, size int, into any) ([]byte, error) {
	if len(raw) < size {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(raw), size)
	}
	if _, err := binary.Decode(raw[:size], binary.NativeEndian, into); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return raw[size:], nil
}

func take(b []byte, n int) ([]byte, error) {
	if n > len(b) {
		return nil, fmt.Errorf("%w: string of %d bytes in %d", ErrMalformed, n, len(b))
	}
	return b[:n], nil
}

func header(h sensorEventHeader) Header {
	return Header{CgroupID: h.CgroupId, PID: h.Pid, Monotonic: h.TimestampNs, ExecSession: h.Source == sensorEventSourceSOURCE_EXEC_SESSION}
}

// scriptPath joins a script's argv filename to the directory it is relative to.
func scriptPath(cwd, filename string) string {
	if path.IsAbs(filename) || cwd == "" {
		return path.Clean(filename)
	}
	return path.Join(cwd, filename)
}

// fileMode converts an inode's i_mode to an fs.FileMode (type bits only matter here).
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	return mode
}

// EncodeFileRecord writes a file event as the kernel would: for
// benchmarks and tests of the user-space path.
func EncodeFileRecord(e FileEvent) []byte {
	rec := sensorFileEvent{
		Hdr: sensorEventHeader{CgroupId: e.CgroupID, TimestampNs: e.Monotonic, Pid: e.PID, Kind: sensorEventKindEVENT_FILE},
		Ino: e.Ino, Dev: e.Dev, Access: sensorAccess(e.Access), PathLen: uint16(len(e.Path)),
	}
	b, _ := binary.Append(nil, binary.NativeEndian, rec)
	return append(b, e.Path...)
}
