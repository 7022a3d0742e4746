package sensor

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/syscalls"
)

// objects are the committed BPF objects, one per bpf2go target (gen.go),
// with the GOARCH each runs on.
var objects = []struct{ file, goarch string }{
	{"sensor_x86_bpfel.o", "amd64"},
	{"sensor_arm64_bpfel.o", "arm64"},
}

// mirror is what Go makes of one C enumerator.
type mirror struct {
	value uint64
	// name is the JSON name Go gives the value: the enumerator without its
	// prefix, in lower case. Empty where Go never shows the value.
	name string
}

// mirrored lists every enumerator of the enums bpf2go exports, with the Go
// value that stands for it. An enumerator added on one side only fails.
var mirrored = map[string]map[string]mirror{
	"event_kind": {
		"EVENT_FILE":  {value: uint64(sensorEventKindEVENT_FILE)},
		"EVENT_EXEC":  {value: uint64(sensorEventKindEVENT_EXEC)},
		"EVENT_NET":   {value: uint64(sensorEventKindEVENT_NET)},
		"EVENT_MKDIR": {value: uint64(sensorEventKindEVENT_MKDIR)},
	},
	"access": {
		"ACCESS_READ":   {uint64(AccessRead), strings.Join(AccessRead.Strings(), ",")},
		"ACCESS_WRITE":  {uint64(AccessWrite), strings.Join(AccessWrite.Strings(), ",")},
		"ACCESS_CREATE": {uint64(AccessCreate), strings.Join(AccessCreate.Strings(), ",")},
		"ACCESS_MAPPED": {uint64(AccessMapped), strings.Join(AccessMapped.Strings(), ",")},
		// Dedup keys of exec records only.
		"ACCESS_EXEC":   {value: uint64(sensorAccessACCESS_EXEC)},
		"ACCESS_LOADER": {value: uint64(sensorAccessACCESS_LOADER)},
	},
	"exec_role": {
		"EXEC_BINARY": {uint64(RoleBinary), RoleBinary.String()},
		"EXEC_SCRIPT": {uint64(RoleScript), RoleScript.String()},
		"EXEC_LOADER": {uint64(RoleLoader), RoleLoader.String()},
	},
	"net_op": {
		"NET_LISTEN":  {uint64(OpListen), OpListen.String()},
		"NET_ACCEPT":  {uint64(OpAccept), OpAccept.String()},
		"NET_CONNECT": {uint64(OpConnect), OpConnect.String()},
		"NET_BIND":    {uint64(OpBind), OpBind.String()},
		"NET_SEND":    {uint64(OpSend), OpSend.String()},
	},
	"net_direction": {
		"DIR_IN":  {uint64(Inbound), Inbound.String()},
		"DIR_OUT": {uint64(Outbound), Outbound.String()},
	},
	"cgroup_limits": {
		"EARLY_PREFIXES":   {value: uint64(sensorCgroupLimitsEARLY_PREFIXES)},
		"EARLY_PREFIX_LEN": {value: uint64(sensorCgroupLimitsEARLY_PREFIX_LEN)},
		"MAX_TRACKED_V1":   {value: uint64(sensorCgroupLimitsMAX_TRACKED_V1)},
	},
}

// records are the Go structs of what crosses between kernel and user space:
// ring buffer records, map keys and values.
var records = map[string]any{
	"event_header": sensorEventHeader{},
	"file_event":   sensorFileEvent{},
	"exec_event":   sensorExecEvent{},
	"net_event":    sensorNetEvent{},
	"cgroup_event": sensorCgroupEvent{},
	"cgroup_state": sensorCgroupState{},
	"syscall_bits": sensorSyscallBits{},
	"file_key":     sensorFileKey{},
	"net_key":      sensorNetKey{},
}

// TestCAndGoAgree checks the committed Go against the BTF of every committed
// object: enum values and names, record layouts, and the syscall numbers
// the programs decode against internal/syscalls.
func TestCAndGoAgree(t *testing.T) {
	for _, obj := range objects {
		t.Run(obj.goarch, func(t *testing.T) {
			spec, err := ebpf.LoadCollectionSpec(obj.file)
			require.NoError(t, err, "run make generate")

			for name, want := range mirrored {
				t.Run("enum "+name, func(t *testing.T) {
					var e *btf.Enum
					require.NoError(t, spec.Types.TypeByName(name, &e))
					require.Len(t, e.Values, len(want), "enumerators of %s in C and in mirrored", name)
					for _, v := range e.Values {
						m, ok := want[v.Name]
						require.True(t, ok, "%s has no Go counterpart in mirrored", v.Name)
						require.Equal(t, v.Value, m.value, "value of %s", v.Name)
						if m.name != "" {
							_, suffix, _ := strings.Cut(v.Name, "_")
							require.Equal(t, strings.ToLower(suffix), m.name, "Go name of %s", v.Name)
						}
					}
				})
			}

			for name, rec := range records {
				t.Run("struct "+name, func(t *testing.T) {
					var s *btf.Struct
					require.NoError(t, spec.Types.TypeByName(name, &s))
					requireSameLayout(t, s, reflect.TypeOf(rec))
				})
			}

			t.Run("syscall numbers", func(t *testing.T) {
				var e *btf.Enum
				require.NoError(t, spec.Types.TypeByName("syscall_nr", &e))
				for _, v := range e.Values {
					want := strings.ToLower(strings.TrimPrefix(v.Name, "NR_"))
					require.Equal(t, want, syscalls.Name(obj.goarch, int(v.Value)), "%s on %s", v.Name, obj.goarch)
				}
			})
		})
	}
}

// requireSameLayout checks that a Go struct has the size of its C struct and
// its members at the same offsets, without implicit padding, which
// binary.Decode would not skip.
func requireSameLayout(t *testing.T, c *btf.Struct, g reflect.Type) {
	t.Helper()
	require.EqualValues(t, c.Size, g.Size(), "size of %s", c.Name)
	require.Equal(t, int(g.Size()), binary.Size(reflect.New(g).Interface()), "%s has implicit padding", g)
	var fields []reflect.StructField
	for i := range g.NumField() {
		if f := g.Field(i); f.Name != "_" {
			fields = append(fields, f)
		}
	}
	require.Len(t, fields, len(c.Members), "members of %s", c.Name)
	for i, m := range c.Members {
		f := fields[i]
		require.EqualValues(t, m.Offset.Bytes(), f.Offset, "offset of %s.%s (%s)", c.Name, m.Name, f.Name)
		size, err := btf.Sizeof(m.Type)
		require.NoError(t, err)
		require.EqualValues(t, size, f.Type.Size(), "size of %s.%s (%s)", c.Name, m.Name, f.Name)
	}
}

// TestEarlyPrefixesFitTheSpec sets the early-tracking prefixes into the
// embedded spec, which checks the Go arrays against the variables' sizes.
func TestEarlyPrefixesFitTheSpec(t *testing.T) {
	spec, err := loadSensor()
	require.NoError(t, err)
	var specs sensorSpecs
	require.NoError(t, spec.Assign(&specs))
	long := strings.Repeat("x", int(sensorCgroupLimitsEARLY_PREFIX_LEN)-1)
	require.NoError(t, setEarlyPrefixes(&specs, []string{"/docker/", long}))
	require.Error(t, setEarlyPrefixes(&specs, []string{long + "x"}), "no room for the NUL")
	require.Error(t, setEarlyPrefixes(&specs, make([]string, sensorCgroupLimitsEARLY_PREFIXES+1)))
}
