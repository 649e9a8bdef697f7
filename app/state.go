package app

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// nodeState is one node as /api/proxy/state and the UI show it: what the
// admin configured next to what was observed. Latency is in milliseconds
// and null when unknown, never Infinity (the upstream's invalid JSON).
type nodeState struct {
	ID             int64      `json:"id"`
	Name           string     `json:"name"`
	Address        string     `json:"address"`
	Enabled        bool       `json:"enabled"`
	Healthy        bool       `json:"healthy"`
	Status         string     `json:"status"` // active | standby | disabled
	LatencyMS      *float64   `json:"latency_ms"`
	Version        string     `json:"version,omitempty"`
	Models         []string   `json:"models"`
	LoadedModels   []string   `json:"loaded_models"`
	ActiveRequests int        `json:"active_requests"`
	LastCheck      *time.Time `json:"last_check"`
	Reason         string     `json:"reason,omitempty"`
}

func names(models []fleet.Model) []string {
	out := make([]string, len(models))
	for i, m := range models {
		out[i] = m.Name
	}
	return out
}

// nodeStates joins the snapshot with the in-flight counts.
func (h *Handler) nodeStates(ctx context.Context, v *view) []nodeState {
	members := v.snap.Members()
	routable := make(map[int64]bool)
	for _, m := range v.snap.Routable(h.routing()) {
		routable[m.Node.ID] = true
	}
	ids := make([]int64, len(members))
	for i, m := range members {
		ids[i] = m.Node.ID
	}
	counts, err := h.inflight.Counts(ctx, ids)
	if err != nil {
		h.log.Warn("read in-flight counts", "err", err.Error())
	}
	out := make([]nodeState, len(members))
	for i, m := range members {
		s := nodeState{
			ID: m.Node.ID, Name: m.Node.Name, Address: m.Node.BaseURL, Enabled: m.Node.Enabled,
			Healthy: routable[m.Node.ID], Version: m.Status.Version,
			Models: names(m.Status.Models), LoadedModels: names(m.Status.Loaded),
			ActiveRequests: counts[m.Node.ID], Reason: m.Status.Reason,
		}
		switch {
		case !m.Node.Enabled:
			s.Status = "disabled"
		case s.Healthy:
			s.Status = "active"
		default:
			s.Status = "standby"
			if s.Reason == "" {
				s.Reason = "not checked yet"
				if m.Known {
					s.Reason = "unreachable (passive check)"
				}
			}
		}
		if m.Status.Latency > 0 {
			l := ms(m.Status.Latency)
			s.LatencyMS = &l
		}
		if !m.Status.CheckedAt.IsZero() {
			t := m.Status.CheckedAt.UTC()
			s.LastCheck = &t
		}
		out[i] = s
	}
	return out
}

// handleState is GET /api/proxy/state: every node with its admin and
// observed state, plus the upstream's keyed maps for old clients.
func (h *Handler) handleState(w http.ResponseWriter, r *http.Request) {
	v := h.view.get(r.Context(), h.now())
	nodes := h.nodeStates(r.Context(), v)
	active, standby := []string{}, []string{}
	idMap := map[string]string{}
	latencies := map[string]*float64{}
	counts := map[string]int{}
	models := map[string][]string{}
	for _, n := range nodes {
		if n.Status == "active" {
			active = append(active, n.Address)
		} else if n.Status == "standby" {
			standby = append(standby, n.Address)
		}
		idMap[strconv.FormatInt(n.ID, 10)] = n.Address
		var secs *float64
		if n.LatencyMS != nil {
			s := *n.LatencyMS / 1000
			secs = &s
		}
		latencies[n.Address] = secs
		counts[n.Address] = n.ActiveRequests
		models[n.Address] = n.Models
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"version": h.cfg.Version, "mode": h.cfg.Mode, "strategy": v.settings.Strategy,
		"nodes": nodes, "active": active, "standby": standby, "node_id_map": idMap,
		"latencies": latencies, "active_counts": counts, "models": models,
	})
}

// handleActiveRequests is GET /api/proxy/active-requests[?node_id=N], in
// the upstream's shape: enabled nodes (or the one asked for), busiest first.
func (h *Handler) handleActiveRequests(w http.ResponseWriter, r *http.Request) {
	var want int64
	if s := r.URL.Query().Get("node_id"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id < 0 {
			writeError(w, ollamaDialect, http.StatusBadRequest, "invalid node_id: must be an integer")
			return
		}
		want = id
	}
	v := h.view.get(r.Context(), h.now())
	type entry struct {
		ID             int64    `json:"id"`
		Name           string   `json:"name"`
		Address        string   `json:"address"`
		ActiveRequests int      `json:"active_requests"`
		Status         string   `json:"status"`
		Latency        *float64 `json:"latency"` // seconds
		Models         []string `json:"models"`
	}
	out := []entry{}
	total := 0
	for _, n := range h.nodeStates(r.Context(), v) {
		if (want != 0 && n.ID != want) || (want == 0 && !n.Enabled) {
			continue
		}
		e := entry{ID: n.ID, Name: n.Name, Address: n.Address, ActiveRequests: n.ActiveRequests, Status: n.Status, Models: n.Models}
		if n.LatencyMS != nil {
			s := *n.LatencyMS / 1000
			e.Latency = &s
		}
		out = append(out, e)
		total += n.ActiveRequests
	}
	if want != 0 && len(out) == 0 {
		writeError(w, ollamaDialect, http.StatusNotFound, "node not found: "+strconv.FormatInt(want, 10))
		return
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ActiveRequests > out[j].ActiveRequests })
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out, "total_active_requests": total})
}

// handleHealth is GET /api/health: the proxy is up; it reports each
// dependency and how old the worker's last pass is. It answers 200 while the
// proxy can serve (even degraded), so load balancers keep it in rotation;
// the status says "degraded" when a dependency is down, the worker's pass
// is stale, or no configured node can be routed to.
func (h *Handler) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := "ok"
	deps := map[string]any{}
	for _, d := range h.cfg.Dependencies {
		if err := d.Check(ctx); err != nil {
			deps[d.Name] = map[string]string{"status": "down", "error": err.Error()}
			status = "degraded"
		} else {
			deps[d.Name] = map[string]string{"status": "ok"}
		}
	}
	v := h.view.get(r.Context(), h.now())
	last := v.lastPass()
	worker := map[string]any{"last_pass": nil, "age_seconds": nil, "stale": true}
	if !last.IsZero() {
		age := h.now().Sub(last)
		worker = map[string]any{"last_pass": last.UTC(), "age_seconds": age.Seconds(), "stale": age > h.cfg.StatusMaxAge}
	}
	if worker["stale"] == true && len(v.snap.Members()) > 0 {
		status = "degraded"
	}
	routable := len(v.snap.Routable(h.routing()))
	if routable == 0 && len(v.snap.Members()) > 0 {
		status = "degraded" // up, but every request for a model fails
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status": status, "version": h.cfg.Version, "mode": h.cfg.Mode,
		"dependencies": deps, "worker": worker,
		"nodes": map[string]int{"total": len(v.snap.Members()), "healthy": routable},
	})
}
