package app

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// The web UI is a set of page shells rendered by html/template plus static
// ES modules that fetch everything else from the JSON API with the session
// cookie. No node, model or log text is rendered on the server: the scripts
// put it in the page with textContent only (ui_test.go checks they never use
// innerHTML), so a node named <img src=x onerror=alert(1)> stays text. The
// upstream's manage.js did not (reference/upstream.md §11.3, item 23).
//
//go:embed ui
var uiFiles embed.FS

// uiCSP keeps every script in a file served by us: no inline script, no
// eval, no third-party origin, no framing.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// uiPage is one page of the UI.
type uiPage struct {
	Name   string // template and script name
	Title  string
	Path   string // under /ui/
	Public bool   // shown without a session (login)
}

var uiPages = []uiPage{
	{Name: "dashboard", Title: "Dashboard", Path: "/ui/"},
	{Name: "nodes", Title: "Nodes", Path: "/ui/nodes"},
	{Name: "models", Title: "Models", Path: "/ui/models"},
	{Name: "settings", Title: "Settings", Path: "/ui/settings"},
	{Name: "requests", Title: "Requests", Path: "/ui/requests"},
	{Name: "logs", Title: "Logs", Path: "/ui/logs"},
	{Name: "login", Title: "Sign in", Path: "/ui/login", Public: true},
}

// uiAsset is one embedded static file, with its validator.
type uiAsset struct {
	body  []byte
	ctype string
	hash  string // first 12 hex digits of its SHA-256: ETag and ?v= value
}

type uiState struct {
	pages  map[string]*template.Template // page name → layout + page
	assets map[string]uiAsset            // path under static/ → file
}

// uiPageData is what a page template sees. Everything in it is ours (the
// build version and the deployment mode), and html/template escapes it
// anyway.
type uiPageData struct {
	Page    uiPage
	Nav     []uiPage
	Version string
	Mode    string
}

func (h *Handler) initUI() error {
	s := &uiState{pages: make(map[string]*template.Template), assets: make(map[string]uiAsset)}
	err := fs.WalkDir(uiFiles, "ui/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		s.assets[strings.TrimPrefix(p, "ui/static/")] = uiAsset{body: b, ctype: uiContentType(p), hash: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ui assets: %w", err)
	}
	funcs := template.FuncMap{
		// asset returns the URL of a static file with its content hash, so
		// the browser may cache it for good and still sees every change.
		"asset": func(name string) (string, error) {
			a, ok := s.assets[name]
			if !ok {
				return "", fmt.Errorf("no ui asset %q", name)
			}
			return "/ui/static/" + name + "?v=" + a.hash, nil
		},
	}
	for _, p := range append(uiPages, uiPage{Name: "notfound"}) {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/templates/layout.html", "ui/templates/"+p.Name+".html")
		if err != nil {
			return fmt.Errorf("ui templates: %w", err)
		}
		s.pages[p.Name] = t
	}
	h.ext.ui = s
	return nil
}

func uiContentType(name string) string {
	switch path.Ext(name) {
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".ico":
		return "image/x-icon"
	case ".json":
		return "application/json"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func (h *Handler) uiRoutes(mux *routeMux) {
	mux.Handle("GET /ui", uiHeaders(http.RedirectHandler("/ui/", http.StatusMovedPermanently)))
	for _, p := range uiPages {
		pattern := "GET " + p.Path
		if p.Path == "/ui/" {
			pattern = "GET /ui/{$}"
		}
		mux.Handle(pattern, uiHeaders(h.uiPageHandler(p)))
	}
	mux.Handle("GET /ui/static/{file...}", uiHeaders(http.HandlerFunc(h.handleUIAsset)))
	mux.Handle("GET /ui/", uiHeaders(http.HandlerFunc(h.handleUINotFound)))
}

// uiHeaders sets the security headers of every UI response.
func uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", uiCSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func (h *Handler) uiPageHandler(p uiPage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.renderUI(w, r, http.StatusOK, p.Name, p)
	})
}

func (h *Handler) handleUINotFound(w http.ResponseWriter, r *http.Request) {
	h.renderUI(w, r, http.StatusNotFound, "notfound", uiPage{Name: "notfound", Title: "Not found"})
}

// renderUI renders a page into a buffer first, so a template error becomes
// a clean 500 rather than half a page.
func (h *Handler) renderUI(w http.ResponseWriter, r *http.Request, status int, name string, p uiPage) {
	var nav []uiPage
	for _, q := range uiPages {
		if !q.Public {
			nav = append(nav, q)
		}
	}
	var buf bytes.Buffer
	err := h.ext.ui.pages[name].ExecuteTemplate(&buf, "layout.html", uiPageData{Page: p, Nav: nav, Version: h.cfg.Version, Mode: h.cfg.Mode})
	if err != nil {
		h.log.Error("render ui page", "page", name, "err", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	// The shells hold no data, but a cached shell could outlive the assets
	// it names.
	hd.Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// handleUIAsset serves an embedded static file. A request carrying the
// file's current hash (?v=, as the templates write it) may be cached for a
// year; any other is revalidated with the ETag.
func (h *Handler) handleUIAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := h.ext.ui.assets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", `"`+a.hash+`"`)
	if r.URL.Query().Get("v") == a.hash {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
