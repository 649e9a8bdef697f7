package app

import "testing"

func TestHistoryWorthy(t *testing.T) {
	for _, tt := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/api/chat", true},
		{"POST", "/api/proxy/chat", true},
		{"POST", "/v1/chat/completions", true},
		{"GET", "/v1/models", true},
		{"GET", "/v1/models/llama3", true},
		{"GET", "/api/tags", true},
		{"GET", "/api/proxy/tags", true},
		{"GET", "/api/ps", true},
		{"GET", "/api/version", true},
		{"HEAD", "/api/blobs/sha256:abc", true},
		{"GET", "/api/no-such-route", true},
		{"DELETE", "/api/delete", true},
		{"POST", "/api/proxy/pull", true},
		{"POST", "/api/proxy/nodes", true},
		{"PATCH", "/api/proxy/nodes/3", true},
		{"DELETE", "/api/keys/3", true},
		{"POST", "/api/account/login", true},
		{"GET", "/api/health", false},
		{"POST", "/api/health", false},
		{"GET", "/metrics", false},
		{"GET", "/", false},
		{"HEAD", "/", false},
		{"GET", "/ui/", false},
		{"GET", "/ui/static/js/lib.js", false},
		{"GET", "/api/proxy", false},
		{"GET", "/api/proxy/state", false},
		{"GET", "/api/proxy/active-requests", false},
		{"GET", "/api/proxy/nodes", false},
		{"GET", "/api/proxy/config", false},
		{"GET", "/api/logs", false},
		{"GET", "/api/logs/", false},
		{"GET", "/api/requests", false},
		{"GET", "/api/account/me", false},
		{"GET", "/api/keys", false},
		{"GET", "/api/schema", false},
		{"OPTIONS", "/api/chat", false},
		{"GET", "/favicon.ico", false},
	} {
		if got := historyWorthy(tt.method, tt.path); got != tt.want {
			t.Errorf("historyWorthy(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}
