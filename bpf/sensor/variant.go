package sensor

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Variant is the build of the sensor's programs that the kernel can load,
// chosen once at Open. All are built from the same C sources (gen.go).
type Variant string

const (
	// VariantCgroupStorage (Linux 6.2 and later): tracked cgroups keep their
	// state in cgroup storage, files are read through bpf_rdonly_cast.
	VariantCgroupStorage Variant = "cgroup_storage"
	// VariantHashMap (5.17 to 6.1): no kfuncs and no cgroup storage; the
	// state of a tracked cgroup is in a hash map by cgroup id, deleted when
	// the cgroup is removed, and files are read with bpf_probe_read_kernel.
	VariantHashMap Variant = "hash_map"
	// VariantLegacy (5.8 to 5.16): VariantHashMap without bpf_loop and
	// bpf_find_vma either; paths are walked in a bounded loop of
	// MaxPathDepthLegacy components, and the ELF loader is found in the
	// task's VMA list.
	VariantLegacy Variant = "legacy"
)

// MaxPathDepthLegacy is how many components of a path VariantLegacy walks
// (MAX_PATH_DEPTH in path.h); deeper paths are reported truncated.
const MaxPathDepthLegacy = 64

// HashMapState says whether cgroup2 state is in a hash map by cgroup id.
func (v Variant) HashMapState() bool { return v != VariantCgroupStorage }

// ErrNoVariant is returned by Open when the kernel has none of the sensor's
// requirements.
var ErrNoVariant = errors.New("sensor: no variant fits this kernel")

// chooseVariant probes the kernel once for what each variant needs.
func chooseVariant() (Variant, error) {
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return "", fmt.Errorf("sensor needs BPF ring buffers (Linux 5.8 or later): %w", err)
	}
	if features.HaveMapType(ebpf.CgroupStorage) == nil {
		return VariantCgroupStorage, nil
	}
	if features.HaveProgramHelper(ebpf.Kprobe, asm.FnLoop) == nil &&
		features.HaveProgramHelper(ebpf.Kprobe, asm.FnFindVma) == nil {
		return VariantHashMap, nil
	}
	return VariantLegacy, nil
}

// loadVariant returns the collection spec of a variant.
func loadVariant(v Variant) (*ebpf.CollectionSpec, error) {
	switch v {
	case VariantCgroupStorage:
		return loadSensor()
	case VariantHashMap:
		return loadSensorcompat()
	case VariantLegacy:
		return loadSensorlegacy()
	}
	return nil, fmt.Errorf("%w: %q", ErrNoVariant, v)
}

// Features is what the loaded sensor runs with, for logs and metrics.
type Features struct {
	Variant Variant
	// CgroupState is where a tracked cgroup's state lives: cgroup_storage,
	// hash_map (cgroup2 without cgroup storage) or v1_slots.
	CgroupState string
	// PathWalk is bpf_loop, or bounded_loop (MaxPathDepthLegacy steps).
	PathWalk string
	// Loader is how the ELF loader of an exec is found: bpf_find_vma or
	// vma_list.
	Loader string
	// FileReads is rdonly_cast (plain loads) or probe_read.
	FileReads string
}

func featuresOf(v Variant, v1 bool) Features {
	f := Features{Variant: v, CgroupState: "cgroup_storage", PathWalk: "bpf_loop", Loader: "bpf_find_vma", FileReads: "rdonly_cast"}
	if v != VariantCgroupStorage {
		f.CgroupState, f.FileReads = "hash_map", "probe_read"
	}
	if v == VariantLegacy {
		f.PathWalk, f.Loader = "bounded_loop", "vma_list"
	}
	if v1 {
		f.CgroupState = "v1_slots"
	}
	return f
}
