package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/aivonx/aivonx/app/fleet"
)

// route describes one proxied route: where it goes on the node and which
// error shape it speaks.
type route struct {
	upstream string // path on the node, e.g. "/api/chat"
	dialect  dialect
	// streams is set on routes whose answer streams unless the body says
	// otherwise: by default on Ollama's, only with "stream":true on
	// OpenAI's. Any other answer comes whole, once the node is done.
	streams bool
	// loadsWithout names the field ("prompt" on Ollama's generate,
	// "messages" on its chat) without which a request only loads the model
	// into memory, or unloads it.
	loadsWithout string
	// lastEvents are the SSE lines one of which every whole stream of the
	// route holds: its last event, or an error event. Ollama ends a stream
	// cleanly when its runner dies, without them, which the SDKs would
	// take for a normal end; the relay says what happened instead.
	lastEvents []string
	// zstdBodies is set on the Responses API, where Ollama takes a body
	// compressed with zstd (Codex sends them).
	zstdBodies bool
	// asksUsage is set on OpenAI's chat and completions, whose streams
	// carry token counts only when the client asks (stream_options): the
	// proxy asks for a client that did not, so that its history, metrics
	// and key usage count the tokens, and keeps that event from it.
	asksUsage bool
}

// The lastEvents of the SSE routes.
var (
	openAIChatEnd = []string{"data: [DONE]"} // chat and completions
	responsesEnd  = []string{"event: response.completed", "event: response.failed", "event: response.incomplete", "event: error"}
	messagesEnd   = []string{"event: message_stop", "event: error"}
)

// requestFields are the top-level fields of a request body the proxy reads.
type requestFields struct {
	model string
	// stream is the body's "stream" when streamSet (a boolean; any other
	// value is left for the node to refuse).
	stream, streamSet bool
	// prompt and messages are set when those fields are not empty. Without
	// its own (route.loadsWithout), a generate or chat only loads the model
	// into memory, or, with a keep_alive of zero, unloads it (what `ollama
	// stop` sends).
	prompt, messages, keepAliveZero bool
	// streamOptions is set when the body has OpenAI's "stream_options"
	// (not null): the client chose whether its stream carries usage.
	streamOptions bool
}

// loadOnly reports whether the request only loads or unloads the model.
func (f requestFields) loadOnly(rt route) bool {
	switch rt.loadsWithout {
	case "prompt":
		return !f.prompt
	case "messages":
		return !f.messages
	}
	return false
}

// zeroKeepAlive reports whether a keep_alive value is zero as Ollama reads
// it: a number of seconds, or a duration string ("0", "0s", "0m").
func zeroKeepAlive(v []byte) bool {
	if len(v) > 0 && v[0] == '"' {
		d, err := time.ParseDuration(jsonString(v))
		return err == nil && d == 0
	}
	n, err := strconv.ParseFloat(string(v), 64)
	return err == nil && n == 0
}

// streamed reports whether the node answers as a stream, its head coming
// with the first token, rather than whole once it is done.
func (f requestFields) streamed(rt route) bool {
	if !rt.streams {
		return false
	}
	if f.streamSet {
		return f.stream
	}
	return rt.dialect == ollamaDialect
}

// jsonSpace is the white space JSON allows between tokens.
const jsonSpace = " \t\r\n"

// parseModel reads the model a request body names: see parseRequest.
func parseModel(body []byte) (string, error) {
	f, err := parseRequest(body)
	return f.model, err
}

// parseRequest reads the model a request body names: "model", or the
// deprecated "name" that some clients send instead (the ollama CLI on
// /api/show and /api/pull, ollama-js on /api/pull, /api/push, /api/delete),
// and its "stream". It returns a *fleet.ValidationError for a body that is
// not a JSON object or names no model as a string.
//
// It validates with json.Valid and then walks only the top level of the
// object, skipping values without decoding them: bodies carry base64
// images and long histories, and a reflective decode of those would cost
// CPU and grow the goroutine's stack, which a streaming request then holds
// for minutes.
func parseRequest(body []byte) (requestFields, error) {
	var f requestFields
	invalid := func(field, msg string) (requestFields, error) {
		return requestFields{}, &fleet.ValidationError{Field: field, Msg: msg}
	}
	body = bytes.Trim(body, jsonSpace) // not TrimSpace: JSON allows no other white space
	if len(body) == 0 {
		return invalid("body", "missing request body")
	}
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v) // only to explain why
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return invalid("body", "invalid JSON: "+err.Error())
	}
	if body[0] != '{' {
		return invalid("body", "must be a JSON object")
	}
	var model, name string
	for i := 1; ; {
		i = skipSpace(body, i)
		if body[i] == '}' {
			break
		}
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
		keyEnd := skipValue(body, i)
		key := body[i:keyEnd]
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the colon
		valEnd := skipValue(body, i)
		if len(key) <= 64 { // no longer key can fold to one of fieldOf's
			switch k2 := fieldOf(key); k2 {
			case "model", "name":
				var v string
				switch body[i] {
				case 'n': // null leaves it empty, as encoding/json does
				case '"':
					v = jsonString(body[i:valEnd])
				default:
					return invalid(k2, k2+" must be a string")
				}
				if k2 == "model" {
					model = v
				} else {
					name = v
				}
			case "stream":
				switch body[i] {
				case 't':
					f.stream, f.streamSet = true, true
				case 'f':
					f.stream, f.streamSet = false, true
				case 'n': // null: as Ollama's *bool, the default again
					f.stream, f.streamSet = false, false
				}
			case "prompt":
				f.prompt = body[i] == '"' && valEnd-i > 2
			case "messages":
				f.messages = body[i] == '[' && body[skipSpace(body, i+1)] != ']'
			case "keep_alive":
				f.keepAliveZero = zeroKeepAlive(body[i:valEnd])
			case "stream_options":
				f.streamOptions = body[i] != 'n'
			}
		}
		i = valEnd
	}
	f.model = strings.TrimSpace(model)
	if f.model == "" {
		f.model = strings.TrimSpace(name)
	}
	if f.model == "" {
		return invalid("model", "model is required")
	}
	return f, nil
}

// withUsage returns the body, a JSON object without "stream_options",
// asking for the stream's token counts (Ollama's openai middleware writes
// them in an event of their own before [DONE]).
func withUsage(body []byte) []byte {
	body = bytes.TrimRight(body, jsonSpace)
	const ask = `,"stream_options":{"include_usage":true}}`
	out := make([]byte, 0, len(body)-1+len(ask))
	return append(append(out, body[:len(body)-1]...), ask...)
}

// jsonString decodes the JSON string literal q, quotes included, which is
// known to be valid. Most are plain text, copied as they are.
func jsonString(q []byte) string {
	raw := q[1 : len(q)-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	var s string
	_ = json.Unmarshal(q, &s) // escapes, and bad UTF-8 made U+FFFD as encoding/json does
	return s
}

// fieldOf returns the name of a field parseRequest reads when the JSON key
// q (quotes included) names it as encoding/json, and so Ollama, matches it:
// case-insensitively, so that "Stream" counts as it does for the node.
func fieldOf(q []byte) string {
	key := q[1 : len(q)-1]
	if bytes.IndexByte(key, '\\') >= 0 {
		key = []byte(jsonString(q))
	}
	switch {
	case bytes.EqualFold(key, []byte("model")):
		return "model"
	case bytes.EqualFold(key, []byte("name")):
		return "name"
	case bytes.EqualFold(key, []byte("stream")):
		return "stream"
	case bytes.EqualFold(key, []byte("prompt")):
		return "prompt"
	case bytes.EqualFold(key, []byte("messages")):
		return "messages"
	case bytes.EqualFold(key, []byte("keep_alive")):
		return "keep_alive"
	case bytes.EqualFold(key, []byte("stream_options")):
		return "stream_options"
	}
	return ""
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value that starts at i.
// The input is known to be valid JSON.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of a number or literal
			}
			if depth--; depth == 0 {
				return i + 1
			}
		default:
			if depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				return i // the end of a number or literal
			}
		}
	}
	return i
}

// maxPresizedBody is the largest declared body length that readBody
// allocates at once, before the bytes arrive.
const maxPresizedBody = 1 << 20

// readBody reads the whole request body, bounded by the configured limit, so
// it can be parsed for the model and replayed to a second node.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	limit := h.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", limit)
	}
	var (
		body []byte
		err  error
	)
	rd := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength > 0 && r.ContentLength <= maxPresizedBody {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		// Grown as the bytes arrive: a client that declares 64 MiB and
		// sends nothing must not make the proxy hold 64 MiB.
		body, err = io.ReadAll(rd)
	}
	if err != nil {
		status, msg := h.bodyReadFailure(err)
		return nil, status, errors.New(msg)
	}
	// Read whole: closing it spares net/http a drain before the response
	// head, whose pooled copy buffer needs more stack than a stream has.
	r.Body.Close()
	return body, 0, nil
}

// unzstd decompresses a zstd request body. A few kilobytes of zstd can
// stand for many megabytes, so what one costs is bounded apart from what
// the client sent: at most maxZstdBody bytes once decompressed (and
// MaxBodyBytes), an 8 MiB decoder window as Ollama allows, and a few at a
// time (zstdSlots), the others waiting their turn.
func (h *Handler) unzstd(ctx context.Context, body []byte) ([]byte, int, error) {
	limit := min(h.cfg.MaxBodyBytes, maxZstdBody)
	select {
	case zstdSlots <- struct{}{}:
		defer func() { <-zstdSlots }()
	case <-ctx.Done():
		return nil, http.StatusServiceUnavailable, ctx.Err()
	}
	d, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(8<<20))
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("failed to decompress zstd body")
	}
	defer d.Close()
	out, err := io.ReadAll(io.LimitReader(d, limit+1))
	switch {
	case err != nil:
		return nil, http.StatusBadRequest, errors.New("failed to decompress zstd body")
	case int64(len(out)) > limit:
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes once decompressed", limit)
	}
	return out, 0, nil
}

const maxZstdBody = 16 << 20

var zstdSlots = make(chan struct{}, 4)

// proxy returns the handler of a model-routed route. Reading the request,
// choosing the node and relaying its answer are three calls made from
// here, so that only the relay's frame is on the stack while the response
// streams (see tail).
func (h *Handler) proxy(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, body, f, cands, ok := h.candidates(w, r, rt)
		if !ok {
			return
		}
		preferred, rest := v.settings.Strategy.Narrow(cands)
		loadOnly := f.loadOnly(rt)
		if loadOnly {
			preferred, rest = h.toLoaded(r.Context(), rt, v, body, f, cands, preferred, rest)
		}
		node, resp, release := h.forward(w, r, rt, v, body, preferred, rest)
		if resp == nil {
			return
		}
		defer release() // also when the relay cuts the connection (a panic)
		h.relay(w, r, rt, node, resp)
		if loadOnly {
			h.recheck(node.ID) // its /api/ps changed
		}
	}
}

// candidates reads the request and returns the nodes that may serve it,
// or answers it with the error that stops it.
func (h *Handler) candidates(w http.ResponseWriter, r *http.Request, rt route) (*view, []byte, requestFields, []fleet.Candidate, bool) {
	a := accessFrom(r.Context())
	body, status, err := h.readBody(w, r)
	if err == nil && rt.zstdBodies && strings.EqualFold(r.Header.Get("Content-Encoding"), "zstd") {
		// Read here for its model, and sent on as plain JSON.
		body, status, err = h.unzstd(r.Context(), body)
		r.Header.Del("Content-Encoding")
	}
	if err != nil {
		writeError(w, rt.dialect, status, err.Error())
		return nil, nil, requestFields{}, nil, false
	}
	f, err := parseRequest(body)
	if err != nil {
		var invalid *fleet.ValidationError
		errors.As(err, &invalid)
		writeError(w, rt.dialect, http.StatusBadRequest, invalid.Msg)
		return nil, nil, f, nil, false
	}
	a.model, a.wholeAnswer = f.model, !f.streamed(rt)
	if rt.asksUsage && !a.wholeAnswer && !f.streamOptions {
		body, a.hideUsage = withUsage(body), true
	}
	v := h.view.get(r.Context(), h.now())
	cands, err := v.snap.Candidates(f.model, h.routing())
	if err != nil {
		writeErr(w, r, rt.dialect, err)
		return nil, nil, f, nil, false
	}
	return v, body, f, cands, true
}

// toLoaded sends a request that only loads or unloads the model (no
// prompt, no messages: what `ollama run` sends first, and `ollama stop`)
// to the nodes that have it in memory, as /api/ps last listed them: a load
// finds it there at no cost, and an unload frees it there rather than on a
// node that never had it. A load falls back on the other nodes when those
// fail (busy, gone). An unload is also sent to every other such node
// first, so that `ollama stop` frees the model across the fleet; the
// client's answer comes from the one left. Without such nodes the
// strategy's split (preferred, rest) stands.
func (h *Handler) toLoaded(ctx context.Context, rt route, v *view, body []byte, f requestFields, cands, preferred, rest []fleet.Candidate) ([]fleet.Candidate, []fleet.Candidate) {
	var loaded, others []fleet.Candidate
	for _, c := range cands {
		if c.Loaded {
			loaded = append(loaded, c)
		} else {
			others = append(others, c)
		}
	}
	if len(loaded) == 0 {
		return preferred, rest
	}
	if f.keepAliveZero && len(loaded) > 1 {
		others := make([]pullTarget, len(loaded)-1)
		for i, c := range loaded[1:] {
			others[i] = pullTarget{node: c.Node, base: v.urls[c.Node.ID]}
		}
		for _, res := range h.fanOut(ctx, others, http.MethodPost, rt.upstream, body) {
			if res.err != nil {
				h.log.Warn("unload on another node", "node", res.target.node.Name, "node_id", res.target.node.ID, "err", res.err.Error())
			}
			h.recheck(res.target.node.ID) // so that /api/ps stops listing it
		}
		return loaded[:1], nil
	}
	return loaded, others
}

// forward sends the request to the least loaded candidate and returns the
// node, its response and the release of its in-flight lease, to be called
// once the response is relayed. A candidate that cannot be reached, is
// busy, or answers that it lacks the model, is dropped and the next one is
// tried; once every candidate failed, the fallback ones are. When no node
// answers it writes the error itself and returns a nil response.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, rt route, v *view, body []byte, cands, fallback []fleet.Candidate) (*fleet.Node, *http.Response, func()) {
	ctx := r.Context()
	a := accessFrom(ctx)
	if a.wholeAnswer {
		// Its head comes only when the answer is done, which may take
		// longer than any bound on a stream's first token: the client's
		// own timeout (and its cancellation) is the bound.
		ctx = withoutFirstByteTimeout(ctx)
	}
	ids := nodeIDs(cands)
	var lastErr error
	for len(cands) > 0 || len(fallback) > 0 {
		if len(cands) == 0 { // every preferred node failed
			cands, fallback = fallback, nil
			ids = nodeIDs(cands)
		}
		i, release, err := h.inflight.Acquire(ctx, ids)
		if err != nil {
			writeErr(w, r, rt.dialect, err)
			return nil, nil, nil
		}
		node := &cands[i].Node
		resp, err := h.send(ctx, r, rt, v.urls[node.ID], body)
		if err == nil && len(cands)+len(fallback) > 1 {
			switch resp.StatusCode {
			case http.StatusServiceUnavailable:
				// Busy (Ollama's queue is full): skip this node for this
				// request only; it is not unhealthy.
				drain(resp.Body)
				err = errBusy
			case http.StatusNotFound:
				// The model is gone from this node since its list was
				// read (ollama rm there): another candidate may have it,
				// and a re-probe corrects the list for the next request.
				drain(resp.Body)
				err = errModelGone
				h.recheck(node.ID)
			}
		}
		if err != nil {
			release()
			if ctx.Err() != nil {
				a.node = node.Name // the node it was waiting for, in the history
				if outOfTime(ctx) {
					a.err = errOutOfTime
					writeError(w, rt.dialect, http.StatusGatewayTimeout, "node "+node.Name+" did not answer before "+errOutOfTime.Error())
				}
				return nil, nil, nil // else the client went away; nobody to answer
			}
			if errors.Is(err, errFirstByteTimeout) {
				h.answerTimeout(w, rt, a, node, err)
				return nil, nil, nil
			}
			if !errors.Is(err, errBusy) && !errors.Is(err, errModelGone) {
				h.markUnreachable(ctx, *node, err)
			}
			lastErr = &unansweredError{node: node.Name, err: err}
			a.node = node.Name // the last one tried, when none answers
			a.retries++
			cands = append(cands[:i:i], cands[i+1:]...)
			ids = append(ids[:i:i], ids[i+1:]...)
			continue
		}
		a.node = node.Name
		return node, resp, release
	}
	h.answerNoNode(w, rt, a, lastErr)
	return nil, nil, nil
}

func nodeIDs(cands []fleet.Candidate) []int64 {
	ids := make([]int64, len(cands))
	for i, c := range cands {
		ids[i] = c.Node.ID
	}
	return ids
}

// The answers of a forward that found no node.

// errOutOfTime is the request's own time limit: its context's deadline,
// which only a Lambda invocation's sets (shortly before Lambda stops the
// process, infra/lambda). A server's request context has none: it ends
// when the client leaves.
var errOutOfTime = errors.New("the request's time limit (the function's timeout)")

func outOfTime(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.DeadlineExceeded)
}

func (h *Handler) answerTimeout(w http.ResponseWriter, rt route, a *access, node *fleet.Node, err error) {
	a.node = node.Name
	msg := fmt.Sprintf("node %s sent no response within %s", node.Name, h.cfg.FirstByteTimeout)
	var stall *stallError
	if errors.As(err, &stall) { // it stopped reading the request
		msg = "node " + node.Name + " " + stall.Error()
	}
	writeError(w, rt.dialect, http.StatusGatewayTimeout, msg)
}

func (h *Handler) answerNoNode(w http.ResponseWriter, rt route, a *access, lastErr error) {
	if a.retries > 0 {
		a.retries-- // the last attempt was not a retry
	}
	a.err = lastErr
	writeError(w, rt.dialect, http.StatusBadGateway, "no node could serve the request: "+shortReason(lastErr))
}

// unansweredError is a node's failure to answer, naming the node.
type unansweredError struct {
	node string
	err  error
}

func (e *unansweredError) Error() string { return "node " + e.node + ": " + shortReason(e.err) }
func (e *unansweredError) Unwrap() error { return e.err }

var (
	errBusy             = errors.New("node busy")
	errModelGone        = errors.New("node no longer has the model")
	errFirstByteTimeout = errors.New("node sent no response headers in time")
)

// hopHeaders are never forwarded (RFC 9110 §7.6.1), and credentials meant
// for the proxy never reach a node.
var skipRequestHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Authorization": true, "Cookie": true, "X-Api-Key": true, "Host": true, "Content-Length": true,
	// The proxy answers CORS itself (auth_cors.go); a node would refuse an
	// origin it does not know with 403.
	"Origin": true,
}

var skipResponseHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Set-Cookie": true, "Access-Control-Allow-Origin": true, "Access-Control-Allow-Credentials": true,
	"Access-Control-Expose-Headers": true, "Access-Control-Allow-Methods": true, "Access-Control-Allow-Headers": true,
	"Access-Control-Max-Age": true, // the proxy answers CORS (auth_cors.go)
	"Vary":                   true, // added to the proxy's own by relay
}

// send forwards one attempt. The Host header becomes the node's (a loopback
// Ollama answers 403 to a foreign Host).
func (h *Handler) send(ctx context.Context, r *http.Request, rt route, base *url.URL, body []byte) (*http.Response, error) {
	if base == nil {
		return nil, errors.New("node has no valid URL")
	}
	// Built field by field rather than by http.NewRequest, which would
	// print the URL only to parse it back.
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, Path: rt.upstream, RawQuery: r.URL.RawQuery}
	out := (&http.Request{
		Method: r.Method, URL: u, Host: u.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        make(http.Header, len(r.Header)+2),
		Body:          bodyOf(body),
		ContentLength: int64(len(body)),
		// Lets the transport replay the body on a pooled connection that
		// turns out to be dead.
		GetBody: func() (io.ReadCloser, error) { return bodyOf(body), nil },
	}).WithContext(ctx)
	copyHeaders(out.Header, r.Header, skipRequestHeaders)
	if ip := peerIP(r); ip != "" {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if r.TLS != nil {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	resp, err := h.transport.RoundTrip(out)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !isDialError(err) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: %w", errFirstByteTimeout, err)
		}
		return nil, err
	}
	return resp, nil
}

// bodyOf is a request body of b, as http.NewRequest makes it: an empty
// one is http.NoBody, which a transport sends as "no body" rather than as
// one of unknown length.
func bodyOf(b []byte) io.ReadCloser {
	if len(b) == 0 {
		return http.NoBody
	}
	return io.NopCloser(bytes.NewReader(b))
}

// copyHeaders copies src into dst, leaving out the skipped headers and any
// header that src's Connection header names (RFC 9110 §7.6.1).
func copyHeaders(dst, src http.Header, skip map[string]bool) {
	conn := src["Connection"]
	for k, vs := range src {
		if skip[k] || namedIn(conn, k) {
			continue
		}
		dst[k] = vs
	}
}

func namedIn(connection []string, header string) bool {
	for _, v := range connection {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), header) {
				return true
			}
		}
	}
	return false
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}
