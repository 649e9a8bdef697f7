package app

import "net/http"

func (h *Handler) manageRoutes(*http.ServeMux) {}
