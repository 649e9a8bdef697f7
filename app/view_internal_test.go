package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/internal/testenv"
)

// A store that hangs (rather than refusing) must not hold requests for its
// timeout: once a refresh has failed, a request whose view is too old waits
// at most inlineWait for the next one, then routes by the previous view;
// the requests after it do not wait again while that refresh runs.
func TestViewCacheBoundsTheWaitOnAHungStore(t *testing.T) {
	release := make(chan struct{})
	loads := make(chan struct{}, 10)
	c := viewCache{every: 10 * time.Millisecond}
	c.load = func(ctx context.Context, prev *view) *view {
		loads <- struct{}{}
		if prev != nil {
			<-release // the hung store
		}
		return &view{at: time.Now(), statusErr: context.DeadlineExceeded} // the last refresh failed
	}
	first := c.get(context.Background(), time.Now())
	if first == nil {
		t.Fatal("no first view")
	}
	<-loads
	old := time.Now().Add(time.Hour) // the view is an hour old by then

	got := make(chan *view, 1)
	go func() { got <- c.get(context.Background(), old) }()
	select {
	case v := <-got:
		if v != first {
			t.Fatal("a hung refresh's request did not fall back to the previous view")
		}
	case <-time.After(5 * inlineWait):
		close(release)
		t.Fatalf("a request waited on a hung store for more than %s", 5*inlineWait)
	}
	start := time.Now()
	if got := c.get(context.Background(), old); got != first || time.Since(start) > inlineWait {
		t.Fatalf("the next request waited %s on the same refresh", time.Since(start))
	}
	if n := len(loads); n != 1 {
		t.Fatalf("%d refreshes were started; want the one under way to be shared", n+1)
	}

	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for c.cur.Load() == first {
		if time.Now().After(deadline) {
			t.Fatal("the refresh's view never arrived")
		}
		time.Sleep(time.Millisecond)
	}
}

// A refresh that began before an edit (invalidate) may have read the fleet
// before it: its view must not pass for current.
func TestViewCacheRefreshBeforeAnEditIsNotCurrent(t *testing.T) {
	loading := make(chan struct{})
	finish := make(chan struct{})
	c := viewCache{every: time.Hour}
	c.load = func(ctx context.Context, prev *view) *view {
		if prev != nil {
			close(loading)
			<-finish
		}
		return &view{at: time.Now()}
	}
	c.get(context.Background(), time.Now())
	c.invalidate() // the first edit starts a refresh...
	r := c.refreshFrom(context.Background(), c.cur.Load())
	<-loading
	c.invalidate() // ...and a second edit lands while it reads
	close(finish)
	<-r.done
	if v := c.cur.Load(); !v.at.IsZero() {
		t.Fatal("a refresh that began before an edit was taken for current")
	}
}

// A refresh frozen with its process (a Lambda container between
// invocations) is not waited on after the thaw: a new one starts, and the
// frozen one's late result is dropped.
func TestViewCacheReplacesAFrozenRefresh(t *testing.T) {
	frozen := make(chan struct{})
	inFrozen := make(chan struct{})
	c := viewCache{every: 10 * time.Millisecond}
	var calls atomic.Int32
	c.load = func(ctx context.Context, prev *view) *view {
		if calls.Add(1) == 2 {
			close(inFrozen)
			<-frozen
			return &view{at: time.Now(), storeErr: errFrozen}
		}
		return &view{at: time.Now()}
	}
	c.get(context.Background(), time.Now())
	r := c.refreshFrom(context.Background(), c.cur.Load()) // the one that freezes
	// Its load must be the second call: the new refresh below must not
	// start before it and take the freeze in its place.
	<-inFrozen
	c.mu.Lock()
	r.started = time.Now().Add(-time.Hour) // ...for an hour
	c.mu.Unlock()
	v := c.get(context.Background(), time.Now().Add(time.Hour))
	if v == nil || v.storeErr != nil || calls.Load() != 3 {
		t.Fatalf("after the thaw: view %+v after %d loads; want a new refresh's", v, calls.Load())
	}
	close(frozen)
	<-r.done
	if c.cur.Load().storeErr != nil {
		t.Fatal("the frozen refresh's late result replaced the new one")
	}
}

var errFrozen = errors.New("deadline exceeded while frozen")

// A store that is slow but answers (a database far away) is waited for, up
// to a load's bound, when the view is too old: after an idle gap the
// request routes by the fleet as it is now.
func TestViewCacheWaitsForASlowStore(t *testing.T) {
	c := viewCache{every: 10 * time.Millisecond}
	var version atomic.Int64
	c.load = func(ctx context.Context, prev *view) *view {
		if prev != nil {
			time.Sleep(400 * time.Millisecond)
		}
		return &view{at: time.Now(), settings: fleetVersion(version.Add(1))}
	}
	c.get(context.Background(), time.Now())
	if v := c.get(context.Background(), time.Now().Add(time.Hour)); v.settings.Strategy != "v2" {
		t.Fatalf("after an idle gap the request routed by %q; want the refreshed view", v.settings.Strategy)
	}
}

// A request right after an edit does not join a refresh that began before
// it: it waits for one that reads the edit.
func TestViewCacheEditIsSeenByTheNextRequest(t *testing.T) {
	c := viewCache{every: time.Hour}
	var version atomic.Int64
	proceed := make(chan struct{})
	started := make(chan struct{}, 4)
	c.load = func(ctx context.Context, prev *view) *view {
		n := version.Add(1)
		if n == 2 {
			started <- struct{}{}
			<-proceed // a slow refresh, begun before the edit
		}
		return &view{at: time.Now(), settings: fleetVersion(n)}
	}
	c.get(context.Background(), time.Now())
	c.refreshFrom(context.Background(), c.cur.Load())
	<-started
	c.invalidate() // the edit lands while it reads
	v := c.get(context.Background(), time.Now())
	close(proceed)
	if v.settings.Strategy != "v3" {
		t.Fatalf("the request after the edit routed by %q; want the view read after it (v3)", v.settings.Strategy)
	}
}

// fleetVersion marks a view by its load, in a field the cache ignores.
func fleetVersion(n int64) fleet.Settings {
	return fleet.Settings{Strategy: fleet.Strategy(fmt.Sprintf("v%d", n))}
}

// panickyStore is a node store whose reads panic once armed.
type panickyStore struct{ armed atomic.Bool }

func (s *panickyStore) Nodes(context.Context) ([]fleet.Node, error) {
	if s.armed.Load() {
		panic("a bug in a store adapter")
	}
	return []fleet.Node{{ID: 1, Name: "a", BaseURL: "http://10.0.0.1:11434", Enabled: true}}, nil
}

func (s *panickyStore) Settings(context.Context) (fleet.Settings, error) {
	return fleet.DefaultSettings(), nil
}

// A refresh runs in a goroutine of its own, where a panic would end the
// process: it is logged, and the last view serves on.
func TestViewRefreshPanicKeepsTheLastView(t *testing.T) {
	store := &panickyStore{}
	var logs testenv.Buffer
	h, err := New(Config{RefreshEvery: time.Millisecond}, Deps{Fleet: store, Statuses: memory.NewStatusBoard(),
		InFlight: memory.NewInFlight(), Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if v := h.view.get(context.Background(), time.Now()); len(v.nodes) != 1 {
		t.Fatalf("first view: %+v", v.nodes)
	}
	store.armed.Store(true)
	v := h.view.get(context.Background(), time.Now().Add(time.Hour))
	if len(v.nodes) != 1 || v.storeErr == nil || !strings.Contains(logs.String(), "fleet refresh panicked") {
		t.Fatalf("after a panicking refresh: nodes %+v, err %v, log %s", v.nodes, v.storeErr, logs.String())
	}
}

// slowStatuses answers, but only after a hang: a Redis that hangs with
// Postgres answering for it (the shared mode's fallback) looks so here.
type slowStatuses struct {
	*memory.StatusBoard
	delay atomic.Int64 // nanoseconds
}

func (s *slowStatuses) Statuses(ctx context.Context) ([]fleet.Status, error) {
	time.Sleep(time.Duration(s.delay.Load()))
	return s.StatusBoard.Statuses(ctx)
}

// A refresh that succeeds only after a hang is not waited on in full by
// every request whose view is too old: as after a failure, a request waits
// at most inlineWait, then routes by the previous view.
func TestViewCacheBoundsTheWaitOnAHungDependency(t *testing.T) {
	statuses := &slowStatuses{StatusBoard: memory.NewStatusBoard()}
	h, err := New(Config{RefreshEvery: time.Millisecond}, Deps{Fleet: &panickyStore{}, Statuses: statuses,
		InFlight: memory.NewInFlight(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	statuses.delay.Store(int64(maxLoad/2 + 100*time.Millisecond))
	first := h.view.get(context.Background(), time.Now()) // waited for: nothing else to route by
	if first == nil || !first.hung {
		t.Fatalf("first view %+v; want it marked hung", first)
	}
	start := time.Now()
	if v := h.view.get(context.Background(), time.Now().Add(time.Hour)); v != first {
		t.Fatal("the request did not route by the previous view")
	}
	if waited := time.Since(start); waited > inlineWait+200*time.Millisecond {
		t.Fatalf("a request waited %s on a refresh like the last, which hung; want at most %s", waited, inlineWait)
	}
}

// hangingRefresher is a worker that probes one node at a time, as the real
// one does, where node 1 hangs for the whole wait.
type hangingRefresher struct {
	mu      sync.Mutex
	hang    time.Duration
	expired atomic.Int32 // probes that began with their time already out
	probed  atomic.Int32
}

func (r *hangingRefresher) RefreshNode(ctx context.Context, id int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil {
		r.expired.Add(1)
		return ctx.Err()
	}
	r.probed.Add(1)
	if id == 1 {
		time.Sleep(r.hang)
	}
	return nil
}

// Probes queued behind a node that hangs do not start with their time
// already spent: a healthy node would be recorded down.
func TestRefreshNodeTimeStartsWithItsTurn(t *testing.T) {
	r := &hangingRefresher{hang: 150 * time.Millisecond}
	h, err := New(Config{RefreshEvery: time.Millisecond, Manage: ManageConfig{RefreshTimeout: 200 * time.Millisecond}},
		Deps{Fleet: &panickyStore{}, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(),
			Log: slog.New(slog.DiscardHandler), Refresher: r})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, id := range []int64{1, 1, 2} {
		wg.Add(1)
		go func() { defer wg.Done(); h.refreshNode(context.Background(), id) }()
		time.Sleep(10 * time.Millisecond) // in this order
	}
	wg.Wait()
	if n := r.expired.Load(); n != 0 {
		t.Fatalf("%d probes began with their time out (%d ran)", n, r.probed.Load())
	}
}
