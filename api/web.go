package api

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
)

// openapiSpec is the API's description, served as is.
//
//go:embed openapi.yaml
var openapiSpec []byte

// web is the page: plain HTML, CSS and JavaScript, no external assets.
//
//go:embed web
var web embed.FS

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openapiSpec)
	return nil
}

func (s *Server) webIndex(w http.ResponseWriter, r *http.Request) error {
	b, err := web.ReadFile("web/index.html")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
	return nil
}

func (s *Server) webAsset(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	b, err := fs.ReadFile(web, "web/"+name)
	if err != nil || name == "index.html" {
		return errorf(http.StatusNotFound, "no such asset")
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Write(b)
	return nil
}
