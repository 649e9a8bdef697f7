package app

import (
	"context"
	"net/http"
)

// ObserveConfig configures logs and metrics. (Placeholder.)
type ObserveConfig struct{}

// LogReader reads the JSON log files. (Placeholder.)
type LogReader interface {
	Query(ctx context.Context) error
}

type observeState struct{}

func (h *Handler) initObserve() error { return nil }

func (h *Handler) observeRoutes(*routeMux) {}

// recordRequest is called once per request, after it ended, with what the
// access line reports. (Placeholder for metrics.)
func (h *Handler) recordRequest(r *http.Request, a *access, status int) {}
