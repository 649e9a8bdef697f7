package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/internal/fakeollama"
)

// scriptNode is a fake Ollama (health checks, model lists) whose chat
// routes and pull run answer, which writes what a test needs, raw when it
// hijacks the connection.
func scriptNode(t *testing.T, answer http.HandlerFunc) urlOf {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", fakeollama.New(fakeollama.Options{Models: []string{"llama3:latest"}}))
	for _, p := range []string{"POST /api/chat", "POST /v1/chat/completions", "POST /api/pull"} {
		mux.Handle(p, answer)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return urlOf(srv.URL)
}

// raw hijacks the connection and writes head and body as they are, then
// closes it.
func raw(w http.ResponseWriter, head string, body ...string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	buf.WriteString(head)
	for _, b := range body {
		buf.WriteString(b)
		buf.Flush()
		time.Sleep(10 * time.Millisecond)
	}
	buf.Flush()
}

func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// accessLine returns the last access line the proxy logged for path.
func accessLine(t *testing.T, e *testEnv, path string) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, "the access line of "+path, func() bool {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			var v map[string]any
			if json.Unmarshal([]byte(l), &v) == nil && v["msg"] == "request" && v["path"] == path {
				found = v
			}
		}
		return found != nil
	})
	return found
}

// tok is one token line of a chat stream.
const tok = `{"model":"llama3","message":{"role":"assistant","content":"hi"},"done":false}` + "\n"

// oneTokenThenSilence is a node that sends a token, then nothing until
// the proxy hangs up (or 10 s pass): a frozen process.
func oneTokenThenSilence(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	io.WriteString(w, tok)
	w.(http.Flusher).Flush()
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// TestRelayEndings: how each way a node's answer can end reaches the
// client, the history and the in-flight counts.
func TestRelayEndings(t *testing.T) {
	const ndjsonHead = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
	const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	const doneLine = `{"model":"llama3","done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2,"eval_duration":5}` + "\n"

	t.Run("WholeAnswerCut", func(t *testing.T) {
		// A cut inside a whole document can only be a cut connection;
		// the node's lease must be released all the same.
		e := newEnv(t, app.Config{}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
			raw(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n", `{"model":"llama3","message":{"content":"par`)
		}))
		resp, err := testClient.Post(e.proxy.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"llama3","stream":false,"messages":[{"role":"user","content":"hi"}]}`))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatal("a cut whole answer arrived as a complete one")
		}
		waitFor(t, "in-flight zero", func() bool { return e.inFlight() == 0 })
	})

	t.Run("OllamaErrorLine", func(t *testing.T) {
		// Ollama's own report of a runner that died: the client has it,
		// and the history must not call the stream clean.
		e := newEnv(t, app.Config{}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
			raw(w, ndjsonHead, chunk(tok), chunk(`{"error":"llama runner process has terminated"}`+"\n"), "0\r\n\r\n")
		}))
		body := readAll(t, e.post("/api/chat", chat))
		if !strings.HasSuffix(body, `{"error":"llama runner process has terminated"}`+"\n") || strings.Count(body, "error") != 1 {
			t.Fatalf("body %q", body)
		}
		if got, _ := accessLine(t, e, "/api/chat")["stream_error"].(string); !strings.Contains(got, "llama runner process has terminated") {
			t.Fatalf("stream_error %q; want the node's error", got)
		}
	})

	t.Run("CutAfterDone", func(t *testing.T) {
		// Everything arrived; only the chunked terminator is missing.
		e := newEnv(t, app.Config{}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
			raw(w, ndjsonHead, chunk(tok), chunk(doneLine))
		}))
		body := readAll(t, e.post("/api/chat", chat))
		if body != tok+doneLine {
			t.Fatalf("body %q; want the two lines and no error", body)
		}
		line := accessLine(t, e, "/api/chat")
		if line["stream_error"] != nil || line["eval_count"] != 2.0 {
			t.Fatalf("access line %v; want no error and the token counts", line)
		}
	})

	t.Run("SSECutBeforeBlankLine", func(t *testing.T) {
		// The event's data line came, its blank line did not: the event
		// is ended first, or the error would be read as part of it.
		e := newEnv(t, app.Config{}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
			raw(w, sseHead, chunk("data: {\"n\":0}\n\n"), chunk("data: {\"n\":1}\n"))
		}))
		body := readAll(t, e.post("/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[]}`))
		if !strings.HasPrefix(body, "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"error\":{") {
			t.Fatalf("body %q", body)
		}
	})

	t.Run("NodeFallsSilent", func(t *testing.T) {
		// A node frozen mid-stream: the stream ends with an error after
		// the first-byte timeout instead of holding the client for ever.
		e := newEnv(t, app.Config{FirstByteTimeout: 300 * time.Millisecond}, scriptNode(t, oneTokenThenSilence))
		start := time.Now()
		body := readAll(t, e.post("/api/chat", chat))
		if !strings.HasPrefix(body, tok) || !strings.Contains(body, `failed mid-stream: sent nothing for 300ms"}`) || time.Since(start) > 5*time.Second {
			t.Fatalf("after %s: %q; want the token, then an error line", time.Since(start), body)
		}
	})

	t.Run("PausesShorterThanTheBound", func(t *testing.T) {
		// Pauses of 100 and 250 ms under a 300 ms bound: nothing is cut,
		// however the pauses fall against the deadline's re-arming.
		e := newEnv(t, app.Config{FirstByteTimeout: 300 * time.Millisecond}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			for _, pause := range []time.Duration{100, 250, 100, 250} {
				io.WriteString(w, tok)
				w.(http.Flusher).Flush()
				time.Sleep(pause * time.Millisecond)
			}
			io.WriteString(w, doneLine)
		}))
		if body := readAll(t, e.post("/api/chat", chat)); body != strings.Repeat(tok, 4)+doneLine {
			t.Fatalf("body %q; want the whole stream", body)
		}
	})

	t.Run("SlowClientIsNoSilentNode", func(t *testing.T) {
		// A client that stops reading holds the relay in its write for
		// longer than the bound: the node kept sending, and must be
		// neither cut nor blamed.
		// (A bound of a second, not less: under -race on a loaded machine
		// the relay itself can be kept from running for a few hundred ms.)
		node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 150000})
		e := newEnv(t, app.Config{FirstByteTimeout: time.Second}, node)
		resp := e.post("/api/generate", `{"model":"llama3","prompt":"hi"}`)
		rd := bufio.NewReader(resp.Body)
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // the sockets fill; the relay waits on the client
		rest, err := io.ReadAll(rd)
		resp.Body.Close()
		if err != nil || bytes.Contains(rest, []byte(`"error"`)) || !bytes.Contains(rest, []byte(`"eval_count":150000`)) {
			t.Fatalf("after a slow client (%v): ...%q", err, rest[max(0, len(rest)-200):])
		}
	})

	t.Run("EndStreamsWakesAWaitingStream", func(t *testing.T) {
		// At the end of a shutdown's grace, a stream waiting for its node
		// ends at once with an error saying why, not a silent cut.
		e := newEnv(t, app.Config{}, scriptNode(t, oneTokenThenSilence))
		resp := e.post("/api/chat", chat)
		rd := bufio.NewReader(resp.Body)
		if first, err := rd.ReadString('\n'); err != nil || first != tok {
			t.Fatalf("first line %q, %v", first, err)
		}
		start := time.Now()
		e.h.EndStreams()
		rest, _ := io.ReadAll(rd)
		resp.Body.Close()
		if !strings.Contains(string(rest), "aivonx is shutting down") || time.Since(start) > 2*time.Second {
			t.Fatalf("after EndStreams, %s later: %q; want an error line at once", time.Since(start), rest)
		}
		waitFor(t, "in-flight zero", func() bool { return e.inFlight() == 0 })
	})

	t.Run("StreamOfAnyContentType", func(t *testing.T) {
		// Media types are case-insensitive, and a streamed request is
		// relayed chunk by chunk whatever the type: the node writes its
		// second line only once the client has read the first.
		for _, ct := range []string{"Application/X-NDJSON", "application/json; charset=utf-8", ""} {
			read := make(chan struct{})
			e := newEnv(t, app.Config{}, scriptNode(t, func(w http.ResponseWriter, r *http.Request) {
				if ct == "" {
					w.Header()["Content-Type"] = nil
				} else {
					w.Header().Set("Content-Type", ct)
				}
				io.WriteString(w, tok)
				w.(http.Flusher).Flush()
				select {
				case <-read:
				case <-time.After(3 * time.Second):
				}
				io.WriteString(w, doneLine)
			}))
			resp := e.post("/api/chat", chat)
			if got := resp.Header.Get("Content-Type"); got != ct {
				t.Errorf("Content-Type %q; want the node's %q", got, ct)
			}
			start := time.Now()
			first, err := bufio.NewReader(resp.Body).ReadString('\n')
			close(read)
			if err != nil || first != tok || time.Since(start) > 2*time.Second {
				t.Errorf("%q: first line %q (%v) after %s; want it before the node's next", ct, first, err, time.Since(start))
			}
			resp.Body.Close()
		}
	})
}

// TestAccessLineBounded: what a client sends is cut in the access line as
// in the history, so one request cannot write megabytes to the log.
func TestAccessLineBounded(t *testing.T) {
	e := newEnv(t, app.Config{}, fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}}))
	long := strings.Repeat("m", 100<<10)
	resp := e.post("/api/chat", `{"model":"`+long+`"}`)
	if body := readAll(t, resp); resp.StatusCode != 404 || !strings.Contains(body, long) {
		t.Fatalf("%d: want Ollama's 404 naming the model", resp.StatusCode)
	}
	line := accessLine(t, e, "/api/chat")
	if model, _ := line["model"].(string); len(model) == 0 || len(model) > 256 {
		t.Fatalf("access line's model has %d bytes; want at most 256", len(model))
	}
}
