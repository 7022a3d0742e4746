// Package store is the Redis schema of runtime profiles: one profile per
// image manifest digest, written by every agent that runs the image and
// read by the scanner, the API and the CLI.
//
// Every key of one image carries the hash tag {<digest>}, so that an image
// lives in one Redis Cluster slot and its update is one atomic script.
// Writes are unions (sets, and sorted sets whose score is the earliest
// time a member was seen), so that agents on many nodes merge without
// coordination.
//
// Beside the profiles it keeps the integration tokens that let other tools
// read the API (tokens.go).
package store

import (
	"fmt"
	"slices"
	"strings"
)

// Prefix starts every key.
const Prefix = "inuse:"

// Section is one set of a profile.
type Section string

// Sections of a profile: sorted sets of members scored by first seen
// (unix milliseconds). The file sections hold the image's own files, one
// member each; what the container wrote or a volume holds goes to the
// runtime sections and to Drift, which are bounded (limits.go).
const (
	FilesRead    Section = "files:read"    // regular files of the image opened for reading
	FilesWritten Section = "files:written" // regular files of the image opened for writing
	DirsRead     Section = "dirs:read"
	DirsWritten  Section = "dirs:written"
	Exec         Section = "exec"   // executed binaries, #! scripts, ELF loaders of the image
	Mapped       Section = "mapped" // files of the image mapped executable (dlopen)
	TCPIn        Section = "tcp:in" // ports listened on or accepted
	TCPOut       Section = "tcp:out"
	UDPIn        Section = "udp:in"
	UDPOut       Section = "udp:out"
	Syscalls     Section = "syscalls" // syscall names
	// Seeded holds "<section>|<member>" (SectionMember) for every member
	// that the agent read from /proc (a container already running when it
	// was tracked) rather than saw happen: evidence says so.
	Seeded Section = "seeded"
	// ExecSessions holds "<section>|<member>" (SectionMember) for every
	// member of a section kept exactly that an exec session (docker exec,
	// kubectl exec) put there; the section itself holds only what the
	// workload did. A reader gets both by default (ProfileSections), the
	// sessions' as evidence of their own.
	ExecSessions Section = "exec_sessions"
	// Functions holds "<binary path>|<symbol>" (FunctionMember) for every
	// vulnerable Go function of the probe plan (GoPlan) that ran.
	Functions Section = "functions"
	// Probed holds "<binary path>|<build id>" (ProbedMember), scored by
	// when every probe of that binary's plan was first in place before a
	// process of the image ran its code, so that no call was missed.
	Probed Section = "probed"
	// The runtime sections hold files and directories that did not come
	// with the image: made by the container (its writable layer) or on
	// another mount (a volume, a tmpfs, /proc).
	RuntimeFilesRead    Section = "runtime:files:read"
	RuntimeFilesWritten Section = "runtime:files:written"
	RuntimeDirsRead     Section = "runtime:dirs:read"
	RuntimeDirsWritten  Section = "runtime:dirs:written"
	// Drift holds "<how>|<origin>|<path>" (DriftMember) for every file
	// that did not come with the image and was executed or mapped
	// executable: code the container wrote or downloaded at runtime.
	Drift Section = "drift"
)

// Sections lists every section.
var Sections = []Section{
	FilesRead, FilesWritten, DirsRead, DirsWritten, Exec, Mapped, TCPIn, TCPOut, UDPIn, UDPOut, Syscalls, Seeded, ExecSessions, Functions, Probed,
	RuntimeFilesRead, RuntimeFilesWritten, RuntimeDirsRead, RuntimeDirsWritten, Drift,
}

// applyOrder is Sections in the order the update script takes them: what
// puts packages in use most surely first, so that a profile reaching its
// ceiling in the middle of a flush keeps that flush's executables and
// libraries before its plain reads.
var applyOrder = slices.Concat([]Section{Exec, Mapped}, slices.DeleteFunc(slices.Clone(Sections), func(s Section) bool {
	return s == Exec || s == Mapped
}))

// SectionMember is the member of Seeded or ExecSessions that names value
// of section.
func SectionMember(section Section, value string) string { return string(section) + "|" + value }

// ParseSectionMember splits a member of Seeded or ExecSessions.
func ParseSectionMember(member string) (Section, string, bool) {
	sec, value, ok := strings.Cut(member, "|")
	return Section(sec), value, ok
}

// Set is a plain set of a profile.
type Set string

// Plain sets of a profile.
const (
	Names      Set = "names"      // image names (repo:tag) seen for the digest
	Containers Set = "containers" // container ids
	Nodes      Set = "nodes"      // node names
	// Workloads holds where the image runs, one member per (namespace,
	// workload, container name): see Workload.
	Workloads Set = "workloads"
)

var sets = []Set{Names, Containers, Nodes, Workloads}

// Fields of the meta hash.
const (
	FieldFirstSeen         = "first_seen" // unix ms
	FieldLastSeen          = "last_seen"  // unix ms
	FieldLastNew           = "last_new"   // unix ms when a section last grew
	FieldEvents            = "events"
	FieldLosses            = "losses"
	FieldPartialContainers = "partial_containers"
	FieldGuardPauses       = "guard_pauses"
	FieldRevision          = "revision"
	FieldLearningState     = "learning_state"
	FieldConfidence        = "confidence"
	FieldBytes             = "bytes"     // estimated Redis memory of the profile's members
	FieldTruncated         = "truncated" // 1 once the profile reached its ceiling (Limits.MaxBytes)
	FieldDropped           = "dropped"   // new members counted, not stored, past the ceiling
)

// Keys outside any image.
const (
	// ImagesKey sorts image digests by last seen (unix ms).
	ImagesKey = Prefix + "images"
	// NamesKey maps image names to the digest they last pointed to.
	NamesKey = Prefix + "names"
)

// Keys of the integration tokens. They share the hash tag {tokens}, so that
// the records and the hash index live in one Redis Cluster slot and change
// in one MULTI.
const (
	// TokensKey maps a token id to its record (JSON, with the secret's hash).
	TokensKey = Prefix + "{tokens}:records"
	// TokenHashesKey maps the hex SHA-256 of a secret to its token id.
	TokenHashesKey = Prefix + "{tokens}:hashes"
	// TokenLastUsedKey maps a token id to when it was last used (unix ms).
	TokenLastUsedKey = Prefix + "{tokens}:last_used"
)

// ImageKeys names the keys of one image.
type ImageKeys struct{ digest string }

// Keys returns the key names of the image with this manifest digest.
func Keys(digest string) ImageKeys { return ImageKeys{digest: digest} }

func (k ImageKeys) key(suffix string) string {
	return fmt.Sprintf("%s{%s}:%s", Prefix, k.digest, suffix)
}

// Meta is the hash of counters, times, state and confidence.
func (k ImageKeys) Meta() string { return k.key("meta") }

// Folded is the hash of counted patterns: field "<section>|<pattern>"
// (such as "runtime:files:written|/tmp/cache/*"), value the number of
// members that section did not store one by one (limits.go).
func (k ImageKeys) Folded() string { return k.key("folded") }

// Section is the sorted set of one section.
func (k ImageKeys) Section(s Section) string { return k.key(string(s)) }

// Set is one plain set.
func (k ImageKeys) Set(s Set) string { return k.key(string(s)) }

// all lists the keys in the order the update script takes them.
func (k ImageKeys) all() []string {
	keys := []string{k.Meta()}
	for _, s := range sets {
		keys = append(keys, k.Set(s))
	}
	keys = append(keys, k.Folded())
	for _, s := range applyOrder {
		keys = append(keys, k.Section(s))
	}
	return keys
}

// ValidDigest reports whether d looks like an image digest (algo:hex).
func ValidDigest(d string) bool {
	algo, hex, ok := strings.Cut(d, ":")
	return ok && algo != "" && len(hex) >= 16 && lowerHex(hex)
}

// lowerHex reports whether s is made of lowercase hex digits only.
func lowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}
