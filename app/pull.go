package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/aivonx/aivonx/app/fleet"
)

// Pulling a model onto several nodes at once. Both pull routes send every
// node a streaming /api/pull, whatever the client asked: a node answers a
// stream:false pull only when the download ends, which for a large model
// is longer than any response-header timeout. Each node is probed as soon
// as its pull succeeds, so the model is routable when the client hears of
// the success, not at the next model refresh (the upstream waited a minute).

// pullProgress is one line of Ollama's pull stream.
type pullProgress struct {
	Status    string `json:"status,omitempty"`
	Digest    string `json:"digest,omitempty"`
	Total     int64  `json:"total,omitempty"`
	Completed int64  `json:"completed,omitempty"`
	Error     string `json:"error,omitempty"`
}

type pullEventKind int

const (
	pullStarted pullEventKind = iota // the node answered 200 and streams
	pullLine                         // one progress line
	pullDone                         // the node's pull ended (err says how)
)

type pullEvent struct {
	node     int // index into the targets
	kind     pullEventKind
	progress pullProgress
	err      error
	status   int // when err came before the stream: the node's HTTP status, or 502
}

// pullTarget is one node a pull goes to.
type pullTarget struct {
	node fleet.Node
	base *url.URL
}

// nodeError is a node's answer that was not a success.
type nodeError struct {
	status int
	msg    string
}

func (e *nodeError) Error() string { return e.msg }

// runPull starts body as a pull on every target and returns the events of
// all of them. The channel is closed when every node is done. Each node
// that succeeds is refreshed before its pullDone is sent.
func (h *Handler) runPull(ctx context.Context, targets []pullTarget, body []byte) <-chan pullEvent {
	events := make(chan pullEvent, 64)
	sem := make(chan struct{}, h.cfg.Manage.PullConcurrency)
	done := make(chan struct{})
	for i, t := range targets {
		go func() {
			defer func() { done <- struct{}{} }()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				events <- pullEvent{node: i, kind: pullDone, err: ctx.Err(), status: 499}
				return
			}
			status, err := h.pullOne(ctx, t, body, func(p pullProgress, started bool) {
				if started {
					events <- pullEvent{node: i, kind: pullStarted}
					return
				}
				events <- pullEvent{node: i, kind: pullLine, progress: p}
			})
			if err == nil {
				h.refreshNode(ctx, t.node.ID)
				h.log.Info("model pulled", "node", t.node.Name, "node_id", t.node.ID)
			} else {
				h.log.Warn("pull failed", "node", t.node.Name, "node_id", t.node.ID, "err", err.Error())
			}
			events <- pullEvent{node: i, kind: pullDone, err: err, status: status}
		}()
	}
	go func() {
		for range targets {
			<-done
		}
		close(events)
	}()
	return events
}

// pullOne runs one node's pull. on is called once with started=true when
// the node answers 200, then with each progress line except the final
// success. It returns nil when the node reported success; otherwise the
// error and, when the stream never started, the status to answer with.
func (h *Handler) pullOne(ctx context.Context, t pullTarget, body []byte, on func(pullProgress, bool)) (int, error) {
	resp, err := h.postNode(ctx, t, "/api/pull", body)
	if err != nil {
		return http.StatusBadGateway, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, readNodeError(resp)
	}
	on(pullProgress{}, true)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var p pullProgress
		if err := json.Unmarshal(line, &p); err != nil {
			continue
		}
		if p.Error != "" {
			return 0, errors.New(p.Error)
		}
		if p.Status == "success" {
			return 0, nil
		}
		on(p, false)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("stream broken: %s", shortReason(err))
	}
	return 0, errors.New("stream ended before success")
}

// postNode sends one management request to a node, the Host header being
// the node's. A connection failure marks the node unreachable.
func (h *Handler) postNode(ctx context.Context, t pullTarget, path string, body []byte) (*http.Response, error) {
	return h.callNode(ctx, t, http.MethodPost, path, bytes.NewReader(body), int64(len(body)))
}

func (h *Handler) callNode(ctx context.Context, t pullTarget, method, path string, body io.Reader, size int64) (*http.Response, error) {
	if t.base == nil {
		return nil, errors.New("node has no valid URL")
	}
	u := &url.URL{Scheme: t.base.Scheme, Host: t.base.Host, Path: path}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.transport.RoundTrip(req)
	if err != nil {
		if ctx.Err() == nil && isDialError(err) {
			h.markUnreachable(ctx, t.node, err)
		}
		return nil, errors.New(shortReason(err))
	}
	return resp, nil
}

// readNodeError reads a node's error answer: Ollama's {"error"} message,
// or the status line and the start of the body.
func readNodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return &nodeError{status: resp.StatusCode, msg: e.Error}
	}
	msg := "HTTP " + strconv.Itoa(resp.StatusCode)
	if s := strings.TrimSpace(string(b)); s != "" {
		msg += ": " + truncate(s, 200)
	}
	return &nodeError{status: resp.StatusCode, msg: msg}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// pullBody is the body sent to each node: the client's fields with stream
// forced on.
func pullBody(fields map[string]json.RawMessage) []byte {
	out := make(map[string]json.RawMessage, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	out["stream"] = json.RawMessage("true")
	b, _ := json.Marshal(out)
	return b
}

// handleProxyPull is POST /api/proxy/pull {model, node_id?, insecure?,
// stream?}: the upstream's management pull, on one enabled node or on every
// enabled node. With stream:true it streams NDJSON: each node's progress
// lines with node_id and node_name added, and one summary line per node
// ({"node_id","node_name","node_address","status","message","done":true},
// plus "error" repeating the message when the node failed).
// Otherwise it answers, once every node is done,
// {"model","results":[summary…],"total_nodes"}.
func (h *Handler) handleProxyPull(w http.ResponseWriter, r *http.Request) {
	fields, ok := h.readObject(w, r, "model", "name", "node_id", "insecure", "stream")
	if !ok {
		return
	}
	var req struct {
		Model    string
		NodeID   int64
		Insecure bool
		Stream   bool
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(fields[k], &s)
		return strings.TrimSpace(s)
	}
	flag := func(k string) bool {
		var b bool
		if json.Unmarshal(fields[k], &b) == nil {
			return b
		}
		b, _ = strconv.ParseBool(str(k))
		return b
	}
	req.Model = str("model")
	if req.Model == "" {
		req.Model = str("name")
	}
	if req.Model == "" {
		writeError(w, ollamaDialect, http.StatusBadRequest, "model name is required")
		return
	}
	req.Insecure, req.Stream = flag("insecure"), flag("stream")
	if raw, ok := fields["node_id"]; ok && string(raw) != "null" {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			n = json.Number(str("node_id"))
		}
		id, err := strconv.ParseInt(n.String(), 10, 64)
		if n.String() != "" && (err != nil || id < 0) {
			writeError(w, ollamaDialect, http.StatusBadRequest, "invalid node_id: must be an integer")
			return
		}
		req.NodeID = id
	}

	v := h.view.get(r.Context(), h.now())
	var targets []pullTarget
	for _, m := range v.snap.Members() {
		if m.Node.Enabled && (req.NodeID == 0 || m.Node.ID == req.NodeID) {
			targets = append(targets, pullTarget{node: m.Node, base: v.urls[m.Node.ID]})
		}
	}
	switch {
	case req.NodeID != 0 && len(targets) == 0:
		writeError(w, ollamaDialect, http.StatusNotFound, "node not found: "+strconv.FormatInt(req.NodeID, 10))
		return
	case len(targets) == 0:
		writeError(w, ollamaDialect, http.StatusNotFound, "no active nodes available")
		return
	}
	if a := accessFrom(r.Context()); a != nil {
		a.model = req.Model
	}
	body := map[string]any{"model": req.Model, "stream": true}
	if req.Insecure {
		body["insecure"] = true
	}
	b, _ := json.Marshal(body)
	h.log.Info("pull started", "model", req.Model, "nodes", len(targets))

	type result struct {
		NodeID      int64  `json:"node_id"`
		NodeName    string `json:"node_name"`
		NodeAddress string `json:"node_address"`
		Status      string `json:"status"`
		Message     string `json:"message"`
		Done        bool   `json:"done,omitempty"`
		// Error repeats a failure's message on a stream's summary line, in
		// the field Ollama clients read errors from.
		Error string `json:"error,omitempty"`
	}
	summary := func(e pullEvent) result {
		t := targets[e.node]
		res := result{NodeID: t.node.ID, NodeName: t.node.Name, NodeAddress: t.node.BaseURL, Status: "success", Message: "Model pulled successfully"}
		switch {
		case e.err != nil && h.ending.Load():
			res.Status, res.Message = "error", errPullCut
		case e.err != nil:
			res.Status, res.Message = "error", e.err.Error()
			if e.status != 0 && e.status != http.StatusBadGateway {
				res.Message = "HTTP " + strconv.Itoa(e.status) + ": " + e.err.Error()
			}
		}
		return res
	}
	ctx, cancel := h.untilEnd(r.Context())
	defer cancel()
	events := h.runPull(ctx, targets, b)
	if !req.Stream {
		results := []result{}
		for e := range events {
			if e.kind == pullDone {
				results = append(results, summary(e))
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"model": req.Model, "results": results, "total_nodes": len(results)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flush(w)
	enc := json.NewEncoder(w)
	for e := range events {
		t := targets[e.node]
		switch e.kind {
		case pullLine:
			_ = enc.Encode(struct {
				NodeID   int64  `json:"node_id"`
				NodeName string `json:"node_name"`
				pullProgress
			}{t.node.ID, t.node.Name, e.progress})
		case pullDone:
			res := summary(e)
			res.Done = true
			if res.Status == "error" {
				res.Error = res.Message
			}
			_ = enc.Encode(res)
		default:
			continue
		}
		flush(w)
	}
}

// handlePull is Ollama's POST /api/pull through the proxy: the model is
// pulled on every enabled, healthy node at once, and the client sees one
// pull, as from a single Ollama:
//
//   - a layer's line carries the layer's own size and the mean of the
//     pulling nodes' completed bytes, so that the bar shows the model's
//     real size and reaches its end when every node has the layer;
//   - any other status is sent once: the first one ("pulling manifest")
//     when a node reports it, a later one ("verifying sha256 digest",
//     "writing manifest"…) when every node still pulling has reached it,
//     so that no layer line follows it;
//   - the last line is {"status":"success"} only when every node succeeded,
//     else an {"error"} line naming the failed nodes (the nodes that
//     succeeded keep the model and serve it).
//
// The response starts when the first node starts streaming; when every
// node fails before that, the first node's error and status are answered
// (e.g. 400 for an invalid name). stream:false answers one JSON object at
// the end, as Ollama does.
func (h *Handler) handlePull(w http.ResponseWriter, r *http.Request) {
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeError(w, ollamaDialect, status, err.Error())
		return
	}
	model, err := parseModel(body)
	if err != nil {
		var invalid *fleet.ValidationError
		errors.As(err, &invalid)
		writeError(w, ollamaDialect, http.StatusBadRequest, invalid.Msg)
		return
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields)
	stream := true
	if raw, ok := fields["stream"]; ok {
		_ = json.Unmarshal(raw, &stream)
	}
	accessFrom(r.Context()).model = model

	members := h.routable(r.Context())
	if len(members) == 0 {
		writeError(w, ollamaDialect, http.StatusServiceUnavailable, fleet.ErrNoCandidate.Error())
		return
	}
	v := h.view.get(r.Context(), h.now())
	targets := make([]pullTarget, len(members))
	for i, m := range members {
		targets[i] = pullTarget{node: m.Node, base: v.urls[m.Node.ID]}
	}
	h.log.Info("pull started", "model", model, "nodes", len(targets))

	var (
		started   bool // some node streams
		wrote     bool // our response started
		failed    = make(map[int]pullEvent)
		firstFail *pullEvent
		pending   []pullProgress              // lines waiting for the response to start
		statuses  = map[string]map[int]bool{} // status → the nodes that reported it
		sent      = map[string]bool{}
		waiting   []string // statuses not sent yet, in the order first seen
		layers    = map[string]*layerProgress{}
	)
	pulling := func() int { return len(targets) - len(failed) }
	enc := json.NewEncoder(w)
	emit := func(p pullProgress) {
		if !stream {
			return
		}
		if !wrote {
			pending = append(pending, p)
			return
		}
		_ = enc.Encode(p)
		flush(w)
	}
	start := func() {
		started = true
		if wrote || !stream {
			return
		}
		wrote = true
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		for _, p := range pending {
			_ = enc.Encode(p)
		}
		pending = nil
		flush(w)
	}
	// sendReady sends the waiting statuses every pulling node has reached,
	// in order; the first status of a pull goes at once.
	sendReady := func() {
		for len(waiting) > 0 {
			st := waiting[0]
			reached := 0
			for n := range statuses[st] {
				if _, gone := failed[n]; !gone {
					reached++
				}
			}
			if len(sent) > 0 && reached < pulling() {
				return
			}
			sent[st] = true
			waiting = waiting[1:]
			emit(pullProgress{Status: st})
		}
	}
	ctx, cancel := h.untilEnd(r.Context())
	defer cancel()
	for e := range h.runPull(ctx, targets, pullBody(fields)) {
		switch e.kind {
		case pullStarted:
			start()
		case pullLine:
			p := e.progress
			if p.Digest == "" {
				if statuses[p.Status] == nil {
					statuses[p.Status] = map[int]bool{}
					if !sent[p.Status] {
						waiting = append(waiting, p.Status)
					}
				}
				statuses[p.Status][e.node] = true
				sendReady()
				continue
			}
			l := layers[p.Digest]
			if l == nil {
				l = &layerProgress{status: p.Status, done: map[int]int64{}}
				layers[p.Digest] = l
			}
			if p.Total > l.size {
				l.size = p.Total
			}
			l.done[e.node] = p.Completed
			emit(l.line(p.Digest, failed, pulling()))
		case pullDone:
			if e.err != nil {
				failed[e.node] = e
				if firstFail == nil {
					firstFail = &e
				}
				sendReady() // the failed node no longer holds a status back
			}
		}
	}
	if r.Context().Err() != nil {
		accessFrom(r.Context()).err = errClientGone
		return
	}
	for _, st := range waiting { // a status some node never reported
		emit(pullProgress{Status: st})
	}
	var failures []string
	for i := range targets {
		if f, ok := failed[i]; ok {
			failures = append(failures, targets[i].node.Name+": "+f.err.Error())
		}
	}
	sort.Strings(failures)
	if len(failures) == 0 {
		if !wrote {
			writeJSON(w, http.StatusOK, map[string]string{"status": "success"})
			return
		}
		emit(pullProgress{Status: "success"})
		return
	}
	msg := "pull failed on " + strconv.Itoa(len(failures)) + " of " + strconv.Itoa(len(targets)) + " nodes: " + strings.Join(failures, "; ")
	switch {
	case h.ending.Load():
		// Cut by EndStreams: say so, rather than blame the nodes. A
		// stream ending without {"status":"success"} would look like a
		// finished pull to the ollama CLI.
		if !wrote {
			writeError(w, ollamaDialect, http.StatusServiceUnavailable, errPullCut)
			return
		}
		accessFrom(r.Context()).streamErr = errPullCut
		_ = enc.Encode(pullProgress{Error: errPullCut})
		flush(w)
	case !started && len(failures) == len(targets) && firstFail != nil:
		// Nothing streamed: answer like the node did (400 invalid name…).
		st := firstFail.status
		if st == 0 || st < 400 {
			st = http.StatusInternalServerError
		}
		if len(targets) == 1 {
			msg = firstFail.err.Error()
		}
		writeError(w, ollamaDialect, st, msg)
	case !wrote:
		writeError(w, ollamaDialect, http.StatusInternalServerError, msg)
	default:
		accessFrom(r.Context()).streamErr = msg
		_ = enc.Encode(pullProgress{Error: msg})
		flush(w)
	}
}

// errPullCut is a pull's error when the proxy shuts down under it.
const errPullCut = "aivonx is shutting down: the pull was cut; send it again (the nodes keep the layers they have)"

// layerProgress merges one layer's progress over the nodes.
type layerProgress struct {
	status string
	size   int64
	done   map[int]int64 // node index → completed bytes
}

// line is the layer's progress over the pulling nodes: its size, and the
// mean of their completed bytes (a node that has not reported the layer
// yet counts as 0). failed nodes are left out.
func (l *layerProgress) line(digest string, failed map[int]pullEvent, pulling int) pullProgress {
	var completed int64
	for n, c := range l.done {
		if _, gone := failed[n]; !gone {
			completed += c
		}
	}
	completed /= int64(max(pulling, 1))
	return pullProgress{Status: l.status, Digest: digest, Total: l.size, Completed: min(completed, l.size)}
}
