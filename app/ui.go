package app

type uiState struct{}

func (h *Handler) initUI() error { return nil }

func (h *Handler) uiRoutes(*routeMux) {}
