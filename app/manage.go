package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/aivonx/aivonx/app/fleet"
)

// ManageConfig configures the management API: nodes, runtime settings and
// model management (pull, delete, copy, create, push, blobs).
type ManageConfig struct {
	// AllowedNetworks, when not empty, is the only address space nodes may
	// point at: a node's host must resolve, when the node is written, to
	// addresses that all lie in one of these prefixes. It keeps an admin
	// account (or a stolen token) from turning the proxy into a client of
	// arbitrary internal services. Empty allows any address.
	AllowedNetworks []netip.Prefix
	// Resolver resolves node hosts for the AllowedNetworks check. Nil means
	// net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
	// PullConcurrency bounds the nodes one pull request downloads on at
	// once. Zero means 16.
	PullConcurrency int
	// RefreshTimeout bounds the probe of a node after a write or a pull.
	// Zero means 10s.
	RefreshTimeout time.Duration
}

type manageState struct {
	resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
}

func (h *Handler) initManage() error {
	c := &h.cfg.Manage
	if c.PullConcurrency == 0 {
		c.PullConcurrency = 16
	}
	if c.RefreshTimeout == 0 {
		c.RefreshTimeout = 10 * time.Second
	}
	if c.PullConcurrency < 0 || c.RefreshTimeout < 0 {
		return errors.New("Manage.PullConcurrency and Manage.RefreshTimeout must not be negative")
	}
	st := &manageState{resolver: c.Resolver}
	if st.resolver == nil {
		st.resolver = net.DefaultResolver
	}
	h.ext.manage = st
	return nil
}

// manageRoutes registers the management API. Reads need a logged-in user,
// writes an admin. Ollama's own model-management routes are guarded like
// the inference routes (requireAPIKey), since Ollama clients call them.
func (h *Handler) manageRoutes(mux *routeMux) {
	user := func(hf http.HandlerFunc) http.Handler { return h.requireUser(hf) }
	admin := func(hf http.HandlerFunc) http.Handler { return h.requireAdmin(hf) }

	mux.Handle("GET /api/proxy/nodes", user(h.handleNodeList))
	mux.Handle("POST /api/proxy/nodes", admin(h.handleNodeCreate))
	mux.Handle("GET /api/proxy/nodes/{id}", user(h.handleNodeGet))
	mux.Handle("PUT /api/proxy/nodes/{id}", admin(h.handleNodeUpdate(false)))
	mux.Handle("PATCH /api/proxy/nodes/{id}", admin(h.handleNodeUpdate(true)))
	mux.Handle("DELETE /api/proxy/nodes/{id}", admin(h.handleNodeDelete))

	mux.Handle("GET /api/proxy/config", user(h.handleConfigGet))
	mux.Handle("PUT /api/proxy/config", admin(h.handleConfigUpdate))
	mux.Handle("PATCH /api/proxy/config", admin(h.handleConfigUpdate))

	// The upstream left pull public, so anyone could fill every node's
	// disk; here it needs an admin.
	mux.Handle("POST /api/proxy/pull", admin(h.handleProxyPull))

	// Like inference, these take an API key, or a logged-in user in its
	// place; as they change the models on every node, that user must be an
	// admin (viewers are read-only here as everywhere).
	ollama := func(pattern string, hf http.HandlerFunc) {
		mux.Handle(pattern, h.requireAPIKey(ollamaDialect, h.adminIfUser(hf)))
	}
	ollama("POST /api/pull", h.handlePull)
	ollama("DELETE /api/delete", h.handleDelete)
	ollama("POST /api/copy", h.handleCopy)
	ollama("POST /api/create", h.handleCreate)
	ollama("POST /api/push", h.proxy(route{upstream: "/api/push", streams: true}))
	mux.Handle("HEAD /api/blobs/{digest}", h.requireAPIKey(ollamaDialect, http.HandlerFunc(h.handleBlobHead)))
	ollama("POST /api/blobs/{digest}", h.handleBlobUpload)
}

// fieldErrors are the management API's 400 details, keyed by field, in the
// shape DRF used: {"errors":{"port":["must be an integer"]}}.
type fieldErrors map[string][]string

func (fe fieldErrors) add(field, msg string) { fe[field] = append(fe[field], msg) }

// writeFieldErrors answers 400 with an "error" summary and the per-field
// "errors".
func writeFieldErrors(w http.ResponseWriter, fe fieldErrors) {
	summary := ""
	for _, f := range sortedKeys(fe) {
		if summary != "" {
			summary += "; "
		}
		summary += f + ": " + fe[f][0]
	}
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": summary, "errors": fe})
}

// writeManageErr answers a store error: a validation error becomes a field
// error, the rest goes through errorStatus. A node's duplicate URL is named
// under urlField, the field the request gave it in.
func writeManageErr(w http.ResponseWriter, r *http.Request, err error, urlField string) {
	var invalid *fleet.ValidationError
	if errors.As(err, &invalid) {
		writeFieldErrors(w, fieldErrors{invalid.Field: {invalid.Msg}})
		return
	}
	if errors.Is(err, fleet.ErrConflict) {
		writeJSON(w, http.StatusConflict, map[string]any{
			"error":  "a node with this base URL already exists",
			"errors": fieldErrors{urlField: {"a node with this URL already exists"}},
		})
		return
	}
	writeErr(w, r, ollamaDialect, err)
}

// readObject reads a JSON object body (or, for clients of the upstream, an
// HTML form) into raw fields. A JSON body is recognised by its first
// character whatever its Content-Type: curl -d labels JSON as a form, and
// parsed as one its fields would all be lost. It answers 400 itself when the
// body is not an object or names a field outside known, so that a typo
// ("enable") is an error rather than a silent no-op.
func (h *Handler) readObject(w http.ResponseWriter, r *http.Request, known ...string) (map[string]json.RawMessage, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxManageBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var out map[string]json.RawMessage
	if ct == "multipart/form-data" {
		if err := r.ParseMultipartForm(maxManageBody); err != nil {
			writeError(w, ollamaDialect, http.StatusBadRequest, "invalid form body")
			return nil, false
		}
		out = formFields(r.PostForm)
	} else {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			status, msg := h.bodyReadFailure(err)
			writeError(w, ollamaDialect, status, msg)
			return nil, false
		}
		body = bytes.Trim(body, jsonSpace)
		if !utf8.Valid(body) {
			// encoding/json would save "\xff" as "\ufffd" without a word.
			writeError(w, ollamaDialect, http.StatusBadRequest, "request body must be valid UTF-8")
			return nil, false
		}
		switch {
		case len(body) == 0:
			out = map[string]json.RawMessage{}
		case ct == "application/x-www-form-urlencoded" && body[0] != '{':
			form, err := url.ParseQuery(string(body))
			if err != nil {
				writeError(w, ollamaDialect, http.StatusBadRequest, "invalid form body")
				return nil, false
			}
			out = formFields(form)
		default:
			if err := json.Unmarshal(body, &out); err != nil || out == nil {
				writeError(w, ollamaDialect, http.StatusBadRequest, "request body must be a JSON object")
				return nil, false
			}
		}
	}
	fe := fieldErrors{}
	for k := range out {
		if !slices.Contains(known, k) {
			fe.add(k, "is not a known field")
		}
	}
	if len(fe) > 0 {
		writeFieldErrors(w, fe)
		return nil, false
	}
	return out, true
}

// maxManageBody bounds a management write's body.
const maxManageBody = 1 << 20

// formFields turns form values into raw JSON strings, the first of each.
func formFields(form url.Values) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(form))
	for k, vs := range form {
		if len(vs) > 0 {
			out[k], _ = json.Marshal(vs[0])
		}
	}
	return out
}

// handleConfigGet is GET /api/proxy/config.
func (h *Handler) handleConfigGet(w http.ResponseWriter, r *http.Request) {
	s, err := h.store.Settings(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	writeJSON(w, http.StatusOK, configJSON(s))
}

func configJSON(s fleet.Settings) map[string]any {
	return map[string]any{"strategy": s.Strategy, "strategies": fleet.Strategies}
}

// handleConfigUpdate is PUT and PATCH /api/proxy/config. Only the fields
// given change (a PUT without "strategy" changes nothing, as upstream); a
// client may send back what it or the upstream read ("strategies", "id"
// and "updated_at" are ignored), any other field is a 400.
func (h *Handler) handleConfigUpdate(w http.ResponseWriter, r *http.Request) {
	if h.deps.Admin == nil {
		writeError(w, ollamaDialect, http.StatusNotImplemented, "settings cannot be changed in this deployment")
		return
	}
	fields, ok := h.readObject(w, r, "strategy", "strategies", "id", "updated_at")
	if !ok {
		return
	}
	s, err := h.store.Settings(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	fe := fieldErrors{}
	if raw, ok := fields["strategy"]; ok {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			fe.add("strategy", "must be a string")
		} else if st, err := fleet.ParseStrategy(v); err != nil {
			var invalid *fleet.ValidationError
			errors.As(err, &invalid)
			fe.add("strategy", invalid.Msg)
		} else {
			s.Strategy = st
		}
	}
	if len(fe) > 0 {
		writeFieldErrors(w, fe)
		return
	}
	saved, err := h.deps.Admin.SaveSettings(r.Context(), s)
	if err != nil {
		writeManageErr(w, r, err, "")
		return
	}
	h.view.invalidate()
	h.log.Info("settings saved", "strategy", string(saved.Strategy))
	writeJSON(w, http.StatusOK, configJSON(saved))
}

// refreshSoon probes a node in the background after a write, so that a new
// or changed node turns healthy within a probe instead of a pass. Best
// effort: under Lambda the goroutine may be frozen with the container, and
// then the next scheduled pass does the work.
func (h *Handler) refreshSoon(id int64) {
	if h.deps.Refresher == nil {
		return
	}
	go func() {
		h.refreshNode(context.Background(), id)
	}()
}

// refreshNode probes a node now and makes the next request see the result.
//
// The probes take turns, and a probe's time starts with its turn: the
// worker runs them one at a time anyway, and a bound that ran out while
// others took theirs (nodes that hang take the whole probe timeout) would
// fail the probe of a healthy node, and record it down. One that waits
// longer than a probe's bound for its turn is dropped: the next pass does
// its work.
func (h *Handler) refreshNode(ctx context.Context, id int64) {
	if h.deps.Refresher == nil {
		return
	}
	turn := time.NewTimer(h.cfg.Manage.RefreshTimeout)
	select {
	case h.refreshTurn <- struct{}{}:
		turn.Stop()
	case <-turn.C:
		h.log.Warn("refresh node: dropped, other probes took too long; the next pass probes it", "node_id", id)
		return
	}
	defer func() { <-h.refreshTurn }()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.Manage.RefreshTimeout)
	defer cancel()
	if err := h.deps.Refresher.RefreshNode(ctx, id); err != nil {
		h.log.Warn("refresh node", "node_id", id, "err", err.Error())
	}
	h.view.invalidate()
	h.probeAgainWhileNoPasses(ctx, id)
}

// probeAgainWhileNoPasses probes a node that a re-probe left down once
// more, a health interval later (StatusMaxAge is three), while no worker
// passes (stopped, or failing): nothing else would probe it, and it would
// stay out of rotation for good after it recovers. With a worker passing,
// its passes do that, after their rise threshold.
func (h *Handler) probeAgainWhileNoPasses(ctx context.Context, id int64) {
	v := h.view.get(ctx, h.now())
	m, ok := v.snap.Member(id)
	if !ok || !m.Node.Enabled || h.routing().Up(m) {
		return
	}
	// Whether passes go on is read off the other nodes: this one's status
	// is the re-probe's own. With no other node to tell, probe again.
	if last := v.lastPassWithout(id); !last.IsZero() && h.now().Sub(last) <= h.cfg.StatusMaxAge {
		return
	}
	time.AfterFunc(h.cfg.StatusMaxAge/3, func() { h.recheck(id) })
}
