//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes the embedded store's serve lock: one serve per data
// directory. Two would each count their own in-flight requests and run
// their own health checks over one store, and each route as if alone. The
// lock is the kernel's (flock), so it goes with the process, however it
// ends. CLI commands do not take it: they may edit a running serve's store.
func lockDataDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "serve.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: two would keep separate in-flight counts and health checks; stop it, or give this one a --data-dir of its own (replicas share state in the shared mode)", &dataDirBusy{dir})
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
