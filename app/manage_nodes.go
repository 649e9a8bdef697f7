package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// nodeJSON is a node as the management API shows it: the admin's fields
// (with the upstream's address and port) and the observed status, read-only.
type nodeJSON struct {
	ID        int64          `json:"id"`
	Name      string         `json:"name"`
	Address   string         `json:"address"`
	BaseURL   string         `json:"base_url"`
	Port      int            `json:"port"`
	Enabled   bool           `json:"enabled"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	Status    nodeStatusJSON `json:"status"`
}

type nodeStatusJSON struct {
	Healthy        bool       `json:"healthy"`
	State          string     `json:"state"` // active | standby | disabled
	LatencyMS      *float64   `json:"latency_ms"`
	Models         []string   `json:"models"`
	LoadedModels   []string   `json:"loaded_models"`
	Version        string     `json:"version"`
	LastCheck      *time.Time `json:"last_check"`
	Reason         string     `json:"reason"`
	ActiveRequests int        `json:"active_requests"`
}

func nodePort(baseURL string) int {
	if u, err := url.Parse(baseURL); err == nil {
		p, _ := strconv.Atoi(u.Port())
		return p
	}
	return 0
}

// onlyFields trims each node to the fields ?fields=a,b names, as the
// upstream's dynamic-fields serializer did on every node action; names it
// does not know are ignored, as there. Without the parameter the nodes
// are returned whole.
func onlyFields(r *http.Request, nodes []nodeJSON) []any {
	out := make([]any, len(nodes))
	var keep []string
	for _, f := range strings.Split(r.URL.Query().Get("fields"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			keep = append(keep, f)
		}
	}
	for i, n := range nodes {
		if len(keep) == 0 {
			out[i] = n
			continue
		}
		b, _ := json.Marshal(n)
		var all, trimmed map[string]json.RawMessage
		_ = json.Unmarshal(b, &all)
		trimmed = make(map[string]json.RawMessage, len(keep))
		for _, k := range keep {
			if v, ok := all[k]; ok {
				trimmed[k] = v
			}
		}
		out[i] = trimmed
	}
	return out
}

// nodeView joins nodes with their observed state.
func (h *Handler) nodeView(ctx context.Context, nodes []fleet.Node) []nodeJSON {
	states := map[int64]nodeState{}
	if len(nodes) > 0 {
		for _, s := range h.nodeStates(ctx, h.view.get(ctx, h.now())) {
			states[s.ID] = s
		}
	}
	out := make([]nodeJSON, len(nodes))
	for i, n := range nodes {
		j := nodeJSON{ID: n.ID, Name: n.Name, Address: n.BaseURL, BaseURL: n.BaseURL, Port: nodePort(n.BaseURL),
			Enabled: n.Enabled, CreatedAt: n.CreatedAt.UTC(), UpdatedAt: n.UpdatedAt.UTC()}
		if s, ok := states[n.ID]; ok {
			j.Status = nodeStatusJSON{Healthy: s.Healthy, State: s.Status, LatencyMS: s.LatencyMS, Models: s.Models,
				LoadedModels: s.LoadedModels, Version: s.Version, LastCheck: s.LastCheck, Reason: s.Reason, ActiveRequests: s.ActiveRequests}
			// The view may predate this write: the admin's switch is known.
			if !n.Enabled {
				j.Status.State, j.Status.Healthy = "disabled", false
			} else if j.Status.State == "disabled" {
				j.Status.State = "standby"
			}
		} else {
			j.Status = nodeStatusJSON{State: "standby", Models: []string{}, LoadedModels: []string{}, Reason: "not checked yet"}
			if !n.Enabled {
				j.Status.State = "disabled"
			}
		}
		if j.Status.Models == nil {
			j.Status.Models = []string{}
		}
		if j.Status.LoadedModels == nil {
			j.Status.LoadedModels = []string{}
		}
		out[i] = j
	}
	return out
}

// pageParams reads limit and offset as DRF's LimitOffsetPagination does:
// a bad or missing value means the default; limit is capped.
func pageParams(q url.Values, def, max int) (limit, offset int) {
	limit = def
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		limit = min(v, max)
	}
	if v, err := strconv.Atoi(q.Get("offset")); err == nil && v > 0 {
		offset = v
	}
	return limit, offset
}

// pageLink is the relative URL of another page, or nil. Relative, so that
// no Host header is trusted to build it.
func pageLink(r *http.Request, limit, offset int) *string {
	q := r.URL.Query()
	q.Set("limit", strconv.Itoa(limit))
	q.Set("offset", strconv.Itoa(offset))
	s := r.URL.Path + "?" + q.Encode()
	return &s
}

// handleNodeList is GET /api/proxy/nodes?limit=&offset=, ordered by ID.
func (h *Handler) handleNodeList(w http.ResponseWriter, r *http.Request) {
	nodes, err := h.store.Nodes(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	limit, offset := pageParams(r.URL.Query(), 100, 100)
	offset = min(offset, len(nodes)) // past the end is the end, and offset+limit cannot overflow
	page := nodes[min(offset, len(nodes)):min(offset+limit, len(nodes))]
	var next, prev *string
	if offset+limit < len(nodes) {
		next = pageLink(r, limit, offset+limit)
	}
	if offset > 0 {
		prev = pageLink(r, limit, max(0, offset-limit))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"count": len(nodes), "next": next, "previous": prev, "results": onlyFields(r, h.nodeView(r.Context(), page)),
	})
}

func nodeID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, ollamaDialect, http.StatusNotFound, "node not found: "+r.PathValue("id"))
		return 0, false
	}
	return id, true
}

// findNode reads one node from the admin store, or from the fleet store
// when the deployment has no admin store.
func (h *Handler) findNode(ctx context.Context, id int64) (fleet.Node, error) {
	if h.deps.Admin != nil {
		return h.deps.Admin.Node(ctx, id)
	}
	nodes, err := h.store.Nodes(ctx)
	if err != nil {
		return fleet.Node{}, err
	}
	for _, n := range nodes {
		if n.ID == id {
			return n, nil
		}
	}
	return fleet.Node{}, fmt.Errorf("node %d: %w", id, fleet.ErrNotFound)
}

// nodeFailed answers err, a store's error about node id, if there is one
// (404 when the node does not exist) and reports whether it did. fields
// are the request's, if it had any (nodeURLField).
func nodeFailed(w http.ResponseWriter, r *http.Request, id int64, err error, fields map[string]json.RawMessage) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, ollamaDialect, http.StatusNotFound, "node not found: "+strconv.FormatInt(id, 10))
	default:
		writeManageErr(w, r, err, nodeURLField(fields))
	}
	return true
}

// nodeURLField names the field a node's URL came in: "address" when the
// request used the upstream's address and port, so that an error about
// the URL sits by the field the form filled in.
func nodeURLField(fields map[string]json.RawMessage) string {
	if _, base := fields["base_url"]; !base {
		if _, addr := fields["address"]; addr {
			return "address"
		}
	}
	return "base_url"
}

// handleNodeGet is GET /api/proxy/nodes/{id}.
func (h *Handler) handleNodeGet(w http.ResponseWriter, r *http.Request) {
	id, ok := nodeID(w, r)
	if !ok {
		return
	}
	n, err := h.findNode(r.Context(), id)
	if nodeFailed(w, r, id, err, nil) {
		return
	}
	writeJSON(w, http.StatusOK, onlyFields(r, h.nodeView(r.Context(), []fleet.Node{n}))[0])
}

func (h *Handler) requireAdminStore(w http.ResponseWriter) bool {
	if h.deps.Admin == nil {
		writeError(w, ollamaDialect, http.StatusNotImplemented, "nodes cannot be changed in this deployment")
		return false
	}
	return true
}

// handleNodeCreate is POST /api/proxy/nodes: 201 with the node.
func (h *Handler) handleNodeCreate(w http.ResponseWriter, r *http.Request) {
	if !h.requireAdminStore(w) {
		return
	}
	fields, ok := h.readObject(w, r, nodeFields...)
	if !ok {
		return
	}
	n := fleet.Node{Enabled: true}
	if !h.applyNodeInput(w, r, &n, fields, true) {
		return
	}
	created, err := h.deps.Admin.CreateNode(r.Context(), n)
	if err != nil {
		writeManageErr(w, r, err, nodeURLField(fields))
		return
	}
	h.log.Info("node added", "node", created.Name, "node_id", created.ID, "url", created.BaseURL, "enabled", created.Enabled)
	h.view.invalidate()
	h.refreshSoon(created.ID)
	writeJSON(w, http.StatusCreated, onlyFields(r, h.nodeView(r.Context(), []fleet.Node{created}))[0])
}

// handleNodeUpdate is PUT (partial false) or PATCH /api/proxy/nodes/{id}.
// PUT replaces the node's description: the URL is required, a name left
// out is derived from it. The drain switch (enabled) is kept when left
// out, as the upstream's PUT kept "active": renaming a drained node must
// not put it back in service. PATCH changes only what it is given.
func (h *Handler) handleNodeUpdate(partial bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.requireAdminStore(w) {
			return
		}
		id, ok := nodeID(w, r)
		if !ok {
			return
		}
		fields, ok := h.readObject(w, r, nodeFields...)
		if !ok {
			return
		}
		old, err := h.deps.Admin.Node(r.Context(), id)
		if nodeFailed(w, r, id, err, nil) {
			return
		}
		n := old
		if !partial {
			n = fleet.Node{ID: old.ID, Enabled: old.Enabled, CreatedAt: old.CreatedAt}
		}
		if !h.applyNodeInput(w, r, &n, fields, !partial) {
			return
		}
		saved, err := h.deps.Admin.UpdateNode(r.Context(), n)
		if nodeFailed(w, r, id, err, fields) {
			return
		}
		h.log.Info("node updated", "node", saved.Name, "node_id", saved.ID, "url", saved.BaseURL, "enabled", saved.Enabled)
		h.view.invalidate()
		// Saving probes the node at once, whatever changed: it is how an
		// admin asks "check it now" after fixing a node (TROUBLESHOOTING).
		if saved.Enabled {
			h.refreshSoon(saved.ID)
		}
		writeJSON(w, http.StatusOK, onlyFields(r, h.nodeView(r.Context(), []fleet.Node{saved}))[0])
	}
}

// handleNodeDelete is DELETE /api/proxy/nodes/{id}: 204.
func (h *Handler) handleNodeDelete(w http.ResponseWriter, r *http.Request) {
	if !h.requireAdminStore(w) {
		return
	}
	id, ok := nodeID(w, r)
	if !ok {
		return
	}
	if nodeFailed(w, r, id, h.deps.Admin.DeleteNode(r.Context(), id), nil) {
		return
	}
	h.log.Info("node deleted", "node_id", id)
	h.view.invalidate()
	w.WriteHeader(http.StatusNoContent)
}

// nodeFields are the fields a node write may carry: what applyNodeInput
// reads, and the read-only ones of a node's JSON, ignored, so that a client
// may send back what it read.
var nodeFields = []string{"name", "base_url", "address", "port", "enabled", "active", "id", "created_at", "updated_at", "status"}

// applyNodeInput applies the client's fields to n and validates them. It
// accepts the upstream's address+port (an address without a port gets
// port), or base_url; "active" is the upstream's name of "enabled". With
// requireURL, a URL must be given. It answers 400 itself and returns false
// on bad input.
func (h *Handler) applyNodeInput(w http.ResponseWriter, r *http.Request, n *fleet.Node, fields map[string]json.RawMessage, requireURL bool) bool {
	fe := fieldErrors{}
	str := func(key string) (string, bool) {
		raw, ok := fields[key]
		if !ok || string(raw) == "null" {
			return "", false
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			fe.add(key, "must be a string")
			return "", false
		}
		return s, true
	}
	boolean := func(key string) (bool, bool) {
		raw, ok := fields[key]
		if !ok || string(raw) == "null" {
			return false, false
		}
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			// Forms send strings.
			var s string
			if json.Unmarshal(raw, &s) == nil {
				if v, err := strconv.ParseBool(s); err == nil {
					return v, true
				}
			}
			fe.add(key, "must be a boolean")
			return false, false
		}
		return b, true
	}

	if name, ok := str("name"); ok {
		n.Name = name
	}
	if v, ok := boolean("active"); ok {
		n.Enabled = v
	}
	if v, ok := boolean("enabled"); ok {
		n.Enabled = v
	}
	port := 0
	if raw, ok := fields["port"]; ok && string(raw) != "null" {
		var p json.Number
		var s string
		switch {
		case json.Unmarshal(raw, &p) == nil:
		case json.Unmarshal(raw, &s) == nil:
			p = json.Number(strings.TrimSpace(s))
		}
		v, err := strconv.Atoi(p.String())
		switch {
		case err != nil:
			fe.add("port", "must be an integer")
		case v < 1 || v > 65535:
			fe.add("port", "must be between 1 and 65535")
		default:
			port = v
		}
	}
	baseURL, hasBase := str("base_url")
	address, hasAddr := str("address")
	urlField := "base_url"
	var raw string
	switch {
	case hasBase:
		raw = baseURL
	case hasAddr:
		raw, urlField = address, "address"
	case port != 0 && n.BaseURL != "":
		// A new port for the current address: the stored URL always has
		// one, which withPort would keep.
		u, err := url.Parse(n.BaseURL)
		if err != nil {
			fe.add("port", "cannot be set on the stored URL: "+err.Error())
			break
		}
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
		raw = u.String()
	}
	if len(fe) > 0 {
		writeFieldErrors(w, fe)
		return false
	}
	if raw == "" && requireURL && !hasBase && !hasAddr {
		writeFieldErrors(w, fieldErrors{"base_url": {"is required (or address and port)"}})
		return false
	}
	if raw != "" || hasBase || hasAddr {
		u, err := withPort(raw, port)
		if err != nil {
			msg := "is not a valid URL"
			var invalid *fleet.ValidationError
			if errors.As(err, &invalid) {
				msg = invalid.Msg
			}
			writeFieldErrors(w, fieldErrors{urlField: {msg}})
			return false
		}
		if err := h.checkAllowed(r.Context(), u); err != nil {
			writeFieldErrors(w, fieldErrors{urlField: {err.Error()}})
			return false
		}
		if _, hasName := fields["name"]; !hasName && n.Name == fleet.DefaultName(n.BaseURL) {
			n.Name = "" // a derived name follows the URL
		}
		n.BaseURL = u
	}
	if err := n.Validate(); err != nil {
		writeManageErr(w, r, err, urlField)
		return false
	}
	return true
}

// withPort normalises raw after giving it port when it names none, the
// upstream's address+port rule on top of [fleet.NormalizeURL].
func withPort(raw string, port int) (string, error) {
	s := strings.TrimSpace(raw)
	if port != 0 && s != "" {
		probe := s
		if !strings.Contains(probe, "://") {
			probe = "http://" + probe
		}
		if u, err := url.Parse(probe); err == nil && u.Host != "" && u.Port() == "" && !strings.HasSuffix(u.Host, ":") {
			u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
			s = u.String()
		}
		// An address with its own port keeps it, as upstream.
	}
	return fleet.NormalizeURL(s)
}

// checkAllowed enforces ManageConfig.AllowedNetworks: every address the
// host resolves to now must be inside an allowed prefix. (A name can
// resolve elsewhere later; allow-list IP literals, or names whose DNS you
// control, when that matters.)
func (h *Handler) checkAllowed(ctx context.Context, baseURL string) error {
	nets := h.cfg.Manage.AllowedNetworks
	if len(nets) == 0 {
		return nil
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		addrs, err = h.ext.manage.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("host %s does not resolve", host)
		}
	}
	for _, a := range addrs {
		a = a.Unmap()
		ok := false
		for _, p := range nets {
			if p.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("address %s is outside the networks nodes may use", a)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
