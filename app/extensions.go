package app

// extensions holds the state of the optional features. Each feature owns
// one field and one init function, in its own file, so the features can grow
// without touching each other.
type extensions struct {
	auth    *authState
	manage  *manageState
	observe *observeState
	ui      *uiState
	// requests is nil without Deps.Requests.
	requests *requestLog
}

func (h *Handler) initExtensions() error {
	for _, init := range []func() error{h.initAuth, h.initManage, h.initObserve, h.initRequestLog, h.initUI} {
		if err := init(); err != nil {
			return err
		}
	}
	return nil
}
