package worker

import (
	"context"

	"github.com/aivonx/aivonx/app/fleet"
)

// NodeLister lists the nodes to probe. Same method as app.FleetStore, so one
// store type satisfies both.
type NodeLister interface {
	Nodes(ctx context.Context) ([]fleet.Node, error)
}

// StatusStore keeps the observed statuses. The worker reads the previous
// pass (for rise/fall thresholds and to know when models are due) and writes
// the new one in a single call. Safe for concurrent use.
type StatusStore interface {
	Statuses(ctx context.Context) ([]fleet.Status, error)
	WriteStatuses(ctx context.Context, statuses []fleet.Status) error
}

// PassReader is implemented by a StatusStore whose Statuses apply passive
// "unreachable" marks: PassStatuses returns the statuses as the last pass
// wrote them. The worker reads those, since its rise and fall thresholds
// count probes and a mark is none; written back, a mark would outlive
// itself in the pass.
type PassReader interface {
	PassStatuses(ctx context.Context) ([]fleet.Status, error)
}

// Lock makes sure only one worker among many runs the passes. TryLock
// returns ok=false, without error, when another worker holds the lock; the
// worker that holds it gets it again (Schedule keeps it between passes and
// takes it at each), and any of the unlocks of one hold ends it. The lock
// expires by itself if its holder dies, so another worker takes over.
// Nil means no lock (a single in-process worker).
type Lock interface {
	TryLock(ctx context.Context) (unlock func(), ok bool, err error)
}
