package app

import (
	"net/http"
	"strconv"
	"strings"
)

// corsPolicy answers browsers of allowed origins itself: preflights never
// reach a node, and other origins get no CORS headers at all. Credentials
// (cookies) are never allowed cross-origin: browser clients authenticate
// with an API key or a bearer token.
//
// A browser request that changes something from an origin the policy does
// not allow is refused with 403, as Ollama refuses it: without CORS headers
// a page cannot read the answer, but a "simple" POST (text/plain, no
// preflight) would still pull, copy or push models on the nodes.
//
// Like Ollama, it allows local pages and desktop apps by default
// (ollamaOrigins); configured origins come on top, as OLLAMA_ORIGINS does.
// The nodes never see an Origin (proxy.go drops it): a node would refuse
// one it does not know with 403, and this policy is the one that counts.
type corsPolicy struct {
	any      bool
	origins  map[string]bool
	patterns []originPattern // origins with one "*"
}

// ollamaOrigins are the origins Ollama allows with OLLAMA_ORIGINS unset.
var ollamaOrigins = []string{
	"http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
	"http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
	"http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
	"app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
}

// originPattern matches an origin by what comes before and after its "*".
type originPattern struct{ prefix, suffix string }

func newCORSPolicy(origins []string) corsPolicy {
	p := corsPolicy{origins: map[string]bool{}}
	for _, o := range append(ollamaOrigins[:len(ollamaOrigins):len(ollamaOrigins)], origins...) {
		for _, o := range strings.Split(o, ",") {
			o = strings.ToLower(strings.TrimRight(strings.TrimSpace(o), "/"))
			switch before, after, wild := strings.Cut(o, "*"); {
			case o == "":
			case o == "*":
				p.any = true
			case wild:
				p.patterns = append(p.patterns, originPattern{before, after})
			default:
				p.origins[o] = true
			}
		}
	}
	return p
}

func (p corsPolicy) allows(origin string) bool {
	if origin == "" {
		return false
	}
	if p.any {
		return true
	}
	origin = strings.ToLower(origin)
	if p.origins[origin] {
		return true
	}
	for _, pat := range p.patterns {
		if len(origin) >= len(pat.prefix)+len(pat.suffix) && strings.HasPrefix(origin, pat.prefix) && strings.HasSuffix(origin, pat.suffix) {
			return true
		}
	}
	return false
}

const (
	corsMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
	corsMaxAge  = "600"
	corsExpose  = "X-Request-Id, Retry-After, X-Aivonx-Version"
)

// corsHeaderAllowed lists the request headers browsers may send: what the
// Ollama, OpenAI and Anthropic clients send (their SDKs add x-stainless-*,
// and anthropic-version).
func corsHeaderAllowed(name string) bool {
	switch name = strings.ToLower(strings.TrimSpace(name)); name {
	case "authorization", "content-type", "x-api-key", "openai-beta", "openai-organization", "openai-project",
		"x-request-id", "accept", "accept-language", "content-language", "user-agent", "x-requested-with":
		return true
	}
	return strings.HasPrefix(name, "x-stainless-") || strings.HasPrefix(name, "anthropic-")
}

// withCORS wraps the whole handler with the CORS policy.
func (h *Handler) withCORS(next http.Handler) http.Handler {
	p := h.ext.auth.cors
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer depends on Origin, an allowed one or not: without
		// Vary a shared cache could serve an answer without CORS headers
		// to an allowed origin.
		hdr := w.Header()
		hdr.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if !p.allows(origin) {
			// Same-origin pages (the web UI), reads and clients that are
			// not browsers pass the check. So do requests with a bearer
			// token or an API key: a page cannot send those headers without
			// a preflight, which a foreign origin fails. (Not any
			// Authorization: a browser adds Basic credentials it remembers
			// to a cross-site form post by itself.)
			if h.ext.auth.cop.Check(r) != nil && !ownCredentials(r) {
				msg := "cross-origin request refused"
				if origin != "" {
					msg += ": origin " + strconv.Quote(origin) + " is not allowed (see --cors-origin)"
				}
				writeError(w, dialectOf(r.URL.Path), http.StatusForbidden, msg)
				return
			}
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

// ownCredentials reports whether r carries a bearer token or an API key.
func ownCredentials(r *http.Request) bool {
	bearer, _ := bearerToken(r)
	return bearer != "" || r.Header.Get("X-API-Key") != ""
}
