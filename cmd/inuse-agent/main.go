// Command inuse-agent is the node agent of inuse: it loads the kernel
// sensor, follows the container runtimes and folds what containers load
// into runtime profiles.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/ebpf/rlimit"
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/bpf/sensor"
	"github.com/inuse-dev/inuse/internal/cliapp"
)

// commands of inuse-agent; each lives in its own file.
var commands = []*cli.Command{runCommand, traceCommand, execCommand}

func main() {
	args, err := argsForNRI(os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inuse-agent:", err)
		os.Exit(1)
	}
	cliapp.Main(cliapp.New("inuse-agent", "observe what containers load, with eBPF", commands), args)
}

// prepareKernel does what every sensor user does once per process.
func prepareKernel(log *slog.Logger) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lifting the memlock limit: %w", err)
	}
	mounted, err := sensor.MountKernelFS()
	for _, dir := range mounted {
		log.Info("mounted missing kernel file system", "dir", dir)
	}
	if err != nil {
		// Our programs attach without tracefs or bpffs; say so and go on.
		log.Warn("kernel file systems missing", "error", err)
	}
	return nil
}
