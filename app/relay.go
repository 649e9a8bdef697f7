package app

import (
	"bytes"
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
	switch {
	case strings.HasPrefix(contentType, "application/x-ndjson"):
		return ndjsonBody
	case strings.HasPrefix(contentType, "text/event-stream"):
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
	kind := kindOf(resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)

	// A stream spends nearly all its life waiting for the next token. Wait
	// for it before taking a buffer, so an idle stream holds none: at
	// thousands of streams the buffers would be the largest cost. A whole
	// document is read straight into the buffer instead, in larger reads.
	waiter, _ := resp.Body.(interface{ waitData() })
	if kind == plainBody {
		waiter = nil
	}
	t := &a.tail
	lastNewline := true
	for {
		if waiter != nil {
			waiter.waitData()
		}
		bp := h.bufs.Get().(*[]byte)
		n, rerr := resp.Body.Read(*bp)
		var werr error
		if n > 0 {
			chunk := (*bp)[:n]
			t.add(chunk)
			lastNewline = chunk[n-1] == '\n'
			_, werr = w.Write(chunk)
		}
		h.bufs.Put(bp)
		if werr != nil {
			a.err = errClientGone
			return // the client is gone; closing the body cancels the node
		}
		// Flush every chunk of a stream at once, except one that came with
		// the end of the body: returning flushes it together with the
		// chunked terminator, one write instead of two.
		if n > 0 && kind != plainBody && rerr == nil {
			flush(w)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.Context().Err() != nil {
				a.err = errClientGone
				return // the client cancelled; the node was cancelled with it
			}
			h.streamFailed(w, r, rt, node, kind, lastNewline, rerr)
			return
		}
	}
	a.promptTok, a.evalTok = t.tokens()
	if kind == sseBody && rt.endsWithDone && resp.StatusCode == http.StatusOK && !t.endsWith(sseDone) {
		// Every complete OpenAI stream ends with [DONE]. Ollama ends one
		// without it when its runner dies (after an empty chunk), which the
		// openai SDK would take for a normal end: say what happened.
		a.streamErr = "node " + node.Name + " ended the stream without [DONE]"
		writeSSEError(w, lastNewline, a.streamErr+" (the model runner may have failed)")
		flush(w)
	}
}

var sseDone = []byte("data: [DONE]")

// errClientGone is what the history says of a response the client stopped
// reading: its status went out, the rest of it did not.
var errClientGone = errors.New("the client went away mid-response")

// streamFailed reports a node failure after the response started.
func (h *Handler) streamFailed(w http.ResponseWriter, r *http.Request, rt route, node *fleet.Node, kind streamKind, lastNewline bool, cause error) {
	a := accessFrom(r.Context())
	msg := "node " + node.Name + " failed mid-stream: " + shortReason(cause)
	a.streamErr = msg
	h.markUnreachable(r.Context(), *node, cause)
	switch kind {
	case ndjsonBody:
		line, _ := json.Marshal(map[string]string{"error": msg})
		if !lastNewline {
			w.Write([]byte{'\n'})
		}
		w.Write(append(line, '\n'))
	case sseBody:
		if rt.dialect == anthropicDialect {
			writeAnthropicSSEError(w, lastNewline, msg)
		} else {
			writeSSEError(w, lastNewline, msg)
		}
	default:
		// A whole document cannot carry an error after its start: cut the
		// connection so the client sees a truncated body, not a short one
		// that parses.
		panic(http.ErrAbortHandler)
	}
	flush(w)
}

// writeSSEError ends an OpenAI stream with an error event, which the openai
// SDKs raise as an APIError.
func writeSSEError(w http.ResponseWriter, lastNewline bool, msg string) {
	ev, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": "api_error", "param": nil, "code": nil}})
	prefix := "data: "
	if !lastNewline {
		prefix = "\n\ndata: "
	}
	w.Write([]byte(prefix))
	w.Write(ev)
	w.Write([]byte("\n\n"))
}

// writeAnthropicSSEError ends an Anthropic stream (/v1/messages) with the
// error event the Anthropic SDKs raise; they skip events without a name.
func writeAnthropicSSEError(w http.ResponseWriter, lastNewline bool, msg string) {
	ev, _ := json.Marshal(anthropicError(http.StatusInternalServerError, msg))
	prefix := "event: error\ndata: "
	if !lastNewline {
		prefix = "\n\n" + prefix
	}
	w.Write([]byte(prefix))
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

// endsWith reports whether the tail, without trailing white space, ends
// with suffix.
func (t *tail) endsWith(suffix []byte) bool {
	return bytes.HasSuffix(bytes.TrimRight(t.buf[:t.n], " \r\n"), suffix)
}

// tokens returns the prompt and completion token counts found last in the
// tail: Ollama's prompt_eval_count/eval_count or OpenAI's usage fields.
func (t *tail) tokens() (prompt, completion int64) {
	b := t.buf[:t.n]
	prompt = lastNumber(b, `"prompt_eval_count":`)
	completion = lastNumber(b, `"eval_count":`)
	if prompt == 0 && completion == 0 {
		prompt = lastNumber(b, `"prompt_tokens":`)
		completion = lastNumber(b, `"completion_tokens":`)
	}
	return prompt, completion
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
