package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// handleRoot answers liveness like a real Ollama: 200 "Ollama is running"
// while at least one node can take requests.
func (h *Handler) handleRoot(w http.ResponseWriter, r *http.Request) {
	v := h.view.get(r.Context(), h.now())
	if len(v.snap.Routable(h.routing())) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", "17")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write([]byte("Ollama is running"))
	}
}

// unionModels merges the model lists of the routable nodes, one entry per
// name, in Ollama's order: the latest time first (by name when equal),
// where the time is what orderBy reads, and the entry with the latest time
// wins. Only routable nodes count, so every listed model can be served.
func unionModels(members []fleet.Member, list func(fleet.Status) []fleet.Model, orderBy func(fleet.Model) string) []fleet.Model {
	type entry struct {
		m  fleet.Model
		at time.Time
	}
	byName := make(map[string]entry)
	for _, m := range members {
		for _, model := range list(m.Status) {
			// Times are compared as times: nodes write them in their own
			// zones.
			at, _ := time.Parse(time.RFC3339Nano, orderBy(model))
			if prev, ok := byName[model.Name]; !ok || at.After(prev.at) {
				byName[model.Name] = entry{model, at}
			}
		}
	}
	entries := make([]entry, 0, len(byName))
	for _, e := range byName {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return strings.Compare(a.m.Name, b.m.Name)
	})
	out := make([]fleet.Model, len(entries))
	for i, e := range entries {
		out[i] = e.m
	}
	return out
}

// Ollama lists models by modified_at, and loaded models by expires_at,
// the latest first.
func modifiedAt(m fleet.Model) string { return m.ModifiedAt }
func expiresAt(m fleet.Model) string  { return m.ExpiresAt }

func (h *Handler) routable(ctx context.Context) []fleet.Member {
	return h.view.get(ctx, h.now()).snap.Routable(h.routing())
}

// handleTags is GET /api/tags: the union of the healthy nodes' models.
func (h *Handler) handleTags(w http.ResponseWriter, r *http.Request) {
	models := unionModels(h.routable(r.Context()), func(s fleet.Status) []fleet.Model { return s.Models }, modifiedAt)
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}

// handlePS is GET /api/ps: the union of the models loaded on the healthy
// nodes, asked live (what is loaded changes by the second); a node that does
// not answer in time contributes what its last health check saw.
func (h *Handler) handlePS(w http.ResponseWriter, r *http.Request) {
	members := h.routable(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	live := make([]fleet.Member, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		live[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			if loaded, err := h.fetchPS(ctx, m.Node); err == nil {
				live[i].Status.Loaded = loaded
			}
		}()
	}
	wg.Wait()
	models := unionModels(live, func(s fleet.Status) []fleet.Model { return s.Loaded }, expiresAt)
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}

func (h *Handler) fetchPS(ctx context.Context, n fleet.Node) ([]fleet.Model, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.BaseURL+"/api/ps", nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/ps: HTTP %d", resp.StatusCode)
	}
	var body struct {
		Models []fleet.Model `json:"models"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 8<<20)).Decode(&body); err != nil {
		return nil, err
	}
	return body.Models, nil
}

// handleVersion is GET /api/version: the lowest Ollama version among the
// healthy nodes, so a client's feature checks hold for whichever node
// serves it. The proxy's own version is in the X-Aivonx-Version header.
func (h *Handler) handleVersion(w http.ResponseWriter, r *http.Request) {
	members := h.routable(r.Context())
	if len(members) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	lowest := ""
	for _, m := range members {
		if v := m.Status.Version; v != "" && (lowest == "" || compareVersions(v, lowest) < 0) {
			lowest = v
		}
	}
	if lowest == "" {
		lowest = "0.0.0"
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": lowest})
}

// compareVersions compares dotted versions ("0.17.4", "0.9.0-rc1")
// numerically, field by field; a pre-release sorts before its release.
func compareVersions(a, b string) int {
	a, preA, _ := strings.Cut(strings.TrimPrefix(a, "v"), "-")
	b, preB, _ := strings.Cut(strings.TrimPrefix(b, "v"), "-")
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	switch {
	case preA == preB:
		return 0
	case preA == "":
		return 1
	case preB == "":
		return -1
	}
	return strings.Compare(preA, preB)
}

type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func toOpenAI(id string, m fleet.Model) openAIModel {
	owner := "library"
	if i := strings.LastIndexByte(m.Name, '/'); i > 0 {
		owner = m.Name[:i]
		if j := strings.LastIndexByte(owner, '/'); j >= 0 {
			owner = owner[j+1:]
		}
	}
	var created int64
	if t, err := time.Parse(time.RFC3339Nano, m.ModifiedAt); err == nil {
		created = t.Unix()
	}
	return openAIModel{ID: id, Object: "model", Created: created, OwnedBy: owner}
}

// handleModels is GET /v1/models in OpenAI's shape.
func (h *Handler) handleModels(w http.ResponseWriter, r *http.Request) {
	models := unionModels(h.routable(r.Context()), func(s fleet.Status) []fleet.Model { return s.Models }, modifiedAt)
	data := make([]openAIModel, len(models))
	for i, m := range models {
		data[i] = toOpenAI(m.Name, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// handleModel is GET /v1/models/{model}; the id echoes the request, as
// Ollama does.
func (h *Handler) handleModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	key := fleet.ModelKey(name)
	for _, m := range unionModels(h.routable(r.Context()), func(s fleet.Status) []fleet.Model { return s.Models }, modifiedAt) {
		if m.Key() == key {
			writeJSON(w, http.StatusOK, toOpenAI(name, m))
			return
		}
	}
	writeError(w, openAIDialect, http.StatusNotFound, (&fleet.ModelNotFoundError{Model: name}).Error())
}

// handleAnyNode is for Ollama's routes about the server rather than a
// model: its cloud status (GET /api/status) and the ollama.com user it is
// signed in as (POST /api/me, which `ollama run` asks before it runs a
// cloud model). The first healthy node that answers does.
func (h *Handler) handleAnyNode(w http.ResponseWriter, r *http.Request) {
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeError(w, ollamaDialect, status, err.Error())
		return
	}
	targets := h.healthyTargets(r.Context(), "")
	if len(targets) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	var failed []string
	for _, t := range targets {
		var rd io.Reader
		if len(body) > 0 {
			rd = bytes.NewReader(body)
		}
		resp, err := h.callNode(r.Context(), t, r.Method, r.URL.Path, rd, int64(len(body)))
		if err != nil {
			failed = append(failed, t.node.Name+": "+err.Error())
			continue
		}
		defer resp.Body.Close()
		if r.URL.Path == "/api/me" && resp.StatusCode == http.StatusUnauthorized {
			// Ollama's answer holds a sign-in link for the node: whoever
			// opened it would sign the shared node in to their own
			// ollama.com account. That is the operator's to do, on the node.
			// "Status" too: the Go client reads a 401 into an
			// AuthorizationError, which keeps only that field.
			msg := "node " + t.node.Name + " is not signed in to ollama.com: an operator signs it in on the node itself (ollama signin)"
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg, "Status": msg})
			return
		}
		copyHeaders(w.Header(), resp.Header, skipResponseHeaders)
		w.Header().Set("X-Aivonx-Node", t.node.Name)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
		return
	}
	writeError(w, ollamaDialect, http.StatusBadGateway, "no node answered: "+strings.Join(failed, "; "))
}
