package main

import (
	"errors"
	"fmt"

	"github.com/aivonx/aivonx/infra/sqlite"
)

// dataDirBusy is lockDataDir's refusal: a serve holds the directory.
type dataDirBusy struct{ dir string }

func (e *dataDirBusy) Error() string {
	return "another aivonx serve is using --data-dir " + e.dir
}

// upgradeUnlessServed lets a CLI command migrate the embedded store only
// while no serve holds it. A serve running on a store older than this
// binary's schema is an older version, which would fail on the new schema
// (its request history, then its shutdown's last writes); the store is
// upgraded by this version's serve instead, once the old one has stopped.
func upgradeUnlessServed(dir string) sqlite.UpgradeCheck {
	return func(from, to int) error {
		unlock, err := lockDataDir(dir)
		var busy *dataDirBusy
		switch {
		case errors.As(err, &busy):
			return fmt.Errorf("the store in %s has schema %d, which this aivonx would upgrade to %d, but an aivonx serve (an older version, then) is running on it and could not use the new schema: stop that serve and start this version's, which upgrades the store", dir, from, to)
		case err != nil:
			return err
		}
		unlock()
		return nil
	}
}
