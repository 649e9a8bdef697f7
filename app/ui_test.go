package app

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
)

// uiFleet, uiStatuses and uiInFlight are the least the handler needs to
// serve the UI: the pages themselves read nothing.
type uiFleet struct{}

func (uiFleet) Nodes(context.Context) ([]fleet.Node, error)      { return nil, nil }
func (uiFleet) Settings(context.Context) (fleet.Settings, error) { return fleet.DefaultSettings(), nil }

type uiStatuses struct{}

func (uiStatuses) Statuses(context.Context) ([]fleet.Status, error)     { return nil, nil }
func (uiStatuses) MarkUnreachable(context.Context, int64, string) error { return nil }

type uiInFlight struct{}

func (uiInFlight) Acquire(context.Context, []int64) (int, func(), error) { return 0, func() {}, nil }
func (uiInFlight) Counts(context.Context, []int64) (map[int64]int, error) {
	return nil, nil
}

func newUIHandler(t *testing.T, cfg Config) *Handler {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := New(cfg, Deps{Fleet: uiFleet{}, Statuses: uiStatuses{}, InFlight: uiInFlight{}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func uiGet(t *testing.T, h http.Handler, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func uiBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "same-origin",
		"X-Frame-Options":        "DENY",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy = %q, want default-src 'self' and nothing unsafe", csp)
	}
}

var (
	scriptTag = regexp.MustCompile(`(?is)<script\b[^>]*>`)
	srcAttr   = regexp.MustCompile(`\bsrc="(/ui/static/[^"?]+)\?v=([0-9a-f]{12})"`)
	inlineOn  = regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	styleAttr = regexp.MustCompile(`(?i)\sstyle\s*=`)
)

func TestUIPages(t *testing.T) {
	h := newUIHandler(t, Config{Version: "1.2.3"})
	for _, p := range uiPages {
		t.Run(p.Name, func(t *testing.T) {
			resp := uiGet(t, h, p.Path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d", p.Path, resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			checkSecurityHeaders(t, resp)
			html := uiBody(t, resp)
			if !strings.Contains(html, "<title>"+p.Title+" · Aivonx</title>") {
				t.Errorf("title of %s missing", p.Name)
			}
			if !strings.Contains(html, "Aivonx 1.2.3") {
				t.Error("version missing from the footer")
			}
			// Every script is a file (the CSP allows no inline script), and
			// names an asset that exists, with its current hash.
			tags := scriptTag.FindAllString(html, -1)
			if len(tags) != 2 {
				t.Errorf("want 2 script tags (theme + page module), got %q", tags)
			}
			for _, tag := range tags {
				m := srcAttr.FindStringSubmatch(tag)
				if m == nil {
					t.Errorf("script without a versioned src: %s", tag)
					continue
				}
				a, ok := h.ext.ui.assets[strings.TrimPrefix(m[1], "/ui/static/")]
				if !ok || a.hash != m[2] {
					t.Errorf("script %s: no such asset or stale hash", m[1])
				}
			}
			if !strings.Contains(html, `src="/ui/static/js/`+p.Name+`.js?v=`) {
				t.Errorf("page module js/%s.js not referenced", p.Name)
			}
			if inlineOn.MatchString(html) || styleAttr.MatchString(html) {
				t.Error("inline event handler or style attribute: the CSP blocks them")
			}
			if !p.Public && !strings.Contains(html, `aria-current="page"`) {
				t.Error("no active nav link")
			}
		})
	}
}

func TestUIRedirect(t *testing.T) {
	h := newUIHandler(t, Config{})
	resp := uiGet(t, h, "/ui")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui = %d to %q, want 301 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestUINotFound(t *testing.T) {
	h := newUIHandler(t, Config{})
	for _, path := range []string{"/ui/nope", "/ui/nodes/extra", "/ui/static/js/missing.js", "/ui/static/"} {
		resp := uiGet(t, h, path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
		checkSecurityHeaders(t, resp)
	}
}

func TestUIAssets(t *testing.T) {
	h := newUIHandler(t, Config{})
	wantType := map[string]string{
		"js/lib.js":      "text/javascript; charset=utf-8",
		"js/theme.js":    "text/javascript; charset=utf-8",
		"css/app.css":    "text/css; charset=utf-8",
		"favicon.svg":    "image/svg+xml",
		"js/models.js":   "text/javascript; charset=utf-8",
		"js/logs.js":     "text/javascript; charset=utf-8",
		"js/nodes.js":    "text/javascript; charset=utf-8",
		"js/login.js":    "text/javascript; charset=utf-8",
		"js/settings.js": "text/javascript; charset=utf-8",
	}
	for name, ct := range wantType {
		a, ok := h.ext.ui.assets[name]
		if !ok {
			t.Errorf("asset %s missing", name)
			continue
		}
		resp := uiGet(t, h, "/ui/static/"+name)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d", name, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != ct {
			t.Errorf("%s: Content-Type = %q, want %q", name, got, ct)
		}
		checkSecurityHeaders(t, resp)
		if b := uiBody(t, resp); b != string(a.body) {
			t.Errorf("%s: body differs from the embedded file", name)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("%s without ?v: Cache-Control = %q, want no-cache", name, cc)
		}
		etag := resp.Header.Get("ETag")
		if resp := uiGet(t, h, "/ui/static/"+name, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match %s = %d, want 304", name, etag, resp.StatusCode)
		}
		resp = uiGet(t, h, "/ui/static/"+name+"?v="+a.hash)
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("%s with its hash: Cache-Control = %q, want immutable", name, cc)
		}
	}
}

// TestUIScriptsNoHTMLSinks is the escaping guarantee of the UI: all node,
// model and log text is rendered client-side, so no script may hand data
// to an HTML parser. (The browser test adds a node named
// <img src=x onerror=alert(1)> and checks it shows as text.)
func TestUIScriptsNoHTMLSinks(t *testing.T) {
	sinks := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\s*\(|\bsrcdoc\b|createContextualFragment|DOMParser|setAttribute\(\s*["']on|javascript:`)
	importRe := regexp.MustCompile(`from\s+"\./([^"]+)"`)
	n := 0
	err := fs.WalkDir(uiFiles, "ui/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".js") {
			return err
		}
		n++
		b, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			code := line
			if j := strings.Index(code, "//"); j >= 0 && !strings.Contains(code[:j], `"`) {
				code = code[:j]
			}
			if m := sinks.FindString(code); m != "" {
				t.Errorf("%s:%d uses %s: build elements with textContent/createElement instead", p, i+1, m)
			}
		}
		for _, m := range importRe.FindAllStringSubmatch(string(b), -1) {
			if _, err := fs.Stat(uiFiles, "ui/static/js/"+m[1]); err != nil {
				t.Errorf("%s imports missing module %s", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 8 {
		t.Fatalf("scanned %d scripts, want every page's", n)
	}
}

// TestUITemplateEscaping renders the one value the server puts in a page
// (the version) as markup: html/template must show it as text.
func TestUITemplateEscaping(t *testing.T) {
	const evil = `<img src=x onerror=alert(1)>`
	h := newUIHandler(t, Config{Version: evil, Mode: `"><script>alert(2)</script>`})
	for _, p := range uiPages {
		html := uiBody(t, uiGet(t, h, p.Path))
		if strings.Contains(html, evil) || strings.Contains(html, "<script>alert") {
			t.Errorf("%s: raw markup from data in the page", p.Name)
		}
		if !strings.Contains(html, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: version not shown escaped", p.Name)
		}
	}
}
