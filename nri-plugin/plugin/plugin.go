// Package plugin is inuse's NRI plugin, a discovery source of the agent:
// when containerd starts a container, before its first instruction, it
// describes the container (cgroup, image, pod) and hands it to the agent's
// lifecycle.Tracker, which tracks its cgroup at once.
//
// Handlers never block or fail a container: they resolve the cgroup, hand
// it over, and return; whatever fails is counted.
package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"

	"github.com/inuse-dev/inuse/internal/cgroups"
	"github.com/inuse-dev/inuse/internal/lifecycle"
	"github.com/inuse-dev/inuse/internal/logfields"
)

// Name is the plugin's NRI name.
const Name = "inuse"

// DefaultSocket is where containerd serves NRI.
const DefaultSocket = "/var/run/nri/nri.sock"

// DefaultIndex orders inuse among the plugins: early, so that it sees a
// container before plugins that may change it.
const DefaultIndex = "05"

// Stats count what the handlers could not do.
type Stats struct {
	Started       atomic.Uint64 // containers tracked at StartContainer
	Synced        atomic.Uint64 // containers tracked at Synchronize
	TrackFailures atomic.Uint64 // cgroup not found or not trackable
	Dropped       atomic.Uint64 // lifecycle events dropped: queue full
	Connections   atomic.Uint64 // times the plugin (re)connected to the runtime
}

// ImageDigests finds the digest of an image by name.
type ImageDigests interface {
	Digest(ctx context.Context, image string) (string, error)
}

// Plugin handles containerd's NRI events.
type Plugin struct {
	log     *slog.Logger
	tracker lifecycle.Tracker
	h       cgroups.Hierarchy
	// Images, when set, names the digest of images that the runtime's
	// events do not carry.
	Images ImageDigests
	Stats  Stats
}

// New returns a plugin that hands the containers of cgroup hierarchy h to t.
func New(log *slog.Logger, t lifecycle.Tracker, h cgroups.Hierarchy) *Plugin {
	return &Plugin{log: log.With(logfields.Component, "nri"), tracker: t, h: h}
}

var (
	_ stub.SynchronizeInterface     = (*Plugin)(nil)
	_ stub.StartContainerInterface  = (*Plugin)(nil)
	_ stub.StopContainerInterface   = (*Plugin)(nil)
	_ stub.RemoveContainerInterface = (*Plugin)(nil)
)

// Synchronize tracks the containers that run already; they are partial:
// what they loaded before now was not seen.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	byID := map[string]*api.PodSandbox{}
	for _, pod := range pods {
		byID[pod.GetId()] = pod
	}
	for _, c := range ctrs {
		if c.GetState() != api.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if p.track(byID[c.GetPodSandboxId()], c, true) {
			p.Stats.Synced.Add(1)
		}
	}
	return nil, nil
}

// StartContainer runs after the container's cgroup exists and before its
// process runs: tracking it here misses nothing.
func (p *Plugin) StartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	if p.track(pod, c, false) {
		p.Stats.Started.Add(1)
	}
	return nil
}

// StopContainer untracks the container.
func (p *Plugin) StopContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.stop(pod, c)
	return nil, nil
}

// RemoveContainer untracks the container, for runtimes that skip Stop.
func (p *Plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.stop(pod, c)
	return nil
}

func (p *Plugin) stop(pod *api.PodSandbox, c *api.Container) {
	ctr, err := p.describe(pod, c)
	if err != nil {
		return // its cgroup is gone; it was untracked with it
	}
	if errors.Is(p.tracker.Stopped(ctr), lifecycle.ErrQueueFull) {
		p.Stats.Dropped.Add(1)
	}
}

// track hands the container to the tracker; false when it could not.
func (p *Plugin) track(pod *api.PodSandbox, c *api.Container, partial bool) bool {
	ctr, err := p.describe(pod, c)
	if err == nil {
		ctr.Partial = partial
		err = p.tracker.Started(ctr)
	}
	switch {
	case errors.Is(err, lifecycle.ErrQueueFull):
		p.Stats.Dropped.Add(1) // tracked: its events wait for a later resync
		return true
	case err != nil:
		p.Stats.TrackFailures.Add(1)
		p.log.Warn("cannot track container", logfields.ContainerID, c.GetId(), logfields.Error, err)
		return false
	}
	return true
}

// describe builds the container's identity and finds its cgroup.
func (p *Plugin) describe(pod *api.PodSandbox, c *api.Container) (lifecycle.Container, error) {
	cgPath := c.GetLinux().GetCgroupsPath()
	if cgPath == "" {
		return lifecycle.Container{}, errors.New("container has no cgroups path")
	}
	cgDir := CgroupDir(cgPath)
	id, err := cgroups.ID(p.h.Path(cgDir))
	if err != nil {
		return lifecycle.Container{}, err
	}
	ctr := lifecycle.Container{
		ID: c.GetId(), Name: c.GetName(), Runtime: lifecycle.RuntimeContainerd,
		Image: image(c), CgroupPath: cgDir, CgroupID: id,
	}
	if ctr.Image.Digest == "" && ctr.Image.Name != "" && p.Images != nil {
		if d, err := p.Images.Digest(context.Background(), ctr.Image.Name); err == nil {
			ctr.Image.Digest = d
		} else {
			p.log.Warn("no digest for image", logfields.Image, ctr.Image.Name, logfields.Error, err)
		}
	}
	if pod != nil {
		ctr.Pod = lifecycle.Pod{Name: pod.GetName(), Namespace: pod.GetNamespace(), UID: pod.GetUid()}
		ctr.Workload = workload(pod)
	}
	return ctr, nil
}

// CRI annotations that name the image on runtimes whose NRI carries no
// image field.
const (
	annotationImageName = "io.kubernetes.cri.image-name"
	annotationImageRef  = "io.kubernetes.cri.image-ref"
)

func image(c *api.Container) lifecycle.Image {
	img := lifecycle.Image{Name: c.GetImage().GetName(), Digest: c.GetImage().GetDigest(), ID: c.GetImage().GetConfigDigest()}
	if img.Name == "" {
		img.Name = c.GetAnnotations()[annotationImageName]
	}
	if img.Digest == "" {
		// image-ref is "name@sha256:..." or the image id
		ref := c.GetAnnotations()[annotationImageRef]
		if _, d, ok := strings.Cut(ref, "@"); ok {
			img.Digest = d
		} else {
			img.Digest = ref
		}
	}
	return img
}

// CgroupDir turns an OCI cgroupsPath into a path under the hierarchy: the
// cgroupfs form is one already; the systemd form "slice:prefix:name" is
// expanded as runc does ("a-b.slice" nests in "a.slice").
func CgroupDir(cgroupsPath string) string {
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 || strings.HasPrefix(cgroupsPath, "/") {
		return cgroupsPath
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	dir := "/"
	if slice != "" && slice != "-.slice" {
		stem := strings.TrimSuffix(slice, ".slice")
		acc := ""
		for i, part := range strings.Split(stem, "-") {
			if i == 0 {
				acc = part
			} else {
				acc += "-" + part
			}
			dir = path.Join(dir, acc+".slice")
		}
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		unit = name + ".scope"
		if prefix != "" {
			unit = prefix + "-" + unit
		}
	}
	return path.Join(dir, unit)
}

// LaunchedByRuntime reports whether the runtime launched this process as
// a pre-registered plugin, connected by a socket it handed over.
func LaunchedByRuntime() bool { return os.Getenv(api.PluginSocketEnvVar) != "" }

// Options configure the connection to the runtime.
type Options struct {
	// Socket is the runtime's NRI socket.
	Socket string
	// Index is the plugin index. NRI sets NRI_PLUGIN_IDX for plugins it
	// launches; a plugin that connects by itself defaults to DefaultIndex.
	Index string
	// Retry is the wait between reconnection attempts.
	Retry time.Duration
}

// Run connects to the runtime and serves NRI events until ctx ends. When
// the runtime goes away (a containerd restart), it reconnects; the
// runtime's Synchronize then resyncs the running containers.
func (p *Plugin) Run(ctx context.Context, opts Options) error {
	if LaunchedByRuntime() {
		// On a socket of the runtime's: it launches the plugin again when
		// it comes back.
		if err := p.serve(ctx, opts); ctx.Err() == nil {
			return err
		}
		return nil
	}
	return lifecycle.Reconnect(ctx, p.log, cmp.Or(opts.Retry, time.Second), func(ctx context.Context) error { return p.serve(ctx, opts) })
}

func (p *Plugin) serve(ctx context.Context, opts Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stubOpts := []stub.Option{
		stub.WithPluginName(Name),
		stub.WithSocketPath(opts.Socket),
		stub.WithLogger(nriLogger{p.log}),
		stub.WithOnClose(cancel),
	}
	if idx := opts.Index; idx != "" || os.Getenv("NRI_PLUGIN_IDX") == "" {
		stubOpts = append(stubOpts, stub.WithPluginIdx(cmp.Or(idx, DefaultIndex)))
	}
	s, err := stub.New(p, stubOpts...)
	if err != nil {
		return fmt.Errorf("creating NRI stub: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("connecting to NRI at %s: %w", opts.Socket, err)
	}
	p.Stats.Connections.Add(1)
	p.log.Info("connected to the runtime over NRI", "socket", opts.Socket)
	served := make(chan struct{})
	go func() { s.Wait(); close(served) }()
	select {
	case <-ctx.Done(): // ours, or the connection closed (WithOnClose)
	case <-served: // the runtime went away
	}
	s.Stop()
	return errors.New("runtime closed the NRI connection")
}

// nriLogger sends the stub's own logs into slog.
type nriLogger struct{ l *slog.Logger }

func (n nriLogger) Debugf(ctx context.Context, f string, a ...any) {
	n.l.DebugContext(ctx, fmt.Sprintf(f, a...))
}
func (n nriLogger) Infof(ctx context.Context, f string, a ...any) {
	n.l.DebugContext(ctx, fmt.Sprintf(f, a...))
}
func (n nriLogger) Warnf(ctx context.Context, f string, a ...any) {
	n.l.WarnContext(ctx, fmt.Sprintf(f, a...))
}
func (n nriLogger) Errorf(ctx context.Context, f string, a ...any) {
	n.l.ErrorContext(ctx, fmt.Sprintf(f, a...))
}
