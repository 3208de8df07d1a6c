package gateway

import (
	"embed"
	"fmt"
	"html"
	"net/http"
	"strings"
)

// files are served as they are in the repository: openapi.json (the API's
// OpenAPI 3.1 description) and the checkout page.
//
//go:embed openapi.json static/index.html static/checkout.js
var files embed.FS

// OpenAPI returns openapi.json, the file /openapi.json serves.
func OpenAPI() []byte {
	b, err := files.ReadFile("openapi.json")
	if err != nil {
		panic("gateway: openapi.json not embedded: " + err.Error()) // the embed directive guarantees it
	}
	return b
}

func serveStatic(name, contentType string) http.HandlerFunc {
	body, err := files.ReadFile(name)
	if err != nil {
		panic("gateway: " + name + " not embedded: " + err.Error()) // the embed directive guarantees it
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}
}

// serveProblemDoc serves the page a problem's type URI names.
func serveProblemDoc(w http.ResponseWriter, r *http.Request) {
	code := r.PathValue("code")
	for _, p := range problemTypes {
		if p.Code != code {
			continue
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		fmt.Fprintf(&b, "<!doctype html><meta charset=utf-8><title>%s</title>\n<h1>%s</h1>\n<p>HTTP %d, code <code>%s</code>.</p>\n<p>%s</p>\n",
			html.EscapeString(p.Title), html.EscapeString(p.Title), p.Status, html.EscapeString(p.Code), html.EscapeString(p.About))
		_, _ = w.Write([]byte(b.String()))
		return
	}
	writeProblem(w, problemOf(CodeNotFound), "", "no problem type "+truncate(code, 80), 0)
}
