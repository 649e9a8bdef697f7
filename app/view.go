package app

import (
	"context"
	"fmt"
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
	// hung is set when the refresh took half its bound or more: a
	// dependency hung before something answered for it (Redis, with the
	// statuses read from Postgres instead). Requests wait on the next
	// refresh as briefly as after a failure.
	hung bool
}

// lastPass is when the health worker's last full pass ended, from the
// statuses of the fleet's nodes (see [fleet.LastPass]).
func (v *view) lastPass() time.Time { return v.lastPassWithout(0) }

// lastPassWithout is lastPass read off every node but skip, whose status
// may be a re-probe's own.
func (v *view) lastPassWithout(skip int64) time.Time {
	members := v.snap.Members()
	statuses := make([]fleet.Status, 0, len(members))
	for _, m := range members {
		if m.Node.ID != skip {
			statuses = append(statuses, m.Status)
		}
	}
	return fleet.LastPass(statuses)
}

// viewCache keeps the current view. A request never waits for a refresh
// while the view is younger than two refresh periods: it takes the current
// one and, when that is older than one period, starts a single background
// refresh (stale-while-revalidate). Older than that (sparse traffic, a
// Lambda container that was frozen, a node edited through this replica) the
// request waits for the refresh, so that it sees the fleet as it is now.
// When the last refresh failed it waits only up to inlineWait: a store or
// Redis that hangs (rather than refusing) must not add its timeout to every
// request of every replica. The previous view serves meanwhile, and the
// refresh's result the requests after it.
type viewCache struct {
	cur   atomic.Pointer[view]
	every time.Duration
	load  func(ctx context.Context, prev *view) *view

	mu      sync.Mutex   // guards running and edits, and orders the stores to cur
	running *viewRefresh // the refresh under way, if any
	// edits counts invalidations: a refresh that began before one may
	// have read the fleet before the change.
	edits int64
}

// viewRefresh is one refresh under way: done is closed when it has stored
// its view.
type viewRefresh struct {
	done    chan struct{}
	started time.Time
	edits   int64 // the cache's edits when it started
}

// inlineWait bounds how long a request waits for a refresh of a view too
// old to use at once (a healthy store answers in milliseconds).
const inlineWait = 250 * time.Millisecond

func (c *viewCache) get(ctx context.Context, now time.Time) *view {
	v := c.cur.Load()
	if v != nil && now.Sub(v.at) < c.every {
		return v
	}
	r := c.refreshFrom(ctx, v)
	if v == nil {
		// Nothing to route by until the first load (itself bounded).
		for {
			<-r.done
			if v = c.cur.Load(); v != nil {
				return v
			}
			r = c.refreshFrom(ctx, nil) // that refresh was replaced
		}
	}
	if now.Sub(v.at) < 2*c.every {
		return v
	}
	// Wait as long as a load may take, unless the last one failed: a store
	// or Redis that hangs would cost every request its timeout.
	bound := maxLoad
	if v.storeErr != nil || v.statusErr != nil || v.hung {
		bound = inlineWait
	}
	wait := time.NewTimer(bound - time.Since(r.started))
	defer wait.Stop()
	select {
	case <-r.done:
		return c.cur.Load()
	case <-wait.C:
	case <-ctx.Done():
	}
	return v
}

// refreshFrom starts a refresh from prev unless one is under way, and
// returns the one under way. It runs apart from the request that started
// it, which may leave first. A refresh is not joined, but replaced (its
// result dropped), when it began before an edit, which it may not have
// read, or longer ago than any load can take: it was frozen with its
// process (a Lambda container between invocations).
func (c *viewCache) refreshFrom(ctx context.Context, prev *view) *viewRefresh {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.running; r != nil && r.edits == c.edits && time.Since(r.started) < maxLoad+time.Second {
		return r
	}
	r := &viewRefresh{done: make(chan struct{}), started: time.Now(), edits: c.edits}
	c.running = r
	go func() {
		defer close(r.done)
		nv := c.load(context.WithoutCancel(ctx), prev)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.running != r {
			return // replaced: a newer refresh stores its own
		}
		c.running = nil
		if c.edits != r.edits {
			nv.at = time.Time{} // it may predate the edit: the next request refreshes again
		}
		c.cur.Store(nv)
	}()
	return r
}

// invalidate makes the next request read the fleet again. The view is
// kept, only marked out of date: it is what a refresh falls back on when
// the store is down, and dropping it would leave a replica with no fleet
// at all for the length of a Postgres outage.
func (c *viewCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.edits++
	if v := c.cur.Load(); v != nil {
		stale := *v
		stale.at = time.Time{}
		c.cur.Store(&stale)
	}
}

// maxLoad bounds a refresh of the view.
const maxLoad = 2 * time.Second

// loadView reads nodes, settings and statuses. When a dependency fails, the
// previous data stands in for it: Postgres down keeps the last nodes,
// Redis down keeps the last statuses, and proxying goes on. Each outage and
// each recovery is logged once.
//
// It runs in a goroutine of its own (viewCache.refreshFrom), where a panic
// would end the process: one is logged, and the last view kept.
func (h *Handler) loadView(ctx context.Context, prev *view) (v *view) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("fleet refresh panicked; keeping the last view", "panic", fmt.Sprint(p))
			v = &view{settings: fleet.DefaultSettings(), snap: fleet.NewSnapshot(nil, nil), urls: map[int64]*url.URL{}}
			if prev != nil {
				*v = *prev
			}
			v.at, v.storeErr = h.now(), fmt.Errorf("refresh panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, maxLoad)
	defer cancel()
	start := time.Now()
	v = &view{at: h.now(), settings: fleet.DefaultSettings()}
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
	v.hung = time.Since(start) >= maxLoad/2
	if v.storeErr != nil || v.statusErr != nil || v.hung {
		// What failed, or hung, may have taken the whole timeout: count
		// the view's age from now, so that the next requests do not each
		// start (and wait on) another slow refresh at once.
		v.at = h.now()
	}

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
