package app

import (
	"context"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// view is what the handler routes by: one fleet snapshot, the runtime
// settings and the parsed node URLs, read together and shared read-only by
// every request until the next refresh.
type view struct {
	snap     *fleet.Snapshot
	settings fleet.Settings
	urls     map[int64]*url.URL
	nodes    []fleet.Node
	statuses []fleet.Status
	at       time.Time
	// storeErr and statusErr remember whether the last refresh had to keep
	// older data because a dependency failed.
	storeErr, statusErr error
}

// lastPass is when the health worker's last full pass ended, from the
// statuses of the fleet's nodes (see [fleet.LastPass]).
func (v *view) lastPass() time.Time {
	members := v.snap.Members()
	statuses := make([]fleet.Status, len(members))
	for i, m := range members {
		statuses[i] = m.Status
	}
	return fleet.LastPass(statuses)
}

// viewCache keeps the current view. A request never waits for a refresh
// while the view is younger than two refresh periods: it takes the current
// one and, when that is older than one period, starts a single background
// refresh (stale-while-revalidate). Older than that (sparse traffic, a
// Lambda container that was frozen, the very first request) the request
// refreshes inline, so what it sees is never older than two periods and
// nothing depends on background goroutines between invocations.
type viewCache struct {
	cur        atomic.Pointer[view]
	refreshing atomic.Bool
	mu         sync.Mutex // serialises inline refreshes
	every      time.Duration
	load       func(ctx context.Context, prev *view) *view
}

func (c *viewCache) get(ctx context.Context, now time.Time) *view {
	v := c.cur.Load()
	if v != nil {
		age := now.Sub(v.at)
		if age < c.every {
			return v
		}
		if age < 2*c.every {
			if c.refreshing.CompareAndSwap(false, true) {
				go func() {
					defer c.refreshing.Store(false)
					c.refresh(context.WithoutCancel(ctx), v)
				}()
			}
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if nv := c.cur.Load(); nv != nil && nv != v && !nv.at.IsZero() {
		return nv // another request refreshed while we waited (not an invalidate)
	}
	return c.refresh(ctx, v)
}

func (c *viewCache) refresh(ctx context.Context, prev *view) *view {
	v := c.load(ctx, prev)
	c.cur.Store(v)
	return v
}

// invalidate makes the next request read the fleet again. The view is
// kept, only marked out of date: it is what a refresh falls back on when
// the store is down, and dropping it would leave a replica with no fleet
// at all for the length of a Postgres outage.
func (c *viewCache) invalidate() {
	for {
		v := c.cur.Load()
		if v == nil {
			return
		}
		stale := *v
		stale.at = time.Time{}
		if c.cur.CompareAndSwap(v, &stale) {
			return
		}
	}
}

// loadView reads nodes, settings and statuses. When a dependency fails, the
// previous data stands in for it: Postgres down keeps the last nodes,
// Redis down keeps the last statuses, and proxying goes on. Each outage and
// each recovery is logged once.
func (h *Handler) loadView(ctx context.Context, prev *view) *view {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v := &view{at: h.now(), settings: fleet.DefaultSettings()}
	if prev != nil {
		v.nodes, v.settings, v.statuses = prev.nodes, prev.settings, prev.statuses
	}
	nodes, err := h.store.Nodes(ctx)
	if err == nil {
		var settings fleet.Settings
		if settings, err = h.store.Settings(ctx); err == nil {
			v.nodes, v.settings = nodes, settings
		}
	}
	v.storeErr = err
	statuses, err := h.statuses.Statuses(ctx)
	if err == nil {
		v.statuses = statuses
	}
	v.statusErr = err
	h.logTransition(prev, "node store", prevErr(prev, true), v.storeErr)
	h.logTransition(prev, "status source", prevErr(prev, false), v.statusErr)

	v.snap = fleet.NewSnapshot(v.nodes, v.statuses)
	v.urls = make(map[int64]*url.URL, len(v.nodes))
	for _, n := range v.nodes {
		if u, err := url.Parse(n.BaseURL); err == nil {
			v.urls[n.ID] = u
		}
	}
	return v
}

func prevErr(prev *view, store bool) error {
	if prev == nil {
		return nil
	}
	if store {
		return prev.storeErr
	}
	return prev.statusErr
}

func (h *Handler) logTransition(prev *view, what string, before, after error) {
	switch {
	case after != nil && before == nil:
		h.log.Warn(what+" unavailable; using the last known data", "err", after.Error(), "have_previous", prev != nil)
	case after == nil && before != nil:
		h.log.Info(what + " available again")
	}
}
