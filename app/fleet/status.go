package fleet

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Status is what the worker last observed about one node. It is never
// written by an admin; it is replaced wholesale by each probe pass.
type Status struct {
	NodeID  int64 `json:"node_id"`
	Healthy bool  `json:"healthy"`
	// Latency of the last liveness probe over a kept-alive connection;
	// zero means unknown.
	Latency time.Duration `json:"latency_ns"`
	// Version is the node's Ollama version ("0.17.4"), empty if unknown.
	Version string `json:"version,omitempty"`
	// Models are the node's /api/tags entries, Loaded its /api/ps entries.
	Models []Model `json:"models"`
	Loaded []Model `json:"loaded"`
	// CheckedAt is when the last liveness probe finished; ModelsCheckedAt
	// when Models were last refreshed successfully; PassedAt when a probe
	// last passed (zero if none is known).
	CheckedAt       time.Time `json:"checked_at"`
	ModelsCheckedAt time.Time `json:"models_checked_at"`
	PassedAt        time.Time `json:"passed_at"`
	// Reason says why the node is unhealthy ("connection refused",
	// "HTTP 403: host check or auth"); empty when healthy.
	Reason string `json:"reason,omitempty"`
	// Passes and Fails count consecutive probe results, for the rise and
	// fall thresholds that stop a flapping node from flipping every probe.
	Passes int `json:"passes"`
	Fails  int `json:"fails"`
}

// LastPass is when the last full health pass ended, as far as statuses
// tell: the check time of the node checked least recently. A re-probe of
// one node (after an admin saved it, or a pull) freshens that node, not
// the pass, so a stopped worker still shows as stopped. Nodes never checked
// are left out; with none checked it is the zero time.
func LastPass(statuses []Status) time.Time {
	var oldest time.Time
	for _, s := range statuses {
		if !s.CheckedAt.IsZero() && (oldest.IsZero() || s.CheckedAt.Before(oldest)) {
			oldest = s.CheckedAt
		}
	}
	return oldest
}

// MarkHolds reports whether a passive "unreachable" mark taken at markedAt
// still keeps the node out, given its status: until a check after the mark
// passes. A check that failed does not lift it, even while the fall
// threshold still calls the node healthy, and a failure after a passed
// check does not bring it back.
func MarkHolds(markedAt time.Time, st Status) bool {
	return !st.PassedAt.After(markedAt)
}

// Marked returns st as a mark taken at markedAt, for reason, shows it while
// it holds: unhealthy, with the newest evidence as its reason, a check that
// failed after the mark, else the mark's own.
func Marked(st Status, markedAt time.Time, reason string) Status {
	st.Healthy = false
	if !st.CheckedAt.After(markedAt) || st.Reason == "" {
		st.Reason = "unreachable: " + reason
	}
	return st
}

// Fresh reports whether the status was checked within maxAge of now.
// A stale status is never trusted on its own: a dead worker must not keep
// a dead node looking healthy.
func (s Status) Fresh(now time.Time, maxAge time.Duration) bool {
	return !s.CheckedAt.IsZero() && now.Sub(s.CheckedAt) <= maxAge
}

// Serves reports whether the node lists model, treating "llama3" and
// "llama3:latest" as the same model.
func (s Status) Serves(model string) bool {
	key := ModelKey(model)
	for _, m := range s.Models {
		if m.Key() == key {
			return true
		}
	}
	return false
}

// ModelKey is the canonical form of a model name used for matching: trimmed,
// lower-cased, with the implicit ":latest" tag made explicit and Ollama's
// default registry and namespace left out, as /api/tags lists names
// ("registry.ollama.ai/library/llama3" and "library/llama3" are
// "llama3:latest"). A colon inside a registry host ("host:5000/ns/model")
// is not a tag; an empty tag ("llama3:") and a registry's scheme
// ("https://registry.ollama.ai/library/llama3") are dropped, as Ollama's
// parser drops them.
func ModelKey(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if i := strings.Index(name, "://"); i >= 0 && !strings.Contains(name[:i], "/") {
		name = name[i+len("://"):]
	}
	name = strings.TrimSuffix(name, ":")
	if name == "" {
		return ""
	}
	name = strings.TrimPrefix(name, "registry.ollama.ai/")
	if rest, ok := strings.CutPrefix(name, "library/"); ok && rest != "" && !strings.Contains(rest, "/") {
		name = rest
	}
	last := name[strings.LastIndexByte(name, '/')+1:]
	if !strings.Contains(last, ":") {
		name += ":latest"
	}
	return name
}

// Model is one entry of a node's /api/tags or /api/ps list. Raw keeps the
// node's own JSON object untouched, so the proxy's unions are byte-for-byte
// what Ollama clients expect; the other fields are read out of it once.
type Model struct {
	Name       string
	ModifiedAt string // RFC 3339, as Ollama sent it
	ExpiresAt  string // RFC 3339: when a loaded model (/api/ps) unloads
	Raw        json.RawMessage
}

// Key is the model's canonical name, see [ModelKey].
func (m Model) Key() string { return ModelKey(m.Name) }

// MarshalJSON writes the node's original object.
func (m Model) MarshalJSON() ([]byte, error) {
	if len(m.Raw) == 0 {
		return json.Marshal(map[string]string{"name": m.Name, "model": m.Name})
	}
	return m.Raw, nil
}

// UnmarshalJSON keeps the object and reads its name ("name", else "model").
func (m *Model) UnmarshalJSON(b []byte) error {
	var head struct {
		Name       string `json:"name"`
		Model      string `json:"model"`
		ModifiedAt string `json:"modified_at"`
		ExpiresAt  string `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	m.Name = head.Name
	if m.Name == "" {
		m.Name = head.Model
	}
	m.ModifiedAt, m.ExpiresAt = head.ModifiedAt, head.ExpiresAt
	m.Raw = bytes.Clone(b)
	return nil
}
