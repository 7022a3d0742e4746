package cliapp

import (
	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/store"
)

// RedisFlag names the profile store, in every command that uses it.
var RedisFlag = &cli.StringFlag{
	Name: "redis", EnvVars: []string{"INUSE_REDIS_URL"},
	Usage: "profile store: redis://host:port, or redis://host:port?addr=host2:port&addr=... for a cluster",
}

// LearningFlags set when a profile is done; readers and writers use the same.
var LearningFlags = []cli.Flag{
	&cli.DurationFlag{Name: "min-observed", Value: store.DefaultLearning.MinObserved, EnvVars: []string{"INUSE_MIN_OBSERVED"}, Usage: "least observed time before a profile is done"},
	&cli.DurationFlag{Name: "stable-window", Value: store.DefaultLearning.StableWindow, EnvVars: []string{"INUSE_STABLE_WINDOW"}, Usage: "how long nothing new must appear before a profile is done"},
}

// Learning reads LearningFlags.
func Learning(c *cli.Context) store.LearningConfig {
	return store.LearningConfig{MinObserved: c.Duration("min-observed"), StableWindow: c.Duration("stable-window")}
}

// OpenStore connects to the store named by RedisFlag and checks that it answers.
func OpenStore(c *cli.Context) (*store.Store, error) {
	url := c.String(RedisFlag.Name)
	if url == "" {
		return nil, cli.Exit("no profile store: set --redis or INUSE_REDIS_URL", 2)
	}
	return store.Connect(c.Context, url)
}
