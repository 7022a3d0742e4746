package scanner

import "github.com/inuse-dev/inuse/internal/store"

// ProfileSections are the sections of a profile that verdicts read: the
// image's loaded files, which of them were read from /proc, and the Go
// functions that ran and were probed. A reader of a profile for a report
// reads only these (store.ProfileSections), not the bounded runtime
// sections, whatever they hold.
var ProfileSections = []store.Section{store.Exec, store.Mapped, store.FilesRead, store.Seeded, store.ExecSessions, store.Functions, store.Probed}
