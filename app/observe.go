package app

import (
	"context"
	"net/http"
)

// LogReader reads the JSON log files. (Placeholder.)
type LogReader interface {
	Query(ctx context.Context) error
}

func (h *Handler) observeRoutes(*http.ServeMux) {}
