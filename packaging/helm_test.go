// Package packaging holds no Go code: its tests check the Helm chart, the
// systemd units and the Dockerfile beside them, with the real tools.
package packaging

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/inuse-dev/inuse/internal/redistest"
	"github.com/inuse-dev/inuse/internal/store"
)

// helmModule is the helm that CI runs, built from the module proxy by
// `go run` (the first build takes minutes; later runs come from the cache).
const helmModule = "helm.sh/helm/v3/cmd/helm@v3.22.0"

const chart = "helm/inuse"

// helm runs helm with args and returns its stdout, or its error with stderr.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	abs, err := filepath.Abs(chart)
	require.NoError(t, err)
	args = slices.Clone(args)
	for i, a := range args {
		if a == chart {
			args[i] = abs
		}
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", helmModule}, args...)...)
	// Outside the module: `go run pkg@version` builds helm with its own
	// go.mod, and our go.mod is never touched.
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=", "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.Join(err, errors.New(stderr.String()))
	}
	return stdout.String(), nil
}

// Minimal shapes of the rendered objects: only what the tests look at.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Port int `yaml:"port"`
		} `yaml:"ports"`
	} `yaml:"spec"`
	Data map[string]string `yaml:"data"`
}

type podSpec struct {
	HostPID         bool            `yaml:"hostPID"`
	HostNetwork     bool            `yaml:"hostNetwork"`
	SecurityContext securityContext `yaml:"securityContext"`
	Containers      []container     `yaml:"containers"`
	InitContainers  []container     `yaml:"initContainers"`
	Volumes         []struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		PersistentVolumeClaim *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
	} `yaml:"volumes"`
}

type securityContext struct {
	Privileged               *bool  `yaml:"privileged"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	Capabilities             struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Args            []string        `yaml:"args"`
	SecurityContext securityContext `yaml:"securityContext"`
	Env             []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

func (c container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// rendered is what `helm template` produced: every object, by kind/name,
// and the raw documents for checks that walk everything.
type rendered struct {
	objects map[string]object
	raw     []map[string]any
}

// names lists the objects' names.
func names(objects []object) []string {
	var out []string
	for _, o := range objects {
		out = append(out, o.Metadata.Name)
	}
	return out
}

func (r rendered) kinds(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func parse(t *testing.T, out string) rendered {
	t.Helper()
	r := rendered{objects: map[string]object{}}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		var o object
		require.NoError(t, node.Decode(&o))
		if o.Kind == "" {
			continue // an empty document
		}
		var raw map[string]any
		require.NoError(t, node.Decode(&raw))
		key := o.Kind + "/" + o.Metadata.Name
		require.NotContains(t, r.objects, key, "rendered twice")
		r.objects[key] = o
		r.raw = append(r.raw, raw)
	}
	return r
}

// walk calls f for every key/value of every map under v.
func walk(v any, f func(k string, v any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			f(k, val)
			walk(val, f)
		}
	case []any:
		for _, val := range x {
			walk(val, f)
		}
	}
}

// documentedCapabilities are the agent's capabilities as values.yaml
// lists them, each with the reason it is needed.
func documentedCapabilities(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	require.NoError(t, err)
	var v struct {
		Agent struct {
			Capabilities []string `yaml:"capabilities"`
		} `yaml:"agent"`
	}
	require.NoError(t, yaml.Unmarshal(b, &v))
	return v.Agent.Capabilities
}

// The capabilities the agent is granted, and the only ones: each is
// explained in values.yaml and in the chart's README, and
// TestAgentRunsWithChartCapabilities shows on a real kernel that the agent
// works with exactly these and fails without any one of them.
var wantCapabilities = []string{"BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_PTRACE"}

// values.yaml is strict YAML: helm keeps the last of two equal keys
// silently, which hides a setting.
func TestChartValuesHaveNoDuplicateKeys(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, yaml.Unmarshal(b, &v))
}

func TestChartDocumentsEveryCapability(t *testing.T) {
	got := documentedCapabilities(t)
	require.Empty(t, cmp.Diff(wantCapabilities, got))
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(chart, "README.md"))
	require.NoError(t, err)
	for _, c := range got {
		require.Regexp(t, `(?m)^\s*#\s+`+c+`\s+\S`, string(values), "values.yaml says why the agent needs %s", c)
		require.Contains(t, string(readme), "`CAP_"+c+"`", "the chart's README names %s", c)
	}
}

func TestHelmLintAndTemplate(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command runs helm: %v", err)
	}
	for _, tc := range []struct {
		name string
		set  []string
		// what must render
		agent, serve, redis bool
		check               func(t *testing.T, r rendered)
	}{
		{name: "defaults", agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				// TLS on: a self-signed ECDSA certificate for the Service's names.
				secret := r.objects["Secret/inuse-test-tls"]
				cert := parseCert(t, secret.Data["tls.crt"])
				require.Equal(t, x509.ECDSA, cert.PublicKeyAlgorithm)
				require.NoError(t, cert.VerifyHostname("inuse-test.inuse.svc"))
				require.NotEmpty(t, secret.Data["tls.key"])
				checkServeTLS(t, r, "inuse-test-tls")
				require.Empty(t, r.kinds("Certificate"))
			}},
		{name: "tls off", set: []string{"serve.tls.mode=off"}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				require.NotContains(t, r.objects, "Secret/inuse-test-tls")
				serve := r.objects["Deployment/inuse-test-serve"].Spec.Template.Spec
				require.NotContains(t, strings.Join(serve.Containers[0].Args, " "), "--tls")
				require.Equal(t, 80, r.objects["Service/inuse-test"].Spec.Ports[0].Port)
			}},
		{name: "tls from cert-manager", set: []string{"serve.tls.mode=cert-manager", "serve.tls.certManager.issuerRef.name=ca", "serve.tls.dnsNames={inuse.example}"}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				require.NotContains(t, r.objects, "Secret/inuse-test-tls", "cert-manager makes the Secret")
				var crt map[string]any
				for _, doc := range r.raw {
					if doc["kind"] == "Certificate" {
						crt = doc["spec"].(map[string]any)
					}
				}
				require.NotNil(t, crt, "a Certificate")
				require.Equal(t, "inuse-test-tls", crt["secretName"])
				require.Contains(t, crt["dnsNames"], "inuse-test.inuse.svc")
				require.Contains(t, crt["dnsNames"], "inuse.example")
				require.Equal(t, "ca", crt["issuerRef"].(map[string]any)["name"])
				checkServeTLS(t, r, "inuse-test-tls")
			}},
		{name: "profiling off", set: []string{"profiling.enabled=false"}, serve: true, redis: true},
		{name: "numeric image tags", set: []string{"agent.image.tag=1", "redis.image.tag=7.2"}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				// --set parses them as numbers (found on a real cluster).
				require.Equal(t, "ghcr.io/inuse-dev/inuse-agent:1", r.objects["DaemonSet/inuse-test-agent"].Spec.Template.Spec.Containers[0].Image)
			}},
		{name: "integrations off", set: []string{"integrations.enabled=false"}, agent: true, redis: true,
			check: func(t *testing.T, r rendered) {
				require.Equal(t, []string{"inuse-test-redis"}, names(r.kinds("Secret")), "no admin credential without integrations: Redis's users alone")
			}},
		{name: "both off", set: []string{"profiling.enabled=false", "integrations.enabled=false"}, redis: true},
		{name: "external redis", set: []string{"redis.enabled=false", "redis.external.url=redis://r1:7000?addr=r2:7000"}, agent: true, serve: true,
			check: func(t *testing.T, r rendered) {
				for _, key := range []string{"DaemonSet/inuse-test-agent", "Deployment/inuse-test-serve"} {
					got, _ := r.objects[key].Spec.Template.Spec.Containers[0].env("INUSE_REDIS_URL")
					require.Equal(t, "redis://r1:7000?addr=r2:7000", got, key)
				}
			}},
		{name: "existing admin secret and tls", set: []string{"serve.admin.existingSecret=ops-inuse", "serve.tls.secretName=inuse-tls"}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				require.Equal(t, []string{"inuse-test-redis"}, names(r.kinds("Secret")), "the chart makes no admin or TLS secret when one is given")
				checkServeTLS(t, r, "inuse-tls")
				serve := r.objects["Deployment/inuse-test-serve"].Spec.Template.Spec
				require.Subset(t, serve.Containers[0].Args, []string{"--tls-cert=/etc/inuse/tls/tls.crt", "--tls-key=/etc/inuse/tls/tls.key"})
				var secrets []string
				for _, v := range serve.Volumes {
					if v.Secret != nil {
						secrets = append(secrets, v.Secret.SecretName)
					}
				}
				require.ElementsMatch(t, []string{"ops-inuse", "inuse-tls"}, secrets)
			}},
		{name: "cluster name and a volume for the database", set: []string{"clusterName=prod-eu", "serve.data.existingClaim=inuse-db"}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				serve := r.objects["Deployment/inuse-test-serve"]
				got, _ := serve.Spec.Template.Spec.Containers[0].env("INUSE_CLUSTER_NAME")
				require.Equal(t, "prod-eu", got)
				var claims []string
				for _, v := range serve.Spec.Template.Spec.Volumes {
					if v.PersistentVolumeClaim != nil {
						claims = append(claims, v.Name+"="+v.PersistentVolumeClaim.ClaimName)
					}
				}
				require.Equal(t, []string{"data=inuse-db"}, claims)
			}},
		{name: "no containerd socket", set: []string{"agent.containerdSocket="}, agent: true, serve: true, redis: true,
			check: func(t *testing.T, r rendered) {
				agent := r.objects["DaemonSet/inuse-test-agent"].Spec.Template.Spec
				for _, v := range agent.Volumes {
					require.NotEqual(t, "containerd", v.Name)
				}
				got, ok := agent.Containers[0].env("INUSE_CONTAINERD_ADDRESS")
				require.True(t, ok)
				require.Empty(t, got, "an empty address turns the CRI image lookup off")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sets []string
			for _, s := range tc.set {
				sets = append(sets, "--set", s)
			}
			out, err := helm(t, append([]string{"lint", "--strict", chart}, sets...)...)
			require.NoError(t, err, "helm lint:\n%s", out)
			out, err = helm(t, append([]string{"template", "inuse-test", chart, "--namespace", "inuse"}, sets...)...)
			require.NoError(t, err)
			r := parse(t, out)

			_, agent := r.objects["DaemonSet/inuse-test-agent"]
			require.Equal(t, tc.agent, agent, "agent DaemonSet iff profiling.enabled")
			_, serve := r.objects["Deployment/inuse-test-serve"]
			require.Equal(t, tc.serve, serve, "serve Deployment iff integrations.enabled")
			_, svc := r.objects["Service/inuse-test"]
			require.Equal(t, tc.serve, svc, "serve Service iff integrations.enabled")
			_, redis := r.objects["StatefulSet/inuse-test-redis"]
			require.Equal(t, tc.redis, redis, "bundled Redis iff redis.enabled")

			// Nothing anywhere is privileged or holds CAP_SYS_ADMIN.
			for _, doc := range r.raw {
				walk(doc, func(k string, v any) {
					require.False(t, k == "privileged" && v == true, "privileged: true in %v", doc["metadata"])
					if k == "add" {
						require.NotContains(t, v, "SYS_ADMIN")
					}
				})
			}
			if agent {
				checkAgent(t, r.objects["DaemonSet/inuse-test-agent"].Spec.Template.Spec)
			}
			if serve {
				checkServe(t, r.objects["Deployment/inuse-test-serve"].Spec.Template.Spec)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// checkServeTLS checks that serve reads its certificate from secret and
// that the Service answers HTTPS on 443.
func checkServeTLS(t *testing.T, r rendered, secret string) {
	t.Helper()
	serve := r.objects["Deployment/inuse-test-serve"].Spec.Template.Spec
	require.Subset(t, serve.Containers[0].Args, []string{"--tls-cert=/etc/inuse/tls/tls.crt", "--tls-key=/etc/inuse/tls/tls.key"})
	var secrets []string
	for _, v := range serve.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			secrets = append(secrets, v.Secret.SecretName)
		}
	}
	require.Equal(t, []string{secret}, secrets)
	require.Equal(t, 443, r.objects["Service/inuse-test"].Spec.Ports[0].Port)
}

func parseCert(t *testing.T, b64 string) *x509.Certificate {
	t.Helper()
	pemBytes, err := base64.StdEncoding.DecodeString(b64)
	require.NoError(t, err)
	block, _ := pem.Decode(pemBytes)
	require.NotNil(t, block, "a PEM certificate")
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func checkAgent(t *testing.T, spec podSpec) {
	t.Helper()
	require.True(t, spec.HostPID, "the agent resolves host pids")
	require.False(t, spec.HostNetwork, "the agent needs no host network")
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	sc := c.SecurityContext
	require.Equal(t, []string{"ALL"}, sc.Capabilities.Drop)
	require.Empty(t, cmp.Diff(wantCapabilities, sc.Capabilities.Add), "capabilities exactly the documented ones")
	require.NotNil(t, sc.Privileged)
	require.False(t, *sc.Privileged)
	require.NotNil(t, sc.AllowPrivilegeEscalation)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.Equal(t, "run", c.Args[0])
	docker, _ := c.env("INUSE_DOCKER")
	require.Equal(t, "false", docker, "Kubernetes nodes are followed over NRI")
	node, ok := c.env("INUSE_NODE_NAME")
	require.True(t, ok)
	require.Empty(t, node, "node name from the downward API")

	hostPaths := map[string]string{} // volume -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounts := map[string]string{} // host path -> mount path
	for _, m := range c.VolumeMounts {
		if p, ok := hostPaths[m.Name]; ok {
			require.True(t, m.ReadOnly, "host path %s is mounted read-only", p)
			mounts[p] = m.MountPath
		}
	}
	want := map[string]string{
		"/var/run/nri":                    "/var/run/nri",
		"/run/containerd/containerd.sock": "/run/containerd/containerd.sock",
		"/sys/fs/bpf":                     "/sys/fs/bpf",
		"/sys/kernel/btf":                 "/sys/kernel/btf",
		"/sys/fs/cgroup":                  "/sys/fs/cgroup",
	}
	if _, ok := hostPaths["containerd"]; !ok {
		delete(want, "/run/containerd/containerd.sock")
	}
	require.Empty(t, cmp.Diff(want, mounts), "host paths of the agent")
}

func checkServe(t *testing.T, spec podSpec) {
	t.Helper()
	require.False(t, spec.HostPID)
	require.True(t, *spec.SecurityContext.RunAsNonRoot)
	require.Equal(t, int64(65532), *spec.SecurityContext.RunAsUser)
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	sc := c.SecurityContext
	require.True(t, *sc.RunAsNonRoot, "serve runs as non-root")
	require.Equal(t, int64(65532), *sc.RunAsUser)
	require.True(t, *sc.ReadOnlyRootFilesystem, "serve's root file system is read-only")
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []string{"ALL"}, sc.Capabilities.Drop)
	require.Empty(t, sc.Capabilities.Add)
	require.Equal(t, "serve", c.Args[0])
	require.Contains(t, c.Args, "--listen=:8080")
	var tokenFile string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--admin-token-file="); ok {
			tokenFile = v
		}
	}
	require.NotEmpty(t, tokenFile, "the admin credential comes from a file")
	_, inEnv := c.env("INUSE_ADMIN_TOKEN")
	require.False(t, inEnv, "the admin credential is not in the environment")
	mounted := false
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(tokenFile, m.MountPath+"/") && m.Name == "admin" && m.ReadOnly {
			mounted = true
		}
	}
	require.True(t, mounted, "%s is on the admin Secret's volume", tokenFile)
}

// Every variable the chart sets on the agent is one `inuse-agent run`
// reads: the agent ignores unknown variables, so a typo would silently
// fall back to a default.
func TestChartAgentEnvIsRead(t *testing.T) {
	out, err := helm(t, "template", "inuse-test", chart, "--set", "agent.metricsListen=:9090")
	require.NoError(t, err)
	agent := parse(t, out).objects["DaemonSet/inuse-test-agent"].Spec.Template.Spec.Containers[0]
	help := commandHelp(t, "inuse-agent", "run")
	require.NotEmpty(t, agent.Env)
	for _, e := range agent.Env {
		require.Contains(t, help, "[$"+e.Name+"]", "the chart sets %s on the agent, which it does not read", e.Name)
	}
	// And the values parse: with the chart's variables the agent gets as
	// far as dialling Redis (here a closed port), past every flag.
	cmd := exec.Command(binary(t, "inuse-agent"), "run")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range agent.Env {
		if e.Name != "INUSE_REDIS_URL" && e.Value != "" {
			cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
		}
	}
	cmd.Env = append(cmd.Env, "INUSE_REDIS_URL=redis://127.0.0.1:1")
	ran, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(ran), "127.0.0.1:1", "the agent stopped before Redis:\n%s", ran)
}

// cert-manager needs an issuer, and a mode the chart does not know fails.
func TestHelmTemplateTLSErrors(t *testing.T) {
	for set, want := range map[string]string{
		"serve.tls.mode=cert-manager": "needs serve.tls.certManager.issuerRef.name",
		"serve.tls.mode=auto":         "serve.tls.mode must be self-signed, cert-manager or off",
	} {
		out, err := helm(t, "template", "inuse-test", chart, "--set", set)
		require.Error(t, err, out)
		require.Contains(t, err.Error(), want)
	}
}

// A chart without Redis and without an external URL does not render: the
// agent would have nowhere to write.
func TestHelmTemplateNeedsARedis(t *testing.T) {
	out, err := helm(t, "template", "inuse-test", chart, "--set", "redis.enabled=false")
	require.Error(t, err, out)
	require.Contains(t, err.Error(), "set redis.external.url or redis.external.existingSecret")
}

// Redis as the chart configures it: an unauthenticated client is refused;
// the agent's user writes a profile and reads a probe plan, but cannot
// publish a plan nor touch integration tokens; serve's user can.
func TestChartRedisACL(t *testing.T) {
	out, err := helm(t, "template", "inuse-test", chart)
	require.NoError(t, err)
	secret := parse(t, out).objects["Secret/inuse-test-redis"]
	data := map[string]string{}
	for k, v := range secret.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		require.NoError(t, err)
		data[k] = string(b)
	}
	acl := filepath.Join(t.TempDir(), "users.acl")
	require.NoError(t, os.WriteFile(acl, []byte(data["users.acl"]), 0o600))
	srv := redistest.StartWith(t, "--aclfile", acl)
	ctx := t.Context()
	url := func(role string) string {
		return fmt.Sprintf("redis://%s:%s@%s", role, data[role+"-password"], srv.Addr())
	}
	const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	// Refused: NOPERM, or EXECABORT for a MULTI whose command was.
	noperm := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		require.Regexp(t, "NOPERM|EXECABORT", err.Error())
	}

	anonymous := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer anonymous.Close()
	err = anonymous.Get(ctx, store.TokensKey).Err()
	require.Error(t, err)
	require.Contains(t, err.Error(), "NOAUTH", "no default user")

	serve, err := store.Open(url("serve"))
	require.NoError(t, err)
	defer serve.Close()
	require.NoError(t, serve.WriteGoPlans(ctx, digest, map[string]store.GoPlan{"/app/server": {BuildID: "b"}}))
	_, _, err = store.NewTokens(serve).Create(ctx, "ci", "1mo")
	require.NoError(t, err, "serve keeps the tokens")

	agent, err := store.Open(url("agent"))
	require.NoError(t, err)
	defer agent.Close()
	d := store.NewDelta()
	d.AddTo(store.Names, "app:1")
	d.Add(store.Mapped, "/usr/lib/x86_64-linux-gnu/libssl.so.3", time.Now().UnixMilli())
	d.Add(store.ExecSessions, store.SectionMember(store.Exec, "/usr/bin/bash"), time.Now().UnixMilli())
	_, err = agent.Apply(ctx, map[string]*store.Delta{digest: d}, time.Now(), store.DefaultLearning)
	require.NoError(t, err, "the agent writes profiles")
	plans, err := agent.GoPlans(ctx, digest)
	require.NoError(t, err, "and reads plans")
	require.Contains(t, plans, "/app/server")
	noperm(t, agent.WriteGoPlans(ctx, digest, map[string]store.GoPlan{"/../../proc/self/exe": {BuildID: "b"}}))
	_, _, err = store.NewTokens(agent).Create(ctx, "forged", "1mo")
	noperm(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "agent", Password: data["agent-password"]})
	defer rdb.Close()
	noperm(t, rdb.HSet(ctx, store.TokensKey, "id", "{}").Err())
	noperm(t, rdb.Set(ctx, store.Keys(digest).Report(), "forged", 0).Err())
	noperm(t, rdb.ConfigSet(ctx, "appendonly", "no").Err())

	p, err := serve.Profile(ctx, digest, time.Now(), store.DefaultLearning)
	require.NoError(t, err)
	require.Len(t, p.Sections[store.Mapped], 1)
}
