package main

import (
	"cmp"
	"fmt"
	"os"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/inuse-dev/inuse/nri-plugin/plugin"
)

// NRI launches the plugins it finds in its plugin directory
// (/opt/nri/plugins/05-inuse) with a pre-connected socket, no arguments,
// and these variables.
const (
	envNRIPluginName = "NRI_PLUGIN_NAME"
	envNRIPluginIdx  = "NRI_PLUGIN_IDX"
)

// globalFlags go before the command.
var globalFlags = []string{"log-level", "log-format"}

// argsForNRI turns a plugin launch by NRI into `inuse-agent run` with the
// settings of the plugin's configuration file: a YAML map of run's flags
// (redis: redis://..., node-name: ..., max-cpu: 0.5). The file is
// /etc/nri/conf.d/<idx>-<name>.conf, the one containerd hands to the
// plugin, or INUSE_NRI_CONFIG.
func argsForNRI(args []string) ([]string, error) {
	if !plugin.LaunchedByRuntime() || len(args) > 1 {
		return args, nil
	}
	path := cmp.Or(os.Getenv("INUSE_NRI_CONFIG"),
		fmt.Sprintf("/etc/nri/conf.d/%s-%s.conf", os.Getenv(envNRIPluginIdx), os.Getenv(envNRIPluginName)))
	conf := map[string]any{}
	b, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, fmt.Errorf("reading NRI plugin configuration: %w", err)
	default:
		if err := yaml.Unmarshal(b, &conf); err != nil {
			return nil, fmt.Errorf("parsing NRI plugin configuration %s: %w", path, err)
		}
	}
	global, local := []string{args[0]}, []string{"run", "--docker=false"}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range conf {
			if !yield(k) {
				return
			}
		}
	}) {
		flag := fmt.Sprintf("--%s=%v", k, conf[k])
		if slices.Contains(globalFlags, k) {
			global = append(global, flag)
		} else {
			local = append(local, flag)
		}
	}
	return append(global, local...), nil
}
