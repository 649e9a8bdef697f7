package app

import (
	"context"

	"github.com/aivonx/aivonx/app/fleet"
)

// FleetStore supplies the admin-owned data the handler routes by. The
// handler caches what it returns for about a second, so implementations may
// go to a database on every call. Safe for concurrent use.
type FleetStore interface {
	// Nodes returns every configured node, enabled or not.
	Nodes(ctx context.Context) ([]fleet.Node, error)
	// Settings returns the runtime settings, or fleet.DefaultSettings()
	// when none were saved.
	Settings(ctx context.Context) (fleet.Settings, error)
}

// StatusSource is the observed state of the fleet, written by the worker.
// Safe for concurrent use.
type StatusSource interface {
	// Statuses returns the last status of every node in one round trip. A
	// node marked unreachable after its last check is reported unhealthy.
	// Missing statuses are not an error.
	Statuses(ctx context.Context) ([]fleet.Status, error)
	// MarkUnreachable records a passive check: the proxy failed to connect
	// to the node. The mark lasts until a newer check passes (or it expires)
	// and is shared with every replica that reads the same source.
	MarkUnreachable(ctx context.Context, nodeID int64, reason string) error
}

// InFlight tracks the requests in flight on each node: counters in memory,
// or leases in Redis shared by every replica. Safe for concurrent use.
type InFlight interface {
	// Acquire takes a slot on the least loaded of the given nodes, ties
	// broken at random, in one atomic step, and returns the index of the
	// chosen node in nodeIDs. release gives the slot back; it must be called
	// exactly once, when the response has ended however it ended. An
	// implementation that cannot reach its backing store degrades to local
	// counts rather than failing the request.
	Acquire(ctx context.Context, nodeIDs []int64) (chosen int, release func(), err error)
	// Counts returns the requests in flight on each of the given nodes;
	// absent means zero.
	Counts(ctx context.Context, nodeIDs []int64) (map[int64]int, error)
}

// AdminStore writes the admin-owned data: the management API and the CLI
// use it. Implementations validate (returning *fleet.ValidationError) and
// translate their errors to fleet's sentinels.
type AdminStore interface {
	// Node returns fleet.ErrNotFound if id does not exist.
	Node(ctx context.Context, id int64) (fleet.Node, error)
	// CreateNode returns fleet.ErrConflict if the base URL is taken.
	CreateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
	// UpdateNode returns fleet.ErrNotFound or fleet.ErrConflict.
	UpdateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
	// DeleteNode returns fleet.ErrNotFound if id does not exist.
	DeleteNode(ctx context.Context, id int64) error
	SaveSettings(ctx context.Context, s fleet.Settings) (fleet.Settings, error)
}

// NodeRefresher probes one node at once, model list included.
type NodeRefresher interface {
	RefreshNode(ctx context.Context, nodeID int64) error
}
