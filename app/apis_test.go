package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/internal/fakeollama"
)

// apiNode is a fake Ollama (health checks, model lists) that answers the
// Responses and Messages APIs, which the fake does not speak, with a
// canned stream of three events and the API's last one; "cut" in the body
// makes it drop the connection after two, "runner died" end the stream
// cleanly without its last event, as Ollama does when its runner dies.
// The last event's data is longer than the relay's tail, as a
// response.completed holding the whole answer is.
type apiNode struct{ *httptest.Server }

func (n apiNode) URL() string { return n.Server.URL }

func startAPINode(t *testing.T) apiNode {
	t.Helper()
	fake := fakeollama.New(fakeollama.Options{Models: []string{"llama3:latest"}})
	mux := http.NewServeMux()
	mux.Handle("/", fake)
	for _, path := range []string{"/v1/responses", "/v1/messages"} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				Stream bool   `json:"stream"`
				Input  string `json:"input"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			if !body.Stream {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"path":%q,"text":"whole"}`, path)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				if i == 2 && body.Input == "cut" {
					panic(http.ErrAbortHandler) // the connection drops, no end of stream
				}
				fmt.Fprintf(w, "event: delta\ndata: {\"n\":%d}\n\n", i)
				w.(http.Flusher).Flush()
			}
			switch {
			case body.Input == "runner died":
			case path == "/v1/messages":
				fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
			default:
				fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output_text\":%q}}\n\n", strings.Repeat("words ", 200))
			}
		})
	}
	n := apiNode{httptest.NewServer(mux)}
	t.Cleanup(n.Close)
	return n
}

// TestResponsesAndMessagesAPIs: Ollama's /v1/responses (OpenAI) and
// /v1/messages (Anthropic) are routed by model like the other routes;
// their streams end without [DONE], which is no failure; a cut stream ends
// with an error event each SDK raises; errors come in each API's shape.
func TestResponsesAndMessagesAPIs(t *testing.T) {
	e := newEnv(t, app.Config{}, startAPINode(t))
	post := func(path, body string) (int, string) {
		t.Helper()
		resp := e.post(path, body)
		return resp.StatusCode, readAll(t, resp)
	}
	for _, path := range []string{"/v1/responses", "/v1/messages"} {
		if status, body := post(path, `{"model":"llama3"}`); status != 200 || !strings.Contains(body, `"text":"whole"`) {
			t.Errorf("%s whole: %d %s", path, status, body)
		}
		status, body := post(path, `{"model":"llama3","stream":true}`)
		if status != 200 || strings.Count(body, "event: delta") != 3 || strings.Contains(body, "error") {
			t.Errorf("%s stream: %d %q, want three events and no error", path, status, body)
		}
		// A stream that ends cleanly without its last event gets the
		// error event each SDK raises.
		status, body = post(path, `{"model":"llama3","stream":true,"input":"runner died"}`)
		last := map[string]string{"/v1/responses": "response.completed", "/v1/messages": "message_stop"}[path]
		if status != 200 || strings.Count(body, "event: delta") != 3 || !strings.HasSuffix(body, "\n\n") ||
			!strings.Contains(body, `"message":"node nodeA ended the stream without `+last+` (the model runner may have failed)"`) {
			t.Errorf("%s stream without %s: %d %q, want a final error event", path, last, status, body)
		}
	}
	if _, body := post("/v1/messages", `{"model":"llama3","stream":true,"input":"runner died"}`); !strings.Contains(body, "\n\nevent: error\ndata: {") {
		t.Errorf("Anthropic stream without message_stop: %q, want Anthropic's error event", body)
	}

	// A body compressed with zstd, as Codex sends it: routed by its model
	// and passed on as JSON; one that is not zstd is the API's 400.
	zstdPost := func(payload []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/responses", bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "zstd")
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	enc, _ := zstd.NewWriter(nil)
	if status, body := zstdPost(enc.EncodeAll([]byte(`{"model":"llama3","stream":true}`), nil)); status != 200 || strings.Count(body, "event: delta") != 3 {
		t.Errorf("zstd body: %d %q, want the stream", status, body)
	}
	if status, body := zstdPost([]byte(`{"model":"llama3"}`)); status != 400 || !strings.Contains(body, `"message":"failed to decompress zstd body"`) {
		t.Errorf("a body that is not zstd: %d %s", status, body)
	}
	// A few kilobytes that stand for 17 MiB are refused, not held.
	bomb := enc.EncodeAll([]byte(`{"model":"llama3","input":"`+strings.Repeat("a", 17<<20)+`"}`), nil)
	if status, body := zstdPost(bomb); status != 413 || !strings.Contains(body, "once decompressed") || len(bomb) > 64<<10 {
		t.Errorf("%d bytes of zstd for 17 MiB: %d %s", len(bomb), status, body)
	}

	status, body := post("/v1/messages", `{"model":"llama3","stream":true,"input":"cut"}`)
	if status != 200 || strings.Count(body, "event: delta") != 2 ||
		!strings.HasSuffix(body, "\n\n") || !strings.Contains(body, "event: error\ndata: {\"error\":{\"message\":\"node nodeA failed mid-stream") ||
		!strings.Contains(body, `"type":"api_error"`) || !strings.Contains(body, `"type":"error"`) {
		t.Errorf("cut Anthropic stream: %q", body)
	}
	e.pass() // the cut marked the node unreachable; a passed check brings it back
	status, body = post("/v1/responses", `{"model":"llama3","stream":true,"input":"cut"}`)
	if status != 200 || !strings.Contains(body, "\n\ndata: {\"error\":{") || !strings.Contains(body, "failed mid-stream") {
		t.Errorf("cut Responses stream: %q", body)
	}
	e.pass()

	status, body = post("/v1/messages", `{"model":"nope"}`)
	var anthropic struct {
		Type  string
		Error struct{ Type, Message string }
	}
	if json.Unmarshal([]byte(body), &anthropic); status != 404 || anthropic.Type != "error" || anthropic.Error.Type != "not_found_error" || anthropic.Error.Message == "" {
		t.Errorf("unknown model on /v1/messages: %d %s", status, body)
	}
	if status, body = post("/v1/responses", `{"model":"nope"}`); status != 404 || !strings.Contains(body, `"type":"api_error"`) {
		t.Errorf("unknown model on /v1/responses: %d %s", status, body)
	}
}
