//go:build !unix

package main

// lockDataDir cannot lock here: one serve per data directory is up to the
// operator.
func lockDataDir(string) (func(), error) { return func() {}, nil }
