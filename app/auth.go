package app

import (
	"context"
	"net/http"
)

// AccountStore keeps users and API keys. (Placeholder: the accounts work
// defines its methods.)
type AccountStore interface{}

// requireAPIKey guards an inference route. (Placeholder: open.)
func (h *Handler) requireAPIKey(_ dialect, next http.Handler) http.Handler { return next }

// requireAdmin guards a management route. (Placeholder: open.)
func (h *Handler) requireAdmin(next http.Handler) http.Handler { return next }

func (h *Handler) accountRoutes(*http.ServeMux) {}

var _ = context.Background
