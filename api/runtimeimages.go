package api

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/scanner"
)

// Limits of the Sysdig-compatible runtimeimages endpoint.
const (
	runtimeDefaultLimit = 250
	runtimeMaxLimit     = 500
	maxCursorLen        = 2048
)

// runtimePackage is one in-use package as runtimeimages shows it.
type runtimePackage struct {
	PURL, Name, Version string
	// OS packages carry the distribution and architecture, others their
	// package type: the shape Sysdig's scrapers expect.
	OS                        bool
	Type, OSFamily, OSVersion string
	Arch                      string
}

type osPackageJSON struct {
	PURL      string `json:"purl"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	ViaPM     bool   `json:"installedViaPackageManager"`
	OSFamily  string `json:"osFamily"`
	OSVersion string `json:"osVersion"`
	Arch      string `json:"arch"`
}

type appPackageJSON struct {
	PURL    string `json:"purl"`
	Name    string `json:"name"`
	Version string `json:"version"`
	ViaPM   bool   `json:"installedViaPackageManager"`
	Type    string `json:"type"`
}

// MarshalJSON writes an OS package with osFamily, osVersion and arch and
// no type, and an application package with type only.
func (p runtimePackage) MarshalJSON() ([]byte, error) {
	var v any = appPackageJSON{p.PURL, p.Name, p.Version, false, p.Type}
	if p.OS {
		v = osPackageJSON{p.PURL, p.Name, p.Version, true, p.OSFamily, p.OSVersion, p.Arch}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the answer around it: a purl's & stays an &
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// runtimePackages lists the in-use packages of a report, in a stable order.
func runtimePackages(rep *scanner.Report) []runtimePackage {
	out := []runtimePackage{}
	for _, p := range rep.Packages {
		if p.Verdict != scanner.InUse {
			continue
		}
		rp := runtimePackage{PURL: p.PURL, Name: p.Name, Version: p.Version, OS: p.OS}
		if p.OS {
			rp.OSFamily, rp.OSVersion, rp.Arch = rep.Distro.ID, rep.Distro.Version, p.Arch
		} else {
			rp.Type = p.Type
		}
		out = append(out, rp)
	}
	slices.SortFunc(out, func(a, b runtimePackage) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version), cmp.Compare(a.PURL, b.PURL))
	})
	return out
}

// runtimePackagesJSON is ps as runtimeimages writes them.
func runtimePackagesJSON(ps []runtimePackage) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the answer around it
	// Strings and booleans only: encoding cannot fail.
	_ = enc.Encode(ps)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// RuntimeImages is the answer of runtimeimages.
type RuntimeImages struct {
	Page RuntimePage    `json:"page"`
	Data []RuntimeImage `json:"data"`
}

// RuntimePage is the cursor of a runtimeimages answer; Next is empty on
// the last page.
type RuntimePage struct {
	Returned int    `json:"returned"`
	Next     string `json:"next"`
}

// RuntimeImage is one container of one workload running an image.
type RuntimeImage struct {
	ImageID      string `json:"imageID"`
	Namespace    string `json:"namespace"`
	WorkloadName string `json:"workloadName"`
	WorkloadKind string `json:"workloadKind"`
	Container    string `json:"container"`
	// Packages is the list of in-use packages: objects with purl, name,
	// version and installedViaPackageManager, and osFamily, osVersion and
	// arch for OS packages or type for the others.
	Packages json.RawMessage `json:"packages"`
}

// runtimeImages answers GET /api/scanning/eveintegration/v2/runtimeimages.
// The cursor is the opaque key of the last entry returned; entries are
// ordered by (digest, workload), so a page boundary holds even when
// images appear or go between two requests, and every replica agrees.
// The entries are read from the runtime index in Redis, page by page
// (store.RuntimePage): a replica holds none of them between requests.
// Images without a report yet are left out: an empty package list would
// tell the scraper that nothing is in use.
//
// Scrapers written against Sysdig (Snyk's kubernetes-monitor) drop every
// entry whose workloadKind is not a Kubernetes kind, and a null kind
// stops their whole scrape: Docker, Compose and exec entries are left out
// here (GET /api/v1 shows them). Unknown query parameters are ignored, so
// that a newer client adding one still works.
func (s *Server) runtimeImages(w http.ResponseWriter, r *http.Request) error {
	w.Header().Add("Vary", "Accept-Encoding")
	q, err := query(r)
	if err != nil {
		return err
	}
	limit := runtimeDefaultLimit
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > runtimeMaxLimit {
			return errorf(http.StatusBadRequest, "limit must be an integer from 1 to %d", runtimeMaxLimit)
		}
		limit = n
	}
	after, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	out := RuntimeImages{Data: []RuntimeImage{}}
	if cluster := q.Get("clusterName"); cluster != "" && s.cfg.ClusterName != "" && cluster != s.cfg.ClusterName {
		if s.metrics.clusterMismatch(cluster, time.Now()) {
			s.log.Warn("runtimeimages asked for another cluster: the integration's cluster name differs from --cluster-name",
				"cluster_name", truncate(cluster, 100), "serving", s.cfg.ClusterName)
		}
		writeRuntimeImages(w, r, out)
		return nil
	}
	entries, next, err := s.cfg.Store.RuntimePage(r.Context(), after, limit)
	if err != nil {
		return err
	}
	for _, e := range entries {
		out.Data = append(out.Data, RuntimeImage{
			ImageID: e.Digest, Namespace: e.Workload.Namespace, WorkloadName: e.Workload.Name,
			WorkloadKind: kubernetesKinds[strings.ToLower(e.Workload.Kind)], Container: e.Workload.Container, Packages: e.Packages,
		})
	}
	out.Page.Returned = len(out.Data)
	if next != "" {
		out.Page.Next = encodeCursor(next)
	}
	writeRuntimeImages(w, r, out)
	return nil
}

// kubernetesKinds are the workload kinds a Sysdig scraper accepts, by
// their lower-case form (it lower-cases before it looks one up), with the
// spelling Kubernetes and Sysdig answer.
var kubernetesKinds = map[string]string{
	"deployment": "Deployment", "replicaset": "ReplicaSet", "statefulset": "StatefulSet",
	"daemonset": "DaemonSet", "job": "Job", "cronjob": "CronJob",
	"replicationcontroller": "ReplicationController", "deploymentconfig": "DeploymentConfig",
	"pod": "Pod", "rollout": "Rollout",
}

// writeRuntimeImages answers 200 with out, gzip-encoded when the client
// accepts it: a scrape of a large cluster is megabytes of repetitive JSON.
func writeRuntimeImages(w http.ResponseWriter, r *http.Request, out RuntimeImages) {
	body := runtimeImagesJSON(out)
	w.Header().Set("Content-Type", "application/json")
	if !acceptsGzip(r.Header) {
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		return
	}
	gz := gzipped(w)
	gz.WriteHeader(http.StatusOK)
	gz.Write(body)
	gz.Close()
}

// runtimeImageHead is a RuntimeImage without its packages.
type runtimeImageHead struct {
	ImageID      string `json:"imageID"`
	Namespace    string `json:"namespace"`
	WorkloadName string `json:"workloadName"`
	WorkloadKind string `json:"workloadKind"`
	Container    string `json:"container"`
}

// runtimeImagesJSON is out as JSON, each entry's packages copied as they
// were encoded with the report: encoding/json would check every byte of
// them again on every page, most of the time of a page.
func runtimeImagesJSON(out RuntimeImages) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // purls keep their & readable; answers are never HTML
	// Strings and integers only: encoding cannot fail.
	buf.WriteString(`{"page":`)
	_ = enc.Encode(out.Page)
	buf.WriteString(`,"data":[`)
	for i, d := range out.Data {
		if i > 0 {
			buf.WriteByte(',')
		}
		_ = enc.Encode(runtimeImageHead{d.ImageID, d.Namespace, d.WorkloadName, d.WorkloadKind, d.Container})
		buf.Truncate(buf.Len() - len("}\n"))
		buf.WriteString(`,"packages":`)
		buf.Write(d.Packages)
		buf.WriteByte('}')
	}
	buf.WriteString("]}\n")
	return buf.Bytes()
}

// cursorVersion starts every cursor, so that the format can change
// without old cursors being misread.
const cursorVersion = "v1\n"

func encodeCursor(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + key))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	bad := errorf(http.StatusBadRequest, "bad cursor: pass page.next of the previous answer")
	if len(c) > maxCursorLen {
		return "", bad
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", bad
	}
	key, ok := strings.CutPrefix(string(b), cursorVersion)
	if !ok || key == "" || !strings.Contains(key, "\n") {
		return "", bad
	}
	return key, nil
}
