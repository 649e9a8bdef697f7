package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
	"github.com/aivonx/aivonx/worker"
)

type nodeList []fleet.Node

func (l nodeList) Nodes(context.Context) ([]fleet.Node, error) { return l, nil }

// lock answers as a Redis lock would: taken, held by another worker, or
// unreachable.
type lock struct {
	ok  bool
	err error
}

func (l lock) TryLock(context.Context) (func(), bool, error) { return func() {}, l.ok, l.err }

// TestPassWithoutItsLock: the lock lives in Redis, and health checks must
// go on through a Redis outage (the pass still reaches Postgres); another
// worker's lock still means this one skips.
func TestPassWithoutItsLock(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	nodes := nodeList{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}
	run := func(l lock, passes int) ([]fleet.Status, string) {
		t.Helper()
		logs := &testenv.Buffer{}
		board := memory.NewStatusBoard()
		w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, nodes, board, l, nil, slog.New(slog.NewJSONHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for range passes {
			if err := w.RunOnce(context.Background()); err != nil {
				t.Fatalf("pass: %v", err)
			}
		}
		statuses, _ := board.Statuses(context.Background())
		return statuses, logs.String()
	}

	statuses, logs := run(lock{err: errors.New("take worker lock: unavailable: connection refused")}, 3)
	if len(statuses) != 1 || !statuses[0].Healthy {
		t.Fatalf("statuses with the lock unreachable: %+v", statuses)
	}
	if n := strings.Count(logs, "worker lock unavailable"); n != 1 {
		t.Fatalf("%d warnings over three passes, want one per outage:\n%s", n, logs)
	}

	statuses, logs = run(lock{ok: false}, 3)
	if len(statuses) != 0 {
		t.Fatalf("a pass ran while another worker held the lock: %+v", statuses)
	}
	// Said once, at info: `worker --once` would otherwise end in silence.
	if n := strings.Count(logs, `"level":"INFO","msg":"another worker holds the lock`); n != 1 {
		t.Fatalf("%d info lines over three skipped passes, want one:\n%s", n, logs)
	}
	if statuses, _ := run(lock{ok: true}, 1); len(statuses) != 1 {
		t.Fatalf("no pass with the lock taken: %+v", statuses)
	}
}

// TestPassReadsStatusesWithoutMarks: a passive mark is no probe. A node
// marked unreachable whose next probe fails is still within --fall (the
// mark keeps it out of routing until a probe passes), and the pass written
// does not carry the mark's verdict.
func TestPassReadsStatusesWithoutMarks(t *testing.T) {
	ctx := context.Background()
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	nodes := nodeList{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}
	board := memory.NewStatusBoard()
	w, err := worker.New(worker.Config{Rise: 2, Fall: 2, ProbeTimeout: time.Second}, nodes, board, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	board.MarkUnreachable(ctx, 1, "connection refused")
	node.Stop()
	if err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	written, _ := board.PassStatuses(ctx)
	if len(written) != 1 || !written[0].Healthy || written[0].Fails != 1 {
		t.Fatalf("after one failed probe with fall 2: %+v; want still healthy, one failure", written)
	}
	if routed, _ := board.Statuses(ctx); routed[0].Healthy {
		t.Fatalf("the mark no longer holds: %+v", routed[0])
	}
}

// outageList is a node store that can be down.
type outageList struct {
	nodes nodeList
	down  bool
}

func (l *outageList) Nodes(ctx context.Context) ([]fleet.Node, error) {
	if l.down {
		return nil, errors.New("list nodes: unavailable: connection refused")
	}
	return l.nodes, nil
}

// TestPassThroughANodeStoreOutage: with the node store (Postgres) down the
// pass probes the last nodes it read, so that a node that dies or recovers
// during the outage is seen (the statuses still reach Redis); a worker that
// never read the nodes has nothing to probe and says why.
func TestPassThroughANodeStoreOutage(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	store := &outageList{nodes: nodeList{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}}
	logs := &testenv.Buffer{}
	board := memory.NewStatusBoard()
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, store, board, nil, nil, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	store.down = true
	if err := w.RunOnce(context.Background()); err == nil {
		t.Fatal("a pass with no node list ever read succeeded")
	}
	store.down = false
	if err := w.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	store.down = true
	node.Stop()
	for range 2 {
		if err := w.RunOnce(context.Background()); err != nil {
			t.Fatalf("pass during the outage: %v", err)
		}
	}
	if statuses, _ := board.Statuses(context.Background()); len(statuses) != 1 || statuses[0].Healthy {
		t.Fatalf("statuses after the node died during the outage: %+v", statuses)
	}
	if n := strings.Count(logs.String(), "node store unavailable"); n != 1 {
		t.Fatalf("%d warnings over two passes, want one per outage:\n%s", n, logs)
	}
}

// A node that redirects its checks elsewhere is not followed there: the
// worker would fetch, and publish, what an address outside the networks
// nodes may use answers.
func TestProbeFollowsNoRedirect(t *testing.T) {
	elsewhere := fakeollama.Start(t, fakeollama.Options{Models: []string{"internal-only:latest"}})
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL()+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(node.Close)
	board := memory.NewStatusBoard()
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second},
		nodeList{{ID: 1, Name: "a", BaseURL: node.URL, Enabled: true}}, board, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	statuses, _ := board.Statuses(context.Background())
	if len(statuses) != 1 || statuses[0].Healthy || len(statuses[0].Models) != 0 || !strings.Contains(statuses[0].Reason, "302") {
		t.Fatalf("statuses %+v; want the node down with HTTP 302 and no models", statuses)
	}
	if n := elsewhere.TotalRequests(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

// countingLock is a lock only this worker takes; it counts takes and
// releases.
type countingLock struct {
	mu              sync.Mutex
	taken, released int
}

func (l *countingLock) TryLock(context.Context) (func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken++
	return func() { l.mu.Lock(); l.released++; l.mu.Unlock() }, true, nil
}

func (l *countingLock) counts() (taken, released int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.taken, l.released
}

// Scheduled passes keep the lock between them, so that the other workers
// stand by rather than pass in turn; stop lets it go. A single pass
// (RunOnce: worker --once, a Lambda invocation) releases it.
func TestScheduleKeepsTheLock(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	l := &countingLock{}
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second},
		nodeList{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}, memory.NewStatusBoard(), l, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if taken, released := l.counts(); taken != 1 || released != 1 {
		t.Fatalf("RunOnce: taken %d, released %d; want 1, 1", taken, released)
	}
	stop := w.Schedule(context.Background(), 20*time.Millisecond)
	if taken, released := l.counts(); taken != 2 || released != 1 {
		t.Fatalf("Schedule's first pass, before it returns: taken %d, released %d; want 2, 1", taken, released)
	}
	deadline := time.Now().Add(5 * time.Second)
	for taken, _ := l.counts(); taken < 4 && time.Now().Before(deadline); taken, _ = l.counts() {
		time.Sleep(10 * time.Millisecond)
	}
	if taken, released := l.counts(); taken < 4 || released != 1 {
		t.Fatalf("scheduled passes: taken %d, released %d; want several takes and no release", taken, released)
	}
	stop()
	if _, released := l.counts(); released != 2 {
		t.Fatalf("after stop: released %d; want the kept lock let go", released)
	}
}

// switchLock is held by another worker until taken is set.
type switchLock struct {
	mu       sync.Mutex
	ours     bool
	released int
}

func (l *switchLock) TryLock(context.Context) (func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return func() { l.mu.Lock(); l.released++; l.mu.Unlock() }, l.ours, nil
}

// flakyNodes is a node store that can go down.
type flakyNodes struct {
	nodeList
	down atomic.Bool
}

func (f *flakyNodes) Nodes(ctx context.Context) ([]fleet.Node, error) {
	if f.down.Load() {
		return nil, errors.New("read nodes: unavailable")
	}
	return f.nodeList.Nodes(ctx)
}

// A worker that stands by still reads the node list, so that when it takes
// over during a store outage it probes what it last read; a kept lock
// whose pass fails is let go, for a worker that may do better.
func TestStandbyTakesOverDuringAStoreOutage(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	nodes := &flakyNodes{nodeList: nodeList{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}}
	l := &switchLock{}
	board := memory.NewStatusBoard()
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, nodes, board, l, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop := w.Schedule(context.Background(), time.Hour) // stands by: the lock is another's
	defer stop()
	nodes.down.Store(true)
	l.mu.Lock()
	l.ours = true // the holder died; its lock lapsed
	l.mu.Unlock()
	if err := w.RunOnce(context.Background()); err != nil {
		t.Fatalf("a pass during the outage: %v", err)
	}
	if st, _ := board.Statuses(context.Background()); len(st) != 1 || !st[0].Healthy {
		t.Fatalf("statuses %+v; want the last known node probed", st)
	}

	// A worker that never read the list fails its passes; one that keeps
	// the lock lets it go when it does.
	fresh, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, nodes, memory.NewStatusBoard(), l, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	before := l.released
	l.mu.Unlock()
	stopFresh := fresh.Schedule(context.Background(), time.Hour) // its first pass fails
	l.mu.Lock()
	after := l.released
	l.mu.Unlock()
	if after != before+1 {
		t.Fatalf("a kept lock whose pass failed was released %d times; want once", after-before)
	}
	stopFresh()
}
