package sensor

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// ErrNoKernelBTF is returned by Open when the running kernel's own BTF
// cannot be read.
var ErrNoKernelBTF = errors.New("sensor needs the running kernel's BTF (/sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF=y)")

// LoadBTF reads kernel types published apart from the kernel: a raw BTF
// file (as /sys/kernel/btf/vmlinux or BTFHub's, unpacked) or an ELF with a
// .BTF section, holding vmlinux's types and those of its modules merged.
func LoadBTF(path string) (*btf.Spec, error) {
	spec, err := btf.LoadSpec(path)
	if err != nil {
		return nil, fmt.Errorf("reading BTF from %s (a raw BTF file or an ELF with .BTF): %w", path, err)
	}
	// A BPF object has BTF too, with the kernel structs it reads but
	// only its own functions.
	var fn *btf.Func
	if err := spec.TypeByName("schedule", &fn); err != nil {
		return nil, fmt.Errorf("%s holds BTF but not a kernel's (no function schedule): %w", path, err)
	}
	return spec, nil
}

// kernelBTF reads the running kernel's BTF. The sensor's programs are
// tp_btf programs, which the kernel only loads when they name their
// tracepoint by its id in the kernel's own BTF, and cilium/ebpf finds that
// id in /sys/kernel/btf/vmlinux (or a vmlinux at libbpf's places, such as
// /boot/vmlinux-RELEASE). Types from a separate file (Config.KernelBTF)
// serve the CO-RE relocations only: on a kernel without BTF of its own no
// file can stand in.
func kernelBTF() (*btf.Spec, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoKernelBTF, err)
	}
	return spec, nil
}
