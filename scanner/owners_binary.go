package scanner

// addCompiledIn: Go modules, Rust crates and classified binaries are
// compiled into the executables syft found them in.
func (b *builder) addCompiledIn(i int, locs []string) {
	for _, l := range locs {
		b.addBinary(i, l)
	}
}
