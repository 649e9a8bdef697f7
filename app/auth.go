package app

import "net/http"

// AuthConfig configures logins, API keys and CORS. (Placeholder.)
type AuthConfig struct{}

// AccountStore keeps users and API keys. (Placeholder: the accounts work
// defines its methods.)
type AccountStore interface{}

type authState struct{}

func (h *Handler) initAuth() error { return nil }

// requireAPIKey guards an inference route. (Placeholder: open.)
func (h *Handler) requireAPIKey(_ dialect, next http.Handler) http.Handler { return next }

// requireAdmin guards a management route. (Placeholder: open.)
func (h *Handler) requireAdmin(next http.Handler) http.Handler { return next }

func (h *Handler) accountRoutes(*routeMux) {}
