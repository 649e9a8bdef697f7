package app

// extensions holds the state of the optional features (accounts,
// management, observability, UI). Each feature's file adds its fields here
// and initialises them in initExtensions.
type extensions struct{}

func (h *Handler) initExtensions() error { return nil }
