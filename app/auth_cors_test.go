package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
)

type emptyFleet struct{}

func (emptyFleet) Nodes(context.Context) ([]fleet.Node, error) { return nil, nil }
func (emptyFleet) Settings(context.Context) (fleet.Settings, error) {
	return fleet.DefaultSettings(), nil
}

// corsHandler is the handler wrapped as the lead wires it in ServeHTTP.
func corsHandler(t *testing.T, origins ...string) http.Handler {
	t.Helper()
	h, err := New(Config{Auth: AuthConfig{CORSOrigins: origins}}, Deps{
		Fleet: emptyFleet{}, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(),
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h.withCORS(h)
}

func serveWith(h http.Handler, method, origin string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/api/chat", nil)
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestCORS(t *testing.T) {
	t.Parallel()
	h := corsHandler(t, "https://app.example.com, https://other.example")
	serve := func(method, origin string, hdr ...string) *httptest.ResponseRecorder {
		return serveWith(h, method, origin, hdr...)
	}

	t.Run("Preflight", func(t *testing.T) {
		w := serve("OPTIONS", "https://app.example.com", "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization, content-type, x-stainless-os, openai-beta, x-evil")
		if w.Code != http.StatusNoContent {
			t.Fatalf("preflight: %d %s", w.Code, w.Body)
		}
		hd := w.Header()
		if hd.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(hd.Get("Access-Control-Allow-Methods"), "POST") {
			t.Fatalf("preflight headers %v", hd)
		}
		allow := strings.ToLower(hd.Get("Access-Control-Allow-Headers"))
		for _, want := range []string{"authorization", "content-type", "x-api-key", "openai-beta", "x-stainless-os"} {
			if !strings.Contains(allow, want) {
				t.Errorf("Allow-Headers %q lacks %s", allow, want)
			}
		}
		if strings.Contains(allow, "x-evil") {
			t.Errorf("Allow-Headers %q allows an unlisted header", allow)
		}
		if hd.Get("Access-Control-Allow-Credentials") != "" {
			t.Error("credentials must never be allowed cross-origin")
		}
	})
	t.Run("SimpleRequest", func(t *testing.T) {
		w := serve("GET", "https://other.example")
		if w.Header().Get("Access-Control-Allow-Origin") != "https://other.example" || !strings.Contains(w.Header().Get("Vary"), "Origin") {
			t.Fatalf("headers %v", w.Header())
		}
	})
	t.Run("ErrDisallowedOrigin", func(t *testing.T) {
		for _, m := range []string{"OPTIONS", "POST"} {
			w := serve(m, "https://evil.example", "Access-Control-Request-Method", "POST")
			if w.Header().Get("Access-Control-Allow-Origin") != "" || w.Code == http.StatusNoContent {
				t.Fatalf("%s from a foreign origin: %d %v", m, w.Code, w.Header())
			}
		}
	})
	t.Run("ErrDisallowedOriginWrites", func(t *testing.T) {
		// A page elsewhere can POST text/plain without a preflight: the
		// proxy refuses it before any node sees it, in the route's shape.
		for path, shape := range map[string]string{"/api/pull": `{"error":"cross-origin`, "/v1/chat/completions": `"message":"cross-origin`} {
			r := httptest.NewRequest("POST", path, strings.NewReader(`{"model":"llama3"}`))
			r.Header.Set("Origin", "https://evil.example")
			r.Header.Set("Content-Type", "text/plain;charset=UTF-8")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), shape) || !strings.Contains(w.Body.String(), "evil.example") {
				t.Errorf("POST %s from a foreign origin: %d %s", path, w.Code, w.Body)
			}
		}
		// The same origin as the proxy (its web UI), reads, and callers that
		// are not browsers get through to the route (here: no nodes, 503).
		// So do requests with a bearer token or an API key, which a page
		// cannot add without a preflight; not Basic credentials, which a
		// browser adds to a cross-site form post by itself.
		for _, c := range []struct{ method, origin, site, header, value string }{
			{"POST", "http://proxy.internal:8000", "same-origin", "", ""},
			{"POST", "http://proxy.internal:8000", "", "", ""},
			{"POST", "", "", "", ""},
			{"GET", "https://evil.example", "cross-site", "", ""},
			{"POST", "https://evil.example", "cross-site", "Authorization", "Bearer aivx_token"},
			{"POST", "https://evil.example", "cross-site", "X-API-Key", "aivx_key"},
			{"POST", "https://evil.example", "cross-site", "Authorization", "Basic dXNlcjpwYXNz"},
		} {
			r := httptest.NewRequest(c.method, "http://proxy.internal:8000/api/chat", strings.NewReader(`{"model":"llama3"}`))
			if c.origin != "" {
				r.Header.Set("Origin", c.origin)
			}
			if c.site != "" {
				r.Header.Set("Sec-Fetch-Site", c.site)
			}
			if c.header != "" {
				r.Header.Set(c.header, c.value)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if refused := w.Code == http.StatusForbidden; refused != strings.HasPrefix(c.value, "Basic") {
				t.Errorf("%+v: %d %s", c, w.Code, w.Body)
			}
		}
	})
	t.Run("VaryEvenWhenNotAllowed", func(t *testing.T) {
		// A shared cache must not hand this answer to an allowed origin.
		for _, origin := range []string{"https://evil.example", ""} {
			if w := serve("GET", origin); !strings.Contains(w.Header().Get("Vary"), "Origin") {
				t.Errorf("origin %q: no Vary: Origin in %v", origin, w.Header())
			}
		}
	})
	t.Run("OllamaDefaults", func(t *testing.T) {
		// With nothing configured, what Ollama allows: local pages on any
		// port and desktop apps, and nothing else.
		h := corsHandler(t)
		for origin, allowed := range map[string]bool{
			"http://localhost:3000": true, "https://127.0.0.1": true, "http://0.0.0.0:8080": true,
			"app://obsidian.md": true, "tauri://localhost": true, "vscode-webview://abc": true,
			"https://evil.example": false, "http://localhost.evil.example": false, "chrome-extension://abc": false,
			"http://127.0.0.1.evil.example:80": false,
		} {
			r := httptest.NewRequest("OPTIONS", "/api/chat", nil)
			r.Header.Set("Origin", origin)
			r.Header.Set("Access-Control-Request-Method", "POST")
			r.Header.Set("Access-Control-Request-Headers", "content-type, x-requested-with")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get("Access-Control-Allow-Origin")
			if allowed && (got != origin || w.Code != http.StatusNoContent || !strings.Contains(strings.ToLower(w.Header().Get("Access-Control-Allow-Headers")), "x-requested-with")) {
				t.Errorf("%s: %d %v, want a preflight that allows it", origin, w.Code, w.Header())
			}
			if !allowed && got != "" {
				t.Errorf("%s allowed by default: %v", origin, w.Header())
			}
		}
	})
	t.Run("Patterns", func(t *testing.T) {
		h := corsHandler(t, "https://*.example.com,chrome-extension://*")
		for origin, allowed := range map[string]bool{
			"https://chat.example.com": true, "chrome-extension://abcdef": true, "http://localhost:5173": true,
			"https://example.com.evil.example": false, "http://chat.example.com": false,
		} {
			if got := serveWith(h, "GET", origin).Header().Get("Access-Control-Allow-Origin"); (got == origin) != allowed {
				t.Errorf("%s: Allow-Origin %q, allowed %v", origin, got, allowed)
			}
		}
	})
	t.Run("AnyOrigin", func(t *testing.T) {
		h := corsHandler(t, "*")
		r := httptest.NewRequest("GET", "/api/tags", nil)
		r.Header.Set("Origin", "https://anything.example")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("headers %v", w.Header())
		}
	})
}
