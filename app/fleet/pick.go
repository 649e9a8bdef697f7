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
	// Stale is true when the node's status is older than the routing's
	// MaxAge: the worker is late or down.
	Stale bool
}

// Snapshot is an immutable view of the fleet at one moment: the admin's
// nodes joined with the observed statuses and indexed by model, so that
// finding the candidates for a request is a map lookup. Build it once per
// refresh and share it; it is safe for concurrent use.
type Snapshot struct {
	members []Member
	byModel map[string][]int // model key → indexes into members
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
	// Disabled nodes are indexed too: a model only they have is
	// unavailable (503) rather than unknown (404), to which the ollama CLI
	// would answer by pulling it onto every other node.
	for i, m := range s.members {
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

func (r Routing) usable(m Member) bool { return m.Node.Enabled && r.Up(m) }

// Up reports whether m is up, enabled or not: healthy by its last known
// status and not marked unreachable. A disabled node that is up still
// answers what concerns the models it keeps (a delete).
func (r Routing) Up(m Member) bool {
	return m.Known && m.Status.Healthy && (r.Excluded == nil || !r.Excluded(m.Node.ID, m.Status))
}

// Routable returns the members that may take requests: enabled, healthy by
// their last known status and not marked unreachable. A stale status counts
// as it was last seen: a dead worker degrades routing rather than taking
// the fleet down, and passive checks and failover weed out dead nodes. Nor
// does a fresh status outrank a stale one: with the worker down, the nodes
// a replica re-probed itself (after a load, a cut stream, an edit) would be
// the only fresh ones, and would take all the traffic.
func (s *Snapshot) Routable(r Routing) []Member {
	var out []Member
	for _, m := range s.members {
		if r.usable(m) {
			out = append(out, m)
		}
	}
	return out
}

// Candidates returns the nodes that may serve model, by the rule of
// [Snapshot.Routable] applied to the nodes that list the model. It returns
// a *ModelNotFoundError when no node lists the model,
// a *ModelUnavailableError when the nodes that list it are all unusable, and
// ErrNoCandidate when no node is usable at all.
func (s *Snapshot) Candidates(model string, r Routing) ([]Candidate, error) {
	key := ModelKey(model)
	idx := s.byModel[key]
	var out []Candidate
	for _, i := range idx {
		m := s.members[i]
		if !r.usable(m) {
			continue
		}
		if out == nil {
			out = make([]Candidate, 0, len(idx))
		}
		out = append(out, Candidate{Node: m.Node, Latency: m.Status.Latency, Loaded: lists(m.Status.Loaded, key),
			Stale: !m.Status.Fresh(r.Now, r.MaxAge)})
	}
	switch {
	case len(out) > 0:
		return out, nil
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
