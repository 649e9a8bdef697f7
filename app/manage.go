package app

// ManageConfig configures the management API. (Placeholder.)
type ManageConfig struct{}

type manageState struct{}

func (h *Handler) initManage() error { return nil }

func (h *Handler) manageRoutes(*routeMux) {}
