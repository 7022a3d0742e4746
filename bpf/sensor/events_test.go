package sensor

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func record(t testing.TB, fixed any, tail ...string) []byte {
	t.Helper()
	b, err := binary.Append(nil, binary.NativeEndian, fixed)
	require.NoError(t, err)
	for _, s := range tail {
		b = append(b, s...)
	}
	return b
}

func hdr(kind sensorEventKind) sensorEventHeader {
	return sensorEventHeader{CgroupId: 42, TimestampNs: 7, Pid: 100, Kind: kind}
}

func TestDecode(t *testing.T) {
	want := Header{CgroupID: 42, PID: 100, Monotonic: 7}
	for _, tc := range []struct {
		name string
		raw  []byte
		want Event
	}{
		{
			name: "file read",
			raw:  record(t, sensorFileEvent{Hdr: hdr(sensorEventKindEVENT_FILE), Ino: 9, Dev: 3, Mode: 0o100644, Access: sensorAccess(AccessRead), PathLen: 10}, "/etc/hosts"),
			want: FileEvent{Header: want, Path: "/etc/hosts", Access: AccessRead, Mode: 0o644, Dev: 3, Ino: 9},
		},
		{
			name: "directory",
			raw:  record(t, sensorFileEvent{Hdr: hdr(sensorEventKindEVENT_FILE), Ino: 2, Mode: 0o40755, Access: sensorAccess(AccessRead), PathLen: 4}, "/etc"),
			want: FileEvent{Header: want, Path: "/etc", Access: AccessRead, Mode: 0o755 | 1<<31, Dir: true, Ino: 2},
		},
		{
			name: "exec binary with argv0",
			raw:  record(t, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), Ino: 5, Dev: 1, PathLen: 13, AuxLen: 2, Role: sensorExecRole(RoleBinary)}, "/usr/bin/dash", "sh"),
			want: ExecEvent{Header: want, Role: RoleBinary, Path: "/usr/bin/dash", Argv0: "sh", Dev: 1, Ino: 5},
		},
		{
			name: "script relative to cwd",
			raw:  record(t, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), PathLen: 4, AuxLen: 11, Role: sensorExecRole(RoleScript)}, "/srv", "./run/go.sh"),
			want: ExecEvent{Header: want, Role: RoleScript, Path: "/srv/run/go.sh"},
		},
		{
			name: "absolute script",
			raw:  record(t, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), AuxLen: 10, Role: sensorExecRole(RoleScript)}, "/opt/x.sh/"),
			want: ExecEvent{Header: want, Role: RoleScript, Path: "/opt/x.sh"},
		},
		{
			name: "udp send over ipv6",
			raw:  record(t, sensorNetEvent{Hdr: hdr(sensorEventKindEVENT_NET), Port: 53, Family: unix.AF_INET6, Protocol: uint8(UDP), Direction: sensorNetDirection(Outbound), Op: sensorNetOp(OpSend)}),
			want: NetEvent{Header: want, Protocol: UDP, Direction: Outbound, Port: 53, IPv6: true, Op: OpSend},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.raw)
			require.NoError(t, err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"shorter than a header", make([]byte, 10)},
		{"unknown kind", record(t, hdr(9))},
		{"file without its fixed part", record(t, hdr(sensorEventKindEVENT_FILE))},
		{"path longer than the record", record(t, sensorFileEvent{Hdr: hdr(sensorEventKindEVENT_FILE), PathLen: 100}, "/short")},
		{"argv0 longer than the record", record(t, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), PathLen: 2, AuxLen: 50, Role: 1}, "/x", "a")},
		{"net without its fixed part", record(t, hdr(sensorEventKindEVENT_NET))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.raw)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

func TestEventJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   Event
		want string
	}{
		{"file", FileEvent{Header: Header{CgroupID: 1, PID: 2, Monotonic: 3}, Path: "/a", Access: AccessWrite | AccessCreate, Origin: OriginContainer, Dev: 4, Ino: 5},
			`{"kind":"file","cgroup_id":1,"pid":2,"monotonic_ns":3,"path":"/a","access":["write","create"],"origin":"container","dev":4,"ino":5}`},
		{"exec", ExecEvent{Header: Header{CgroupID: 1}, Role: RoleLoader, Path: "/lib/ld.so"},
			`{"kind":"exec","cgroup_id":1,"pid":0,"monotonic_ns":0,"role":"loader","path":"/lib/ld.so"}`},
		{"net", NetEvent{Header: Header{CgroupID: 1}, Protocol: TCP, Direction: Inbound, Port: 80, Op: OpListen},
			`{"kind":"net","cgroup_id":1,"pid":0,"monotonic_ns":0,"protocol":"tcp","direction":"in","port":80,"op":"listen"}`},
		{"syscalls", SyscallEvent{CgroupID: 1, Numbers: []int{0}, Names: []string{"read"}},
			`{"kind":"syscalls","cgroup_id":1,"numbers":[0],"names":["read"]}`},
		{"loss", LossEvent{CgroupID: 1, Lost: 2, Total: 3}, `{"kind":"loss","cgroup_id":1,"lost":2,"total":3}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(JSON{tc.ev})
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(got))
			require.Equal(t, tc.name, tc.ev.Kind())
		})
	}
}

func TestNewSyscalls(t *testing.T) {
	var prev, cur sensorSyscallBits
	cur.Words[0] = 1<<0 | 1<<3
	cur.Words[3] = 1 << 39 // 231: exit_group on amd64
	ev, ok := newSyscalls(7, prev, cur)
	require.True(t, ok)
	require.Equal(t, []int{0, 3, 231}, ev.Numbers)
	prev = cur
	_, ok = newSyscalls(7, prev, cur)
	require.False(t, ok, "nothing new")
}

// BenchmarkDecode measures decoding of file records, the bulk of events.
func BenchmarkDecode(b *testing.B) {
	path := "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
	raw := record(b, sensorFileEvent{Hdr: hdr(sensorEventKindEVENT_FILE), Ino: 9, Dev: 3, Mode: 0o100644, Access: sensorAccess(AccessRead), PathLen: uint16(len(path))}, path)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
