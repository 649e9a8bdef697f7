// Package memory holds the in-process adapters of the embedded mode: the
// observed node statuses and the in-flight counters. They serve one process;
// replicas share state through the Redis adapters instead.
package memory

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// StatusBoard keeps the last statuses written by the in-process worker and
// the passive "unreachable" marks set by the proxy. Safe for concurrent use.
type StatusBoard struct {
	mu       sync.RWMutex
	statuses map[int64]fleet.Status
	marks    map[int64]mark
	now      func() time.Time
}

type mark struct {
	at     time.Time
	reason string
}

// NewStatusBoard returns an empty board.
func NewStatusBoard() *StatusBoard {
	return &StatusBoard{statuses: map[int64]fleet.Status{}, marks: map[int64]mark{}, now: time.Now}
}

// Statuses returns every status, a node whose unreachable mark still holds
// ([fleet.MarkHolds]) reported unhealthy.
func (b *StatusBoard) Statuses(context.Context) ([]fleet.Status, error) {
	return b.read(true), nil
}

// PassStatuses returns every status as written, without the marks
// (worker.PassReader).
func (b *StatusBoard) PassStatuses(context.Context) ([]fleet.Status, error) {
	return b.read(false), nil
}

func (b *StatusBoard) read(withMarks bool) []fleet.Status {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]fleet.Status, 0, len(b.statuses))
	for id, s := range b.statuses {
		if m, ok := b.marks[id]; withMarks && ok && fleet.MarkHolds(m.at, s) {
			s = fleet.Marked(s, m.at, m.reason)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b fleet.Status) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

// WriteStatuses replaces the board with one pass; per node the newest
// check wins, so that a re-probe written late never undoes a newer pass.
// Marks that a check passed since supersedes are dropped.
func (b *StatusBoard) WriteStatuses(_ context.Context, statuses []fleet.Status) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.statuses
	b.statuses = make(map[int64]fleet.Status, len(statuses))
	for _, s := range statuses {
		if o, ok := old[s.NodeID]; ok && o.CheckedAt.After(s.CheckedAt) {
			s = o
		}
		b.statuses[s.NodeID] = s
		if m, ok := b.marks[s.NodeID]; ok && !fleet.MarkHolds(m.at, s) {
			delete(b.marks, s.NodeID)
		}
	}
	return nil
}

// MarkUnreachable records a passive check failure.
func (b *StatusBoard) MarkUnreachable(_ context.Context, nodeID int64, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.marks[nodeID] = mark{at: b.now(), reason: reason}
	return nil
}

// InFlight counts requests in flight per node. Safe for concurrent use.
type InFlight struct {
	mu     sync.Mutex
	counts map[int64]int
}

// NewInFlight returns counters at zero.
func NewInFlight() *InFlight { return &InFlight{counts: map[int64]int{}} }

// Acquire takes a slot on the least loaded node, ties broken at random.
func (f *InFlight) Acquire(_ context.Context, nodeIDs []int64) (int, func(), error) {
	if len(nodeIDs) == 0 {
		return -1, nil, fleet.ErrNoCandidate
	}
	f.mu.Lock()
	i := fleet.PickLeast(len(nodeIDs), func(i int) int { return f.counts[nodeIDs[i]] }, rand.IntN)
	id := nodeIDs[i]
	f.counts[id]++
	f.mu.Unlock()
	var once sync.Once
	return i, func() {
		once.Do(func() {
			f.mu.Lock()
			if f.counts[id]--; f.counts[id] <= 0 {
				delete(f.counts, id)
			}
			f.mu.Unlock()
		})
	}, nil
}

// Counts returns the requests in flight on the given nodes.
func (f *InFlight) Counts(_ context.Context, nodeIDs []int64) (map[int64]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int64]int, len(nodeIDs))
	for _, id := range nodeIDs {
		if n := f.counts[id]; n > 0 {
			out[id] = n
		}
	}
	return out, nil
}
