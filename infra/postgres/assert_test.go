package postgres_test

import (
	"context"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/worker"
)

// The Store satisfies every consumer interface it is wired into, and the
// node and settings writes the CLI and the management API use.
var (
	_ app.FleetStore     = (*postgres.Store)(nil)
	_ app.RequestLog     = (*postgres.Store)(nil)
	_ worker.NodeLister  = (*postgres.Store)(nil)
	_ worker.StatusStore = (*postgres.Store)(nil)
	_ interface {
		Node(ctx context.Context, id int64) (fleet.Node, error)
		CreateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
		UpdateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
		DeleteNode(ctx context.Context, id int64) error
		SaveSettings(ctx context.Context, s fleet.Settings) (fleet.Settings, error)
	} = (*postgres.Store)(nil)
)
