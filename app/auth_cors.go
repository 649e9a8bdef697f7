package app

import (
	"net/http"
	"strings"
)

// corsPolicy answers browsers of allowed origins itself: preflights never
// reach a node, and other origins get no CORS headers at all. Credentials
// (cookies) are never allowed cross-origin: browser clients authenticate
// with an API key or a bearer token.
type corsPolicy struct {
	any     bool
	origins map[string]bool
}

func newCORSPolicy(origins []string) corsPolicy {
	p := corsPolicy{origins: map[string]bool{}}
	for _, o := range origins {
		for _, o := range strings.Split(o, ",") {
			o = strings.TrimRight(strings.TrimSpace(o), "/")
			switch o {
			case "":
			case "*":
				p.any = true
			default:
				p.origins[strings.ToLower(o)] = true
			}
		}
	}
	return p
}

func (p corsPolicy) enabled() bool { return p.any || len(p.origins) > 0 }

func (p corsPolicy) allows(origin string) bool {
	return origin != "" && (p.any || p.origins[strings.ToLower(origin)])
}

const (
	corsMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
	corsMaxAge  = "600"
	corsExpose  = "X-Request-Id, Retry-After, X-Aivonx-Version"
)

// corsHeaderAllowed lists the request headers browsers may send: what the
// Ollama and OpenAI clients send (the openai package adds x-stainless-*).
func corsHeaderAllowed(name string) bool {
	switch name = strings.ToLower(strings.TrimSpace(name)); name {
	case "authorization", "content-type", "x-api-key", "openai-beta", "openai-organization", "openai-project",
		"x-request-id", "accept", "accept-language", "content-language", "user-agent":
		return true
	}
	return strings.HasPrefix(name, "x-stainless-")
}

// withCORS wraps the whole handler with the Auth.CORSOrigins policy. With
// no origins configured it returns next unchanged.
func (h *Handler) withCORS(next http.Handler) http.Handler {
	p := h.ext.auth.cors
	if !p.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer depends on Origin, an allowed one or not: without
		// Vary a shared cache could serve an answer without CORS headers
		// to an allowed origin.
		hdr := w.Header()
		hdr.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if !p.allows(origin) {
			next.ServeHTTP(w, r)
			return
		}
		if p.any {
			hdr.Set("Access-Control-Allow-Origin", "*")
		} else {
			hdr.Set("Access-Control-Allow-Origin", origin)
		}
		if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
			hdr.Set("Access-Control-Expose-Headers", corsExpose)
			next.ServeHTTP(w, r)
			return
		}
		// A preflight: answered here, never forwarded.
		hdr.Add("Vary", "Access-Control-Request-Method")
		hdr.Add("Vary", "Access-Control-Request-Headers")
		hdr.Set("Access-Control-Allow-Methods", corsMethods)
		allowed := []string{"Authorization", "Content-Type", "X-API-Key", "OpenAI-Beta"}
		for _, v := range r.Header.Values("Access-Control-Request-Headers") {
			for _, name := range strings.Split(v, ",") {
				if name = strings.TrimSpace(name); name != "" && corsHeaderAllowed(name) {
					allowed = append(allowed, name)
				}
			}
		}
		hdr.Set("Access-Control-Allow-Headers", strings.Join(allowed, ", "))
		hdr.Set("Access-Control-Max-Age", corsMaxAge)
		w.WriteHeader(http.StatusNoContent)
	})
}
