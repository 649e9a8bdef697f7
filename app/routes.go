package app

import (
	"net/http"
	"strings"
)

// routes lists every route in one place. Ollama's own paths work at the
// root; the upstream's /api/proxy/* aliases keep working too.
func (h *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()

	// Liveness, as a real Ollama answers it (clients start with HEAD /).
	mux.HandleFunc("GET /{$}", h.handleRoot)
	mux.HandleFunc("GET /api/proxy", h.handleRoot)

	// Model-routed Ollama routes, and the upstream's aliases of them.
	for _, p := range []string{"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"} {
		mux.HandleFunc("POST "+p, h.proxy(route{upstream: p}))
	}
	for _, p := range []string{"chat", "generate", "embed", "embeddings"} {
		mux.HandleFunc("POST /api/proxy/"+p, h.proxy(route{upstream: "/api/" + p}))
	}
	// OpenAI-compatible routes.
	for _, p := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} {
		mux.HandleFunc("POST "+p, h.proxy(route{upstream: p, dialect: openAIDialect}))
	}

	// Fleet-wide views.
	mux.HandleFunc("GET /api/tags", h.handleTags)
	mux.HandleFunc("GET /api/proxy/tags", h.handleTags)
	mux.HandleFunc("GET /api/ps", h.handlePS)
	mux.HandleFunc("GET /api/version", h.handleVersion)
	mux.HandleFunc("GET /v1/models", h.handleModels)
	mux.HandleFunc("GET /v1/models/{model...}", h.handleModel)

	// Operations.
	mux.HandleFunc("GET /api/health", h.handleHealth)
	mux.HandleFunc("GET /api/proxy/state", h.handleState)
	mux.HandleFunc("GET /api/proxy/active-requests", h.handleActiveRequests)

	mux.HandleFunc("/api/", h.handleNoRoute(mux, ollamaDialect))
	mux.HandleFunc("/v1/", h.handleNoRoute(mux, openAIDialect))
	return mux
}

// handleNoRoute answers paths under /api/ and /v1/ that no route takes, in
// the API's own error shape: 405 with Allow when the path exists for other
// methods, else 404.
func (h *Handler) handleNoRoute(mux *http.ServeMux, d dialect) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
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
	}
}
