package fleet

import (
	"sort"
	"time"
)

// Member is one node of a [Snapshot] with its last observed status.
type Member struct {
	Node   Node
	Status Status
	// Known is false until the worker has observed the node once.
	Known bool
}

// Candidate is a node that may take one request for one model. It carries
// more than a count and a latency so that future policies (prefer a node
// where the model is loaded, measured tokens per second) fit in.
type Candidate struct {
	Node    Node
	Latency time.Duration
	// Loaded reports whether the model is in the node's memory (/api/ps).
	Loaded bool
	// Stale is true when no fresh status existed and the candidate came
	// from the last known one (the worker is late or down).
	Stale bool
}

// Snapshot is an immutable view of the fleet at one moment: the admin's
// nodes joined with the observed statuses and indexed by model, so that
// finding the candidates for a request is a map lookup. Build it once per
// refresh and share it; it is safe for concurrent use.
type Snapshot struct {
	members []Member
	byModel map[string][]int // model key → indexes into members; enabled nodes only
}

// NewSnapshot joins nodes with statuses (matched by node ID; statuses of
// unknown nodes are ignored). Members are ordered by node ID.
func NewSnapshot(nodes []Node, statuses []Status) *Snapshot {
	byID := make(map[int64]Status, len(statuses))
	for _, st := range statuses {
		byID[st.NodeID] = st
	}
	s := &Snapshot{members: make([]Member, len(nodes)), byModel: make(map[string][]int)}
	for i, n := range nodes {
		st, ok := byID[n.ID]
		s.members[i] = Member{Node: n, Status: st, Known: ok}
	}
	sort.Slice(s.members, func(i, j int) bool { return s.members[i].Node.ID < s.members[j].Node.ID })
	for i, m := range s.members {
		if !m.Node.Enabled {
			continue
		}
		seen := make(map[string]bool, len(m.Status.Models))
		for _, model := range m.Status.Models {
			k := model.Key()
			if !seen[k] {
				seen[k] = true
				s.byModel[k] = append(s.byModel[k], i)
			}
		}
	}
	return s
}

// Members returns every node with its status, ordered by node ID. The
// slice must not be modified.
func (s *Snapshot) Members() []Member { return s.members }

// Member returns the node with the given ID.
func (s *Snapshot) Member(id int64) (Member, bool) {
	i := sort.Search(len(s.members), func(i int) bool { return s.members[i].Node.ID >= id })
	if i < len(s.members) && s.members[i].Node.ID == id {
		return s.members[i], true
	}
	return Member{}, false
}

// Routing holds the per-request inputs of candidate selection.
type Routing struct {
	Now time.Time
	// MaxAge is how old a status may be and still count as fresh.
	MaxAge time.Duration
	// Excluded reports whether a passive check's mark keeps the node out
	// despite its status: see [MarkHolds]. Nil excludes nothing.
	Excluded func(nodeID int64, st Status) bool
}

func (r Routing) usable(m Member) bool {
	return m.Node.Enabled && m.Known && m.Status.Healthy &&
		(r.Excluded == nil || !r.Excluded(m.Node.ID, m.Status))
}

// Routable returns the members that may take requests: enabled, healthy by a
// fresh status and not marked unreachable. When no status at all is fresh
// (the worker is down), the members healthy by their last known status are
// returned instead, so a dead worker degrades routing rather than taking the
// fleet down; passive checks and failover then weed out dead nodes.
func (s *Snapshot) Routable(r Routing) []Member {
	var fresh, stale []Member
	for _, m := range s.members {
		if !r.usable(m) {
			continue
		}
		if m.Status.Fresh(r.Now, r.MaxAge) {
			fresh = append(fresh, m)
		} else if len(fresh) == 0 {
			stale = append(stale, m)
		}
	}
	if len(fresh) > 0 {
		return fresh
	}
	return stale
}

// Candidates returns the nodes that may serve model, by the rule of
// [Snapshot.Routable] applied to the nodes that list the model. It returns
// a *ModelNotFoundError when no enabled node lists the model,
// a *ModelUnavailableError when the nodes that list it are all unusable, and
// ErrNoCandidate when no node is usable at all.
func (s *Snapshot) Candidates(model string, r Routing) ([]Candidate, error) {
	key := ModelKey(model)
	idx := s.byModel[key]
	var fresh, stale []Candidate
	for _, i := range idx {
		m := s.members[i]
		if !r.usable(m) {
			continue
		}
		if fresh == nil {
			fresh = make([]Candidate, 0, len(idx))
		}
		c := Candidate{Node: m.Node, Latency: m.Status.Latency, Loaded: lists(m.Status.Loaded, key)}
		if m.Status.Fresh(r.Now, r.MaxAge) {
			fresh = append(fresh, c)
		} else if len(fresh) == 0 {
			c.Stale = true
			stale = append(stale, c)
		}
	}
	switch {
	case len(fresh) > 0:
		return fresh, nil
	case len(stale) > 0:
		return stale, nil
	case !s.anyUsable(r):
		return nil, ErrNoCandidate
	case len(idx) > 0:
		return nil, &ModelUnavailableError{Model: model}
	default:
		return nil, &ModelNotFoundError{Model: model}
	}
}

func (s *Snapshot) anyUsable(r Routing) bool {
	for _, m := range s.members {
		if r.usable(m) {
			return true
		}
	}
	return false
}

func lists(models []Model, key string) bool {
	for _, m := range models {
		if m.Key() == key {
			return true
		}
	}
	return false
}

// latencyTolerance is how much slower than the fastest candidate a node may
// be and still count as "lowest latency": probe latencies jitter, and
// treating near-equal nodes as equal spreads load between them instead of
// piling it on whichever won the last probe by a few microseconds.
const latencyTolerance = 1.25

// Narrow splits the candidates into those the strategy prefers, for the
// in-flight tracker to take the least loaded of, and the rest, to fall back
// on when every preferred one fails. LeastActive prefers all of them.
// LowestLatency prefers those within 25% of the fastest known latency, or
// all of them while no latency is known. The input is not modified.
func (s Strategy) Narrow(cands []Candidate) (preferred, rest []Candidate) {
	if s != LowestLatency || len(cands) < 2 {
		return cands, nil
	}
	var best time.Duration
	for _, c := range cands {
		if c.Latency > 0 && (best == 0 || c.Latency < best) {
			best = c.Latency
		}
	}
	if best == 0 {
		return cands, nil
	}
	limit := time.Duration(float64(best) * latencyTolerance)
	preferred = make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if c.Latency > 0 && c.Latency <= limit {
			preferred = append(preferred, c)
		} else {
			rest = append(rest, c)
		}
	}
	return preferred, rest
}

// PickLeast returns the index in [0, n) with the smallest load, choosing
// uniformly at random among ties (reservoir sampling, as caddy does), so
// that sequential traffic does not always land on the first node. rnd(k)
// must return a number in [0, k). It returns -1 when n is 0.
func PickLeast(n int, load func(i int) int, rnd func(k int) int) int {
	best, bestLoad, ties := -1, 0, 0
	for i := 0; i < n; i++ {
		l := load(i)
		switch {
		case best < 0 || l < bestLoad:
			best, bestLoad, ties = i, l, 1
		case l == bestLoad:
			ties++
			if rnd(ties) == 0 {
				best = i
			}
		}
	}
	return best
}
