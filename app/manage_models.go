package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/aivonx/aivonx/app/fleet"
)

// Ollama's model-management routes, each handled deliberately for a fleet
// (docs/TROUBLESHOOTING.md, "Model management through the proxy"):
//
//   - POST /api/pull: every healthy node, one merged progress (pull.go).
//   - DELETE /api/delete: every healthy node; 200 when any deleted it.
//   - POST /api/copy: every healthy node that lists the source model.
//   - POST /api/create: one node, the least loaded of those that list the
//     "from" model (any healthy node when none does or none is given).
//   - POST /api/push: the least loaded node that lists the model.
//   - HEAD /api/blobs/{digest}: 200 only when every healthy node has it.
//   - POST /api/blobs/{digest}: streamed to every healthy node at once, so
//     that the create which follows works on whichever node it lands on.

// fanResult is one node's answer to a fanned-out request.
type fanResult struct {
	target pullTarget
	status int // 0 when the node could not be reached
	err    error
}

// fanOut sends the same small request to every target at once.
func (h *Handler) fanOut(ctx context.Context, targets []pullTarget, method, path string, body []byte) []fanResult {
	out := make([]fanResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].target = t
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			resp, err := h.callNode(ctx, t, method, path, rd, int64(len(body)))
			if err != nil {
				out[i].err = err
				return
			}
			defer resp.Body.Close()
			out[i].status = resp.StatusCode
			if resp.StatusCode >= 300 {
				out[i].err = readNodeError(resp)
				return
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		}()
	}
	wg.Wait()
	return out
}

// healthyTargets are the routable nodes, optionally only those listing
// model.
func (h *Handler) healthyTargets(ctx context.Context, model string) []pullTarget {
	v := h.view.get(ctx, h.now())
	var out []pullTarget
	for _, m := range v.snap.Routable(h.routing()) {
		if model == "" || m.Status.Serves(model) {
			out = append(out, pullTarget{node: m.Node, base: v.urls[m.Node.ID]})
		}
	}
	return out
}

// upTargets are the nodes that are up (fleet.Routing.Up), disabled ones
// included.
func (h *Handler) upTargets(ctx context.Context) []pullTarget {
	v := h.view.get(ctx, h.now())
	rt := h.routing()
	var out []pullTarget
	for _, m := range v.snap.Members() {
		if rt.Up(m) {
			out = append(out, pullTarget{node: m.Node, base: v.urls[m.Node.ID]})
		}
	}
	return out
}

// readModelBody reads a bounded JSON body and the model it names, for a
// request to be served as rt.
func (h *Handler) readModelBody(w http.ResponseWriter, r *http.Request, rt route) ([]byte, string, bool) {
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeError(w, ollamaDialect, status, err.Error())
		return nil, "", false
	}
	f, err := parseRequest(body)
	if err != nil {
		var invalid *fleet.ValidationError
		errors.As(err, &invalid)
		writeError(w, ollamaDialect, http.StatusBadRequest, invalid.Msg)
		return nil, "", false
	}
	a := accessFrom(r.Context())
	a.model, a.wholeAnswer = f.model, !f.streamed(rt)
	return body, f.model, true
}

// answerFanOut answers a fanned-out change: 200 with an empty body (as
// Ollama) when any node succeeded, after refreshing those nodes so their
// model lists are current; else the first failure, in Ollama's shape.
func (h *Handler) answerFanOut(w http.ResponseWriter, r *http.Request, op string, results []fanResult) {
	var ok, failed []string
	var first *fanResult
	var wg sync.WaitGroup
	for i, res := range results {
		if res.err == nil {
			ok = append(ok, res.target.node.Name)
			wg.Add(1)
			go func() { defer wg.Done(); h.refreshNode(r.Context(), res.target.node.ID) }()
			continue
		}
		failed = append(failed, res.target.node.Name+": "+res.err.Error())
		if first == nil || (first.status == http.StatusNotFound && res.status != http.StatusNotFound) {
			first = &results[i]
		}
	}
	wg.Wait()
	sort.Strings(failed)
	if len(ok) > 0 {
		if len(failed) > 0 {
			h.log.Warn(op+" failed on some nodes", "ok", strings.Join(ok, ","), "failed", strings.Join(failed, "; "))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	status := first.status
	if status == 0 {
		status = http.StatusBadGateway
	}
	writeError(w, ollamaDialect, status, first.err.Error())
}

// handleDelete is DELETE /api/delete: sent to every node that is up,
// disabled (drained) ones included, as they keep their models and would
// serve them again once enabled; and not only to those whose last model
// list names the model (the list may be a minute old): a node without the
// model answers 404, which is harmless. A node that is down keeps its copy.
func (h *Handler) handleDelete(w http.ResponseWriter, r *http.Request) {
	body, model, ok := h.readModelBody(w, r, route{})
	if !ok {
		return
	}
	targets := h.upTargets(r.Context())
	if len(targets) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	h.answerFanOut(w, r, "delete "+model, h.fanOut(r.Context(), targets, http.MethodDelete, "/api/delete", body))
}

// handleCopy is POST /api/copy {source, destination}: on every healthy node
// that lists the source, so the copy is routable wherever the source was.
func (h *Handler) handleCopy(w http.ResponseWriter, r *http.Request) {
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeError(w, ollamaDialect, status, err.Error())
		return
	}
	var req struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, ollamaDialect, http.StatusBadRequest, "request body must be a JSON object with source and destination")
		return
	}
	req.Source, req.Destination = strings.TrimSpace(req.Source), strings.TrimSpace(req.Destination)
	if req.Source == "" {
		writeError(w, ollamaDialect, http.StatusBadRequest, fmt.Sprintf("source %q is invalid", req.Source))
		return
	}
	if req.Destination == "" {
		writeError(w, ollamaDialect, http.StatusBadRequest, fmt.Sprintf("destination %q is invalid", req.Destination))
		return
	}
	accessFrom(r.Context()).model = req.Source
	targets := h.healthyTargets(r.Context(), req.Source)
	if len(targets) == 0 {
		if len(h.healthyTargets(r.Context(), "")) == 0 {
			writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
			return
		}
		writeError(w, ollamaDialect, http.StatusNotFound, fmt.Sprintf("model %q not found", req.Source))
		return
	}
	h.answerFanOut(w, r, "copy "+req.Source, h.fanOut(r.Context(), targets, http.MethodPost, "/api/copy", body))
}

// handleCreate is POST /api/create: proxied to one node, the least loaded
// of those that list the "from" model, else of every healthy node (blobs
// for "files" were uploaded to all of them). The new model lives on that
// node, which is refreshed at once so the model is routable.
func (h *Handler) handleCreate(w http.ResponseWriter, r *http.Request) {
	rt := route{upstream: "/api/create", streams: true}
	body, _, ok := h.readModelBody(w, r, rt)
	if !ok {
		return
	}
	var req struct {
		From string `json:"from"`
	}
	_ = json.Unmarshal(body, &req)
	v := h.view.get(r.Context(), h.now())
	var cands []fleet.Candidate
	if req.From != "" {
		cands, _ = v.snap.Candidates(req.From, h.routing())
	}
	if len(cands) == 0 {
		for _, m := range v.snap.Routable(h.routing()) {
			cands = append(cands, fleet.Candidate{Node: m.Node, Latency: m.Status.Latency})
		}
	}
	if len(cands) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	node, resp, release := h.forward(w, r, rt, v, body, cands, nil)
	if resp == nil {
		return
	}
	func() {
		defer release() // also when the relay cuts the connection (a panic)
		h.relay(w, r, rt, node, resp)
	}()
	a := accessFrom(r.Context())
	if a.node == "" || a.status >= 300 {
		return
	}
	for _, c := range cands {
		if c.Node.Name == a.node {
			h.refreshNode(r.Context(), c.Node.ID)
		}
	}
}

// handleBlobHead is HEAD /api/blobs/{digest}: 200 only when every healthy
// node has the blob, so that a client uploads it when any lacks it.
func (h *Handler) handleBlobHead(w http.ResponseWriter, r *http.Request) {
	if !validDigest(r.PathValue("digest")) {
		w.WriteHeader(http.StatusBadRequest) // a HEAD answer has no body
		return
	}
	targets := h.healthyTargets(r.Context(), "")
	if len(targets) == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	for _, res := range h.fanOut(r.Context(), targets, http.MethodHead, "/api/blobs/"+r.PathValue("digest"), nil) {
		if res.err != nil {
			status := res.status
			if status == 0 {
				status = http.StatusBadGateway
			}
			w.WriteHeader(status)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// handleBlobUpload is POST /api/blobs/{digest}: the body is streamed to
// every healthy node at once (never held in memory, and not bounded by
// MaxBodyBytes: model files are gigabytes). Each node checks the digest
// itself. 201 when every node stored it (200 when all had it already); a
// node that fails fails the upload, naming it, so the client retries.
func (h *Handler) handleBlobUpload(w http.ResponseWriter, r *http.Request) {
	if !validDigest(r.PathValue("digest")) {
		writeError(w, ollamaDialect, http.StatusBadRequest, errInvalidDigest)
		return
	}
	targets := h.healthyTargets(r.Context(), "")
	if len(targets) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	path := "/api/blobs/" + r.PathValue("digest")
	pipes := make([]*io.PipeWriter, len(targets))
	results := make([]fanResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		pr, pw := io.Pipe()
		pipes[i] = pw
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].target = t
			resp, err := h.callNode(r.Context(), t, http.MethodPost, path, pr, r.ContentLength)
			// The node answered (or failed): stop feeding it.
			pr.CloseWithError(errNodeAnswered)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			results[i].status = resp.StatusCode
			if resp.StatusCode >= 300 {
				results[i].err = readNodeError(resp)
			}
		}()
	}
	copyErr := copyToAll(pipes, r.Body)
	for _, pw := range pipes {
		pw.CloseWithError(copyErr) // nil: EOF
	}
	wg.Wait()
	if copyErr != nil && r.Context().Err() != nil {
		return
	}
	var failed []string
	var first *fanResult
	all200 := true
	for i, res := range results {
		if res.err != nil {
			failed = append(failed, res.target.node.Name+": "+res.err.Error())
			if first == nil {
				first = &results[i]
			}
		}
		all200 = all200 && res.status == http.StatusOK
	}
	switch {
	case copyErr != nil:
		writeError(w, ollamaDialect, http.StatusBadRequest, "read request body: "+copyErr.Error())
	case first != nil && len(targets) == 1:
		status := first.status
		if status == 0 {
			status = http.StatusBadGateway
		}
		writeError(w, ollamaDialect, status, first.err.Error())
	case first != nil:
		sort.Strings(failed)
		status := http.StatusBadGateway
		if first.status >= 400 && first.status < 500 && len(failed) == len(targets) {
			status = first.status // e.g. every node saw a digest mismatch
		}
		writeError(w, ollamaDialect, status, "blob upload failed on "+strings.Join(failed, "; "))
	case all200:
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusCreated)
	}
}

var errNodeAnswered = errors.New("node answered")

// copyToAll copies src to every writer; a writer that fails (its node
// answered or went away) is dropped and the others go on. It returns an
// error only when reading src fails.
func copyToAll(ws []*io.PipeWriter, src io.Reader) error {
	live := append([]*io.PipeWriter(nil), ws...)
	buf := make([]byte, 256<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			kept := live[:0]
			for _, w := range live {
				if _, werr := w.Write(buf[:n]); werr == nil {
					kept = append(kept, w)
				}
			}
			live = kept
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// errInvalidDigest is Ollama's answer to a blob path that is not a digest.
const errInvalidDigest = "invalid digest format"

// validDigest reports whether s is a blob digest as Ollama accepts it
// ("sha256:" or "sha256-" and 64 hex digits). Anything else is refused
// before it is put in a node's URL: the path value is decoded, so
// "..%2F..%2Fapi%2Fdelete" would reach the node as another route.
func validDigest(s string) bool {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		hex, ok = strings.CutPrefix(s, "sha256-")
	}
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range []byte(hex) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
