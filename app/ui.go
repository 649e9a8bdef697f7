package app

import "net/http"

func (h *Handler) uiRoutes(*http.ServeMux) {}
