package redis_test

import (
	"context"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/worker"
)

// The adapters satisfy the consumer interfaces they are wired into.
var (
	_ app.StatusSource   = (*redis.StatusCache)(nil)
	_ worker.StatusStore = (*redis.StatusCache)(nil)
	_ app.InFlight       = (*redis.InFlight)(nil)
	_ worker.Lock        = (*redis.WorkerLock)(nil)
	_ interface {
		LastPass(ctx context.Context) (time.Time, error)
	} = (*redis.StatusCache)(nil)
)
