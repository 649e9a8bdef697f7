package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/aivonx/aivonx/app/fleet"
)

// streamKind is how a response body is framed, which decides how a failure
// in the middle of it is reported to the client.
type streamKind int

const (
	plainBody  streamKind = iota // a whole JSON document: a cut is all we can do
	ndjsonBody                   // Ollama streaming: a final {"error":…} line
	sseBody                      // OpenAI streaming: a final data: {"error":…} event
)

func kindOf(contentType string) streamKind {
	ct := strings.ToLower(contentType) // media types are case-insensitive
	switch {
	case strings.HasPrefix(ct, "application/x-ndjson"):
		return ndjsonBody
	case strings.HasPrefix(ct, "text/event-stream"):
		return sseBody
	}
	return plainBody
}

// relay copies the node's response to the client as it arrives: every read
// from the node is written and flushed at once, so no token waits for
// another. When the node fails mid-stream the client gets a final error it
// can see, never a silent truncation.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, rt route, node *fleet.Node, resp *http.Response) {
	defer resp.Body.Close()
	a := accessFrom(r.Context())
	hdr := w.Header()
	copyHeaders(hdr, resp.Header, skipResponseHeaders)
	for _, v := range resp.Header["Vary"] { // the proxy's own (Origin) stay
		hdr.Add("Vary", v)
	}
	hdr.Set("X-Aivonx-Node", node.Name)
	if _, ok := resp.Header["Content-Type"]; !ok {
		hdr["Content-Type"] = nil // none, as the node sent it: net/http must not guess one
	}
	kind := kindOf(resp.Header.Get("Content-Type"))
	// Whatever its type says, the answer to a request for a stream is
	// relayed as one, chunk by chunk.
	streaming := kind != plainBody || !a.wholeAnswer
	w.WriteHeader(resp.StatusCode)

	// A stream spends nearly all its life waiting for the next token. Wait
	// for it before taking a buffer, so an idle stream holds none: at
	// thousands of streams the buffers would be the largest cost. A whole
	// document is read straight into the buffer instead, in larger reads.
	waiter, _ := resp.Body.(interface{ waitData() })
	if !streaming {
		waiter = nil
	}
	t := &a.tail
	// Whether one of the route's last events went by, checked as each
	// chunk comes: the event may be longer than the tail.
	ended := kind != sseBody || len(rt.lastEvents) == 0 || resp.StatusCode != http.StatusOK
	var hider *usageHider
	if a.hideUsage && kind == sseBody {
		hider = new(usageHider)
	}
	for {
		if waiter != nil {
			waiter.waitData()
		}
		bp := h.bufs.Get().(*[]byte)
		n, rerr := resp.Body.Read(*bp)
		var werr error
		if n > 0 {
			chunk := (*bp)[:n]
			ended = ended || holdsLine(t.buf[:t.n], chunk, rt.lastEvents)
			t.add(chunk)
			if hider != nil {
				chunk = hider.filter(chunk)
			}
			if len(chunk) > 0 {
				_, werr = w.Write(chunk)
			}
		}
		h.bufs.Put(bp)
		if werr != nil {
			a.err = errClientGone
			return // the client is gone; closing the body cancels the node
		}
		if streaming && rerr == nil && h.ending.Load() && !t.complete(kind) {
			h.endStream(w, r, rt, node, kind)
			return // closing the body cancels the node
		}
		// Flush every chunk of a stream at once, except one that came with
		// the end of the body: returning flushes it together with the
		// chunked terminator, one write instead of two.
		if n > 0 && streaming && rerr == nil {
			flush(w)
		}
		if rerr == io.EOF {
			if hider != nil && len(hider.held) > 0 {
				w.Write(hider.held) // a last line without its line break
			}
			break
		}
		if rerr != nil {
			if outOfTime(r.Context()) {
				h.streamOutOfTime(w, r, rt, node, kind)
				return
			}
			if r.Context().Err() != nil {
				a.err = errClientGone
				return // the client cancelled; the node was cancelled with it
			}
			if t.complete(kind) {
				break // cut after its last message: the answer is whole
			}
			if h.ending.Load() && streaming {
				h.endStream(w, r, rt, node, kind) // woken by EndStreams
				return
			}
			h.streamFailed(w, r, rt, node, kind, rerr)
			return
		}
	}
	a.promptTok, a.evalTok = t.tokens()
	switch {
	case !ended:
		// Ollama ends a stream without its last event when its runner dies
		// (an OpenAI one after an empty chunk), which the SDKs would take
		// for a normal end: say what happened.
		last := rt.lastEvents[0]
		a.streamErr = "node " + node.Name + " ended the stream without " + last[strings.IndexByte(last, ' ')+1:]
		writeStreamError(w, rt, kind, t.gap(kind), a.streamErr+" (the model runner may have failed)")
	case kind == ndjsonBody:
		// Ollama's own report of a failure mid-stream (its runner died):
		// the client has it; the history must not call the stream clean.
		if msg, ok := t.errorLine(); ok {
			a.streamErr = "node " + node.Name + ": " + msg
		}
	}
}

// errClientGone is what the history says of a response the client stopped
// reading: its status went out, the rest of it did not.
var errClientGone = errors.New("the client went away mid-response")

// streamFailed reports a node failure after the response started.
func (h *Handler) streamFailed(w http.ResponseWriter, r *http.Request, rt route, node *fleet.Node, kind streamKind, cause error) {
	a := accessFrom(r.Context())
	msg := "node " + node.Name + " failed mid-stream: " + shortReason(cause)
	a.streamErr = msg
	h.markUnreachable(r.Context(), *node, cause)
	if kind == plainBody {
		// A whole document cannot carry an error after its start: cut the
		// connection so the client sees a truncated body, not a short one
		// that parses.
		panic(http.ErrAbortHandler)
	}
	writeStreamError(w, rt, kind, a.tail.gap(kind), msg)
}

// writeStreamError ends a stream with msg in its own shape: an error event
// (SSE: Anthropic's on /v1/messages, else OpenAI's), or a final
// {"error":…} line (NDJSON, and a stream of any other type).
func writeStreamError(w http.ResponseWriter, rt route, kind streamKind, gap, msg string) {
	switch {
	case kind == sseBody && rt.dialect == anthropicDialect:
		writeAnthropicSSEError(w, gap, msg)
	case kind == sseBody:
		writeSSEError(w, gap, msg)
	default:
		line, _ := json.Marshal(map[string]string{"error": msg})
		w.Write([]byte(gap))
		w.Write(append(line, '\n'))
	}
	flush(w)
}

// EndStreams makes every stream still running end now, with
// an error its client sees ("the proxy is shutting down"), instead of
// being cut silently when the server closes. For the end of a shutdown's
// grace period: a cut NDJSON stream looks complete to the Go client and
// the ollama CLI.
func (h *Handler) EndStreams() {
	h.ending.Store(true)
	h.endWaits()
	// Those waiting for their node's next chunk are woken.
	if t, ok := h.transport.(interface{ endStreams() }); ok {
		t.endStreams()
	}
}

// untilEnd is ctx, also cancelled when EndStreams runs.
func (h *Handler) untilEnd(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ended, cancel)
	return ctx, func() { stop(); cancel() }
}

// streamOutOfTime ends a stream cut by the request's time limit (a Lambda
// invocation's) with the route's error, so that it does not look whole: a
// whole document is cut, as it cannot carry one.
func (h *Handler) streamOutOfTime(w http.ResponseWriter, r *http.Request, rt route, node *fleet.Node, kind streamKind) {
	a := accessFrom(r.Context())
	msg := "the stream from node " + node.Name + " was cut at " + errOutOfTime.Error() + "; send the request again, or raise the timeout"
	a.streamErr = msg
	a.promptTok, a.evalTok = a.tail.tokens()
	if kind == plainBody {
		panic(http.ErrAbortHandler)
	}
	writeStreamError(w, rt, kind, a.tail.gap(kind), msg)
}

// endStream ends a stream the proxy stops (EndStreams) with the route's
// error, as a node failure does, but the node is not to blame.
func (h *Handler) endStream(w http.ResponseWriter, r *http.Request, rt route, node *fleet.Node, kind streamKind) {
	a := accessFrom(r.Context())
	msg := "aivonx is shutting down: the stream from node " + node.Name + " was cut; send the request again"
	a.streamErr = msg
	a.promptTok, a.evalTok = a.tail.tokens()
	writeStreamError(w, rt, kind, a.tail.gap(kind), msg)
}

// writeSSEError ends an OpenAI stream with an error event, which the openai
// SDKs raise as an APIError. gap ends the event before it (tail.gap).
func writeSSEError(w http.ResponseWriter, gap, msg string) {
	ev, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": "api_error", "param": nil, "code": nil}})
	w.Write([]byte(gap + "data: "))
	w.Write(ev)
	w.Write([]byte("\n\n"))
}

// writeAnthropicSSEError ends an Anthropic stream (/v1/messages) with the
// error event the Anthropic SDKs raise; they skip events without a name.
func writeAnthropicSSEError(w http.ResponseWriter, gap, msg string) {
	ev, _ := json.Marshal(anthropicError(http.StatusInternalServerError, msg))
	w.Write([]byte(gap + "event: error\ndata: "))
	w.Write(ev)
	w.Write([]byte("\n\n"))
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(w).Flush()
}

// tail keeps the last bytes of a response, from which the token counts are
// read once it ends: Ollama puts them last in its final NDJSON line or
// JSON object (after a generate's context array), OpenAI in the usage
// object of the last event before [DONE]. Every stream holds one, so it is
// kept small, and in the request's access record rather than on the stack:
// net/http needs ~3 KiB of stack to write the response head, and with the
// relay's frame lean the whole streaming path fits the goroutine's 8 KiB
// stack instead of doubling it (TestStreamFitsInitialStack).
type tail struct {
	buf [512]byte
	n   int
}

func (t *tail) add(p []byte) {
	if len(p) >= len(t.buf) {
		t.n = copy(t.buf[:], p[len(p)-len(t.buf):])
		return
	}
	if t.n+len(p) > len(t.buf) {
		keep := len(t.buf) - len(p)
		copy(t.buf[:], t.buf[t.n-keep:t.n])
		t.n = keep
	}
	t.n += copy(t.buf[t.n:], p)
}

// holdsLine reports whether chunk, coming after prev (the tail before it),
// holds one of lines as a whole line, or its end: a line may start in prev.
// Lines are short (an SSE event's name); prev ends where chunk starts.
func holdsLine(prev, chunk []byte, lines []string) bool {
	for _, l := range lines {
		// Within chunk, the line's start checked against prev's last byte.
		if lineIn(chunk, l, len(prev) == 0 || prev[len(prev)-1] == '\n') {
			return true
		}
		// Across the boundary: prev's last bytes and chunk's first.
		var w [64]byte
		p := prev[max(len(prev)-len(l)-1, 0):]
		if len(p)+len(l)+1 > len(w) {
			continue
		}
		n := copy(w[:], p)
		n += copy(w[n:], chunk[:min(len(chunk), len(l)+1)])
		if lineIn(w[:n], l, len(p) == len(prev) || prev[len(prev)-len(p)-1] == '\n') {
			return true
		}
	}
	return false
}

// lineIn reports whether b holds l as a whole line; b's first line is one
// when atStart (the bytes before b end a line).
func lineIn(b []byte, l string, atStart bool) bool {
	for at := 0; ; {
		i := bytes.Index(b[at:], []byte(l))
		if i < 0 {
			return false
		}
		start, end := at+i, at+i+len(l)
		if (start == 0 && atStart || start > 0 && b[start-1] == '\n') && end < len(b) && (b[end] == '\n' || b[end] == '\r') {
			return true
		}
		at = end
	}
}

// tokens returns the prompt and completion token counts found last in the
// tail: Ollama's prompt_eval_count/eval_count, OpenAI's usage fields, or
// the input_tokens/output_tokens of the Anthropic and Responses APIs.
func (t *tail) tokens() (prompt, completion int64) {
	b := t.buf[:t.n]
	for _, keys := range [...][2]string{
		{`"prompt_eval_count":`, `"eval_count":`},
		{`"prompt_tokens":`, `"completion_tokens":`},
		{`"input_tokens":`, `"output_tokens":`},
	} {
		prompt, completion = lastNumber(b, keys[0]), lastNumber(b, keys[1])
		if prompt != 0 || completion != 0 {
			break
		}
	}
	return prompt, completion
}

// lastLine is the tail's last line, without its line break; the part of
// it the tail holds when it is longer.
func (t *tail) lastLine() []byte {
	b := bytes.TrimRight(t.buf[:t.n], " \r\n")
	return b[bytes.LastIndexByte(b, '\n')+1:]
}

// complete reports whether the tail ends with a stream's last message, so
// that a cut after it loses nothing: Ollama's done line (or the success
// status of a pull, push or create), OpenAI's [DONE], Anthropic's
// message_stop. A generate's done line can be longer than the tail (its
// context array comes after "done"); eval_duration comes only in it.
func (t *tail) complete(kind streamKind) bool {
	if t.n == 0 || t.buf[t.n-1] != '\n' {
		return false
	}
	line := t.lastLine()
	switch kind {
	case ndjsonBody:
		return bytes.HasSuffix(line, []byte("}")) && (bytes.Contains(line, []byte(`"done":true`)) ||
			bytes.Contains(line, []byte(`"eval_duration":`)) || string(line) == `{"status":"success"}`)
	case sseBody:
		return string(line) == openAIChatEnd[0] || bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, []byte(`"type":"message_stop"`))
	}
	return false
}

// errorLine returns the message of a final {"error":…} line, which is how
// Ollama ends a stream whose model runner failed.
func (t *tail) errorLine() (string, bool) {
	line := t.lastLine()
	if !bytes.HasPrefix(line, []byte(`{"error":`)) {
		return "", false
	}
	var v struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(line, &v) != nil || v.Error == "" {
		return "", false
	}
	return v.Error, true
}

// gap is what must be written before a message of the proxy's own so that
// it stands alone: a line break after a cut line (NDJSON), or what ends
// the last event (SSE: an event ends with a blank line, and one left open
// would swallow ours).
func (t *tail) gap(kind streamKind) string {
	b := t.buf[:t.n]
	switch {
	case len(b) == 0:
		return ""
	case kind != sseBody:
		if b[len(b)-1] == '\n' {
			return ""
		}
		return "\n"
	case bytes.HasSuffix(b, []byte("\n\n")) || bytes.HasSuffix(b, []byte("\r\n\r\n")):
		return ""
	case b[len(b)-1] == '\n':
		return "\n"
	}
	return "\n\n"
}

func lastNumber(b []byte, key string) int64 {
	i := bytes.LastIndex(b, []byte(key))
	if i < 0 {
		return 0
	}
	rest := bytes.TrimLeft(b[i+len(key):], " ")
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// usageHider drops from an OpenAI stream the usage event the proxy asked
// for on its client's behalf (route.asksUsage): the "data:" line of a chunk
// with no choices and a usage, and the blank line that ends the event. A
// client that did not ask may read choices[0] of every chunk. Lines are
// judged whole: the part of a line one read cuts off waits for the rest,
// which follows at once, as a node writes each event in one piece.
type usageHider struct {
	held      []byte // the start of a line whose end has not come yet
	skipBlank bool   // the usage line went; the blank line after it goes too
}

// filter returns what of chunk the client gets; it may reuse chunk's array.
func (u *usageHider) filter(chunk []byte) []byte {
	if len(u.held) > 0 {
		chunk = append(u.held, chunk...)
		u.held = nil
	}
	if end := bytes.LastIndexByte(chunk, '\n') + 1; end < len(chunk) {
		u.held = append([]byte(nil), chunk[end:]...)
		chunk = chunk[:end]
	}
	out := chunk[:0] // written behind where it reads
	for rest := chunk; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n') + 1
		line := rest[:i]
		rest = rest[i:]
		text := bytes.TrimRight(line, "\r\n")
		switch {
		case isUsageEvent(text):
			u.skipBlank = true
			continue
		case u.skipBlank && len(text) == 0:
			u.skipBlank = false
			continue
		}
		u.skipBlank = false
		out = append(out, line...)
	}
	return out
}

// isUsageEvent reports whether an SSE line is the data of an OpenAI chunk
// that only carries usage, as Ollama writes it.
func isUsageEvent(line []byte) bool {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	data = bytes.TrimLeft(data, " ")
	return ok && len(data) > 0 && data[0] == '{' &&
		bytes.Contains(data, []byte(`"choices":[]`)) && bytes.Contains(data, []byte(`"usage":{`))
}
