package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/infra/redis"
)

// openShared wires the shared mode: nodes and settings in Postgres, node
// status hot in Redis with the last pass also in Postgres, in-flight leases
// and the worker lock in Redis. It refuses an out-of-date schema, but starts
// while Redis is down: proxying then runs on the last pass in Postgres and
// local counts until Redis is back.
func openShared(c *cli.Context, log *slog.Logger, dbURL, redisURL string) (*backend, error) {
	ctx := c.Context
	pool, err := postgres.Open(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	b := &backend{mode: "shared", closers: []func(){pool.Close}}
	if err := postgres.SchemaCurrent(ctx, pool); err != nil {
		b.Close()
		return nil, err
	}
	goredis.SetLogger(redis.DriverLogger{Log: log})
	rc, err := redis.NewClient(redisURL)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("--redis-url: %w", err) // go-redis says "redis: …" itself
	}
	b.closers = append(b.closers, func() { rc.Close() })
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := rc.Ping(pingCtx).Err(); err != nil {
		log.Warn("redis unavailable at start; running on the last pass in Postgres and local counts", "err", err.Error())
	}
	cancel()

	every := c.Duration(healthEveryFlag.Name)
	prefix := c.String(redisPrefixFlag.Name)
	store := postgres.NewStore(pool)
	cache := redis.NewStatusCache(rc, prefix, 3*every, log)
	st := &sharedStatus{hot: cache, last: store, log: log}
	b.store = store
	b.accounts = store
	b.requests = store
	b.statuses = st
	b.passes = st
	inflight := redis.NewInFlight(rc, prefix, cmp.Or(c.Duration(leaseTTLFlag.Name), redis.DefaultLeaseTTL), log)
	if inLambda() {
		inflight.ReleaseInline() // nothing runs between invocations
	}
	b.inflight = inflight
	b.limits = redis.NewRateLimiter(rc, prefix)
	b.revoked = redis.NewKeyRevocations(rc, prefix)
	b.lock = redis.NewWorkerLock(rc, prefix, cmp.Or(c.Duration(lockTTLFlag.Name), redis.DefaultLockTTL))
	b.deps = []app.Dependency{
		{Name: "postgres", Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
		{Name: "redis", Check: func(ctx context.Context) error { return rc.Ping(ctx).Err() }},
	}
	return b, nil
}

// openPostgresStore opens only the admin store, for the CLI.
func openPostgresStore(c *cli.Context, _ *slog.Logger, dbURL string) (nodeStore, func(), error) {
	pool, err := postgres.Open(c.Context, dbURL)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	if err := postgres.SchemaCurrent(c.Context, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return postgres.NewStore(pool), pool.Close, nil
}

// statusStore is what both status adapters offer.
type statusStore interface {
	Statuses(ctx context.Context) ([]fleet.Status, error)
	WriteStatuses(ctx context.Context, statuses []fleet.Status) error
}

// sharedStatus reads the hot copy in Redis and falls back to the last pass
// in Postgres when Redis is down or has nothing (its key expired because the
// worker stopped). Writes go to both, so losing either one loses nothing.
type sharedStatus struct {
	hot interface {
		statusStore
		PassStatuses(ctx context.Context) ([]fleet.Status, error)
		MarkUnreachable(ctx context.Context, nodeID int64, reason string) error
	}
	last statusStore
	log  *slog.Logger
	// hotDown and lastDown remember a failed write, so that an outage is
	// logged once, and its end too.
	hotDown, lastDown atomic.Bool
}

// statusFallbackTimeout bounds the read of the statuses from Postgres when
// Redis failed.
const statusFallbackTimeout = time.Second

func (s *sharedStatus) Statuses(ctx context.Context) ([]fleet.Status, error) {
	return s.hotOrLast(ctx, s.hot.Statuses)
}

// PassStatuses is Statuses without the passive marks, for the worker
// (worker.PassReader); Postgres keeps none.
func (s *sharedStatus) PassStatuses(ctx context.Context) ([]fleet.Status, error) {
	return s.hotOrLast(ctx, s.hot.PassStatuses)
}

func (s *sharedStatus) hotOrLast(ctx context.Context, hot func(context.Context) ([]fleet.Status, error)) ([]fleet.Status, error) {
	statuses, err := hot(ctx)
	if err == nil && len(statuses) > 0 {
		return statuses, nil
	}
	// A Redis that hung may have spent the caller's whole deadline:
	// Postgres gets a budget of its own.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusFallbackTimeout)
	defer cancel()
	fallback, ferr := s.last.Statuses(fctx)
	if ferr != nil {
		return nil, errors.Join(err, ferr)
	}
	return fallback, nil
}

func (s *sharedStatus) WriteStatuses(ctx context.Context, statuses []fleet.Status) error {
	errHot := s.hot.WriteStatuses(ctx, statuses)
	errLast := s.last.WriteStatuses(ctx, statuses)
	if errHot != nil && errLast != nil {
		return errors.Join(errHot, errLast)
	}
	s.logOutage(&s.hotDown, errHot, "statuses written to Postgres only until Redis is back", "statuses written to Redis again")
	s.logOutage(&s.lastDown, errLast, "statuses written to Redis only until Postgres is back", "statuses written to Postgres again")
	return nil
}

// logOutage logs the first failed write of an outage, and the first write
// after it.
func (s *sharedStatus) logOutage(down *atomic.Bool, err error, failing, back string) {
	switch {
	case err != nil && !down.Swap(true):
		s.log.Warn(failing, "err", err.Error())
	case err == nil && down.Swap(false):
		s.log.Info(back)
	}
}

func (s *sharedStatus) MarkUnreachable(ctx context.Context, nodeID int64, reason string) error {
	return s.hot.MarkUnreachable(ctx, nodeID, reason)
}
