package api

import "net/http"

// access is who may call a route.
type access int

const (
	public access = iota // no credential
	reader               // an integration token or the admin credential
	admin                // the admin credential only
)

type route struct {
	method, path string
	access       access
	handle       func(w http.ResponseWriter, r *http.Request) error
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

// routes is every route of the server: New wraps each in the middleware
// (middleware.go) and mounts it on the mux.
func (s *Server) routes() []route {
	return []route{
		{"GET", "/{$}", public, s.webIndex},
		{"GET", "/assets/{file}", public, s.webAsset},
		{"GET", "/healthz", public, s.healthz},
		{"GET", "/metrics", public, s.serveMetrics},
		{"GET", "/api/openapi.yaml", public, s.openAPI},
		{"GET", "/api/v1/images", reader, s.listImages},
		{"GET", "/api/v1/images/{ref}", reader, s.getImage},
		{"GET", "/api/v1/images/{ref}/sections/{section}", reader, s.getSection},
		{"GET", "/api/v1/images/{ref}/packages", reader, s.getPackages},
		{"GET", "/api/v1/images/{ref}/vulnerabilities", reader, s.getVulnerabilities},
		{"GET", "/api/v1/images/{ref}/openvex", reader, s.getOpenVEX},
		{"GET", "/api/v1/images/{ref}/cyclonedx", reader, s.getCycloneDX},
		// Enrich only reads the report and writes nothing, so an
		// integration token may call it.
		{"POST", "/api/v1/images/{ref}/enrich", reader, s.postEnrich},
		{"GET", "/api/v1/tokens", admin, s.listTokens},
		{"POST", "/api/v1/tokens", admin, s.createTokenHandler},
		{"POST", "/api/v1/tokens/{id}/renew", admin, s.renewToken},
		{"DELETE", "/api/v1/tokens/{id}", admin, s.deleteToken},
		{"GET", "/api/scanning/eveintegration/v2/runtimeimages", reader, s.runtimeImages},
	}
}
