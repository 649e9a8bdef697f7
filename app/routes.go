package app

import (
	"net/http"
	"net/url"
	"strings"
)

// routes lists every route in one place. Ollama's own paths work at the
// root; the upstream's /api/proxy/* aliases keep working too.
func (h *Handler) routes() *http.ServeMux {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	defer func() { h.patterns = mux.patterns }()

	// Liveness, as a real Ollama answers it (clients start with HEAD /).
	mux.HandleFunc("GET /{$}", h.handleRoot)
	mux.HandleFunc("GET /api/proxy", h.handleRoot)

	// Inference routes: open by default as in the upstream, or behind API
	// keys when the deployment requires them (requireAPIKey decides).
	inference := func(pattern string, d dialect, hf http.HandlerFunc) {
		mux.Handle(pattern, h.requireAPIKey(d, hf))
	}
	// Model-routed Ollama routes, and the upstream's aliases of them.
	generates := func(p string) bool {
		return strings.HasSuffix(p, "chat") || strings.HasSuffix(p, "generate")
	}
	ollamaRoute := func(p string) route {
		rt := route{upstream: p, streams: generates(p)}
		switch p {
		case "/api/chat":
			rt.loadsWithout = "messages"
		case "/api/generate":
			rt.loadsWithout = "prompt"
		}
		return rt
	}
	for _, p := range []string{"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"} {
		inference("POST "+p, ollamaDialect, h.proxy(ollamaRoute(p)))
	}
	for _, p := range []string{"chat", "generate", "embed", "embeddings"} {
		inference("POST /api/proxy/"+p, ollamaDialect, h.proxy(ollamaRoute("/api/"+p)))
	}
	// OpenAI-compatible routes.
	for _, p := range []string{"/v1/chat/completions", "/v1/completions"} {
		inference("POST "+p, openAIDialect, h.proxy(route{upstream: p, dialect: openAIDialect, streams: true, lastEvents: openAIChatEnd, asksUsage: true}))
	}
	inference("POST /v1/embeddings", openAIDialect, h.proxy(route{upstream: "/v1/embeddings", dialect: openAIDialect}))
	// OpenAI's Responses API and Anthropic's Messages API, which Ollama
	// serves too (the Anthropic SDKs, Claude Code pointed at Ollama).
	inference("POST /v1/responses", openAIDialect, h.proxy(route{upstream: "/v1/responses", dialect: openAIDialect, streams: true, lastEvents: responsesEnd, zstdBodies: true}))
	inference("POST /v1/messages", anthropicDialect, h.proxy(route{upstream: "/v1/messages", dialect: anthropicDialect, streams: true, lastEvents: messagesEnd}))
	// OpenAI's image API, which Ollama serves with its image generation
	// models: JSON in, one JSON document out once the image is done.
	for _, p := range []string{"/v1/images/generations", "/v1/images/edits"} {
		inference("POST "+p, openAIDialect, h.proxy(route{upstream: p, dialect: openAIDialect}))
	}

	// Fleet-wide views.
	inference("GET /api/tags", ollamaDialect, h.handleTags)
	inference("GET /api/proxy/tags", ollamaDialect, h.handleTags)
	inference("GET /api/ps", ollamaDialect, h.handlePS)
	inference("GET /api/version", ollamaDialect, h.handleVersion)
	inference("GET /api/status", ollamaDialect, h.handleAnyNode)
	inference("POST /api/me", ollamaDialect, h.handleAnyNode)
	inference("GET /v1/models", openAIDialect, h.handleModels)
	inference("GET /v1/models/{model...}", openAIDialect, h.handleModel)

	// Operations. State and active requests reveal internal node addresses,
	// so they need an admin (the upstream left them public).
	mux.HandleFunc("GET /api/health", h.handleHealth)
	mux.Handle("GET /api/proxy/state", h.requireAdmin(http.HandlerFunc(h.handleState)))
	mux.Handle("GET /api/proxy/active-requests", h.requireAdmin(http.HandlerFunc(h.handleActiveRequests)))

	// Accounts, management, observability and the web UI, each in its own
	// file.
	h.accountRoutes(mux)
	h.manageRoutes(mux)
	h.observeRoutes(mux)
	h.uiRoutes(mux)

	mux.Handle("/api/", h.handleNoRoute(mux.ServeMux))
	mux.Handle("/v1/", h.handleNoRoute(mux.ServeMux))
	return mux.ServeMux
}

// routeMux records every pattern it registers, so the OpenAPI document can
// be checked against the real routes.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// Patterns returns every route pattern the handler serves, in registration
// order ("POST /api/chat", "GET /v1/models/{model...}").
func (h *Handler) Patterns() []string { return append([]string(nil), h.patterns...) }

// handleNoRoute answers paths under /api/ and /v1/ that no route takes, in
// the API's own error shape: 405 with Allow when the path exists for other
// methods, else 404.
func (h *Handler) handleNoRoute(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := accessFrom(r.Context()); a != nil {
			a.unrouted = true
		}
		d := dialectOf(r.URL.Path)
		// As Ollama (gin) does: a path with a trailing slash that names a
		// route without it is redirected there, keeping the method and body
		// (307) but for GET and HEAD (301).
		if trimmed := strings.TrimSuffix(r.URL.Path, "/"); trimmed != r.URL.Path && trimmed != "/api" && trimmed != "/v1" {
			probe := &http.Request{Method: r.Method, URL: &url.URL{Path: trimmed}, Host: r.Host, Header: http.Header{}}
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/api/" && pattern != "/v1/" {
				code := http.StatusTemporaryRedirect
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					code = http.StatusMovedPermanently
				}
				u := *r.URL
				u.Path, u.RawPath = trimmed, ""
				http.Redirect(w, r, u.String(), code)
				return
			}
		}
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/api/" && pattern != "/v1/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, d, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
			return
		}
		writeError(w, d, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
}
