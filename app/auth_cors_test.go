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

func TestCORS(t *testing.T) {
	t.Parallel()
	h := corsHandler(t, "https://app.example.com, https://other.example")
	serve := func(method, origin string, hdr ...string) *httptest.ResponseRecorder {
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
	t.Run("VaryEvenWhenNotAllowed", func(t *testing.T) {
		// A shared cache must not hand this answer to an allowed origin.
		for _, origin := range []string{"https://evil.example", ""} {
			if w := serve("GET", origin); !strings.Contains(w.Header().Get("Vary"), "Origin") {
				t.Errorf("origin %q: no Vary: Origin in %v", origin, w.Header())
			}
		}
	})
	t.Run("OffByDefault", func(t *testing.T) {
		h := corsHandler(t)
		r := httptest.NewRequest("OPTIONS", "/api/chat", nil)
		r.Header.Set("Origin", "https://app.example.com")
		r.Header.Set("Access-Control-Request-Method", "POST")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("CORS answered with no origins configured: %v", w.Header())
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
