package sensor

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzDecode decodes any ring buffer record: the kernel writes them, but
// their strings are what containers named, and a record the decoder
// misreads must be an error, never a panic. Seeds: one record of each
// kind (testdata/fuzz/FuzzDecode holds more).
func FuzzDecode(f *testing.F) {
	for _, raw := range [][]byte{
		record(f, sensorFileEvent{Hdr: hdr(sensorEventKindEVENT_FILE), Ino: 9, Dev: 3, Mode: 0o100644, Access: sensorAccess(AccessRead), PathLen: 10}, "/etc/hosts"),
		record(f, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), Ino: 5, Dev: 1, PathLen: 13, AuxLen: 2, Role: sensorExecRole(RoleBinary)}, "/usr/bin/dash", "sh"),
		record(f, sensorExecEvent{Hdr: hdr(sensorEventKindEVENT_EXEC), PathLen: 4, AuxLen: 11, Role: sensorExecRole(RoleScript)}, "/srv", "./run/go.sh"),
		record(f, sensorNetEvent{Hdr: hdr(sensorEventKindEVENT_NET), Port: 53, Family: unix.AF_INET6, Protocol: uint8(UDP), Direction: sensorNetDirection(Outbound), Op: sensorNetOp(OpSend)}),
		record(f, sensorCgroupEvent{Hdr: hdr(sensorEventKindEVENT_MKDIR), PathLen: 9}, "/kubepods"),
	} {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := Decode(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if ev.Kind() == "" {
			t.Fatalf("an event of no kind: %#v", ev)
		}
		var strs int
		switch e := ev.(type) {
		case FileEvent:
			strs = len(e.Path)
		case ExecEvent:
			strs = len(e.Argv0)
		case CgroupEvent:
			strs = len(e.Path)
		}
		if strs > len(raw) {
			t.Fatalf("a string of %d bytes from a record of %d", strs, len(raw))
		}
	})
}
