package emptyprobe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/link"
)

// Probe owns the empty program and its link.
type Probe struct {
	objs emptyprobeObjects
	link link.Link
}

// Open loads and attaches the empty program.
func Open() (_ *Probe, err error) {
	p := &Probe{}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()
	if err := loadEmptyprobeObjects(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("loading empty probe: %+w", err)
	}
	if p.link, err = link.AttachTracing(link.TracingOptions{Program: p.objs.InuseEmptyExit}); err != nil {
		return nil, fmt.Errorf("attaching empty probe to sys_exit: %w", err)
	}
	return p, nil
}

// Close detaches and frees the program.
func (p *Probe) Close() error {
	var err error
	if p.link != nil {
		err = p.link.Close()
	}
	return errors.Join(err, p.objs.Close())
}
