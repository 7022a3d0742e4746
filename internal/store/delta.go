package store

// Delta is what one agent adds to one image's profile between two flushes.
type Delta struct {
	Sets map[Set]map[string]struct{}
	// Sections map members to the earliest time they were seen (unix ms).
	Sections                                       map[Section]map[string]int64
	Events, Losses, PartialContainers, GuardPauses int64
	size                                           int
}

// NewDelta returns an empty delta.
func NewDelta() *Delta {
	return &Delta{Sets: map[Set]map[string]struct{}{}, Sections: map[Section]map[string]int64{}}
}

// Add records a member of a section seen at ms; it reports whether the
// member is new to this delta.
func (d *Delta) Add(s Section, member string, ms int64) bool {
	m := d.Sections[s]
	if m == nil {
		m = map[string]int64{}
		d.Sections[s] = m
	}
	if first, ok := m[member]; ok {
		if ms < first {
			m[member] = ms
		}
		return false
	}
	m[member] = ms
	d.size++
	return true
}

// AddTo records a member of a plain set.
func (d *Delta) AddTo(s Set, member string) {
	m := d.Sets[s]
	if m == nil {
		m = map[string]struct{}{}
		d.Sets[s] = m
	}
	if _, ok := m[member]; !ok {
		m[member] = struct{}{}
		d.size++
	}
}

// Size counts the members the delta holds.
func (d *Delta) Size() int { return d.size }

// Merge adds o (which may be nil) into d.
func (d *Delta) Merge(o *Delta) {
	if o == nil {
		return
	}
	for s, m := range o.Sets {
		for v := range m {
			d.AddTo(s, v)
		}
	}
	for s, m := range o.Sections {
		for v, ms := range m {
			d.Add(s, v, ms)
		}
	}
	d.Events += o.Events
	d.Losses += o.Losses
	d.PartialContainers += o.PartialContainers
	d.GuardPauses += o.GuardPauses
}
