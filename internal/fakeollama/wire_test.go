package fakeollama_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// Raw-HTTP checks of the exact bytes, headers and status codes.

func do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

func TestWireErrorsAndContentTypes(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	const ctJSON = "application/json; charset=utf-8"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		name, method, path, body string
		status                   int
		ct, want                 string
	}{
		{"root", "GET", "/", "", 200, "text/plain; charset=utf-8", "Ollama is running"},
		{"head root", "HEAD", "/", "", 200, "text/plain; charset=utf-8", ""},
		{"version", "GET", "/api/version", "", 200, ctJSON, `{"version":"0.17.4"}`},
		{"unknown route", "GET", "/api/nope", "", 404, "text/plain", "404 page not found"},
		{"wrong method", "GET", "/api/chat", "", 405, "text/plain", "405 method not allowed"},
		{"empty tags", "GET", "/api/tags", "", 200, ctJSON, ""}, // checked below
		{"bad json", "POST", "/api/chat", `{bad`, 400, ctJSON, `{"error":"invalid character 'b' looking for beginning of object key string"}`},
		{"missing body", "POST", "/api/generate", ``, 400, ctJSON, `{"error":"missing request body"}`},
		{"chat empty model", "POST", "/api/chat", `{"model":""}`, 400, ctJSON, `{"error":"model is required"}`},
		{"generate empty model", "POST", "/api/generate", `{"model":"","prompt":"x"}`, 404, ctJSON, `{"error":"model '' not found"}`},
		{"embeddings empty model", "POST", "/api/embeddings", `{"model":""}`, 400, ctJSON, `{"error":"model is required"}`},
		{"show empty model", "POST", "/api/show", `{}`, 400, ctJSON, `{"error":"model is required"}`},
		{"chat unknown", "POST", "/api/chat", `{"model":"nope",` + msgs + `}`, 404, ctJSON, `{"error":"model 'nope' not found"}`},
		{"generate unknown", "POST", "/api/generate", `{"model":"nope","prompt":"x"}`, 404, ctJSON, `{"error":"model 'nope' not found"}`},
		{"show unknown", "POST", "/api/show", `{"model":"nope"}`, 404, ctJSON, `{"error":"model 'nope' not found"}`},
		{"embed unknown", "POST", "/api/embed", `{"model":"nope","input":"x"}`, 404, ctJSON, `{"error":"model \"nope\" not found, try pulling it first"}`},
		{"embeddings unknown", "POST", "/api/embeddings", `{"model":"nope","prompt":"x"}`, 404, ctJSON, `{"error":"model \"nope\" not found, try pulling it first"}`},
		{"embed bad input", "POST", "/api/embed", `{"model":"nomic-embed-text","input":[1]}`, 400, ctJSON, `{"error":"invalid input type"}`},
		{"embed empty input", "POST", "/api/embed", `{"model":"nomic-embed-text","input":[]}`, 200, ctJSON, `{"model":"nomic-embed-text","embeddings":[]}`},
		{"embeddings empty prompt", "POST", "/api/embeddings", `{"model":"nomic-embed-text"}`, 200, ctJSON, `{"embedding":[]}`},
		{"think unsupported", "POST", "/api/chat", `{"model":"llama3","think":true,` + msgs + `}`, 400, ctJSON, `{"error":"\"llama3\" does not support thinking"}`},
		{"generate on embedder", "POST", "/api/generate", `{"model":"nomic-embed-text","prompt":"x"}`, 400, ctJSON, `{"error":"\"nomic-embed-text\" does not support generate"}`},
		{"raw with system", "POST", "/api/generate", `{"model":"llama3","prompt":"x","raw":true,"system":"s"}`, 400, ctJSON, `{"error":"raw mode does not support template, system, or context"}`},
		{"delete unknown", "DELETE", "/api/delete", `{"model":"tiny2"}`, 404, ctJSON, `{"error":"model 'tiny2' not found"}`},
		{"copy unknown", "POST", "/api/copy", `{"source":"nope","destination":"x"}`, 404, ctJSON, `{"error":"model \"nope\" not found"}`},
		{"copy ok", "POST", "/api/copy", `{"source":"llama3","destination":"llama3-copy"}`, 200, "", ""},
		{"delete ok", "DELETE", "/api/delete", `{"name":"llama3-copy"}`, 200, "", ""},
		{"pull invalid", "POST", "/api/pull", `{"model":""}`, 400, ctJSON, `{"error":"invalid model name"}`},
		{"pull no stream", "POST", "/api/pull", `{"model":"phi3","stream":false}`, 200, "application/json", `{"status":"success"}`},
		{"create no stream", "POST", "/api/create", `{"model":"m2","from":"llama3","stream":false}`, 200, "application/json", `{"status":"success"}`},
		{"create nothing", "POST", "/api/create", `{"model":"m3"}`, 400, "application/json", `{"error":"neither 'from' or 'files' was specified"}`},
		{"push no model", "POST", "/api/push", `{}`, 400, ctJSON, `{"error":"model is required"}`},
		{"blob missing", "HEAD", "/api/blobs/sha256:" + strings.Repeat("a", 64), "", 404, ctJSON, ""},
		{"blob bad digest", "HEAD", "/api/blobs/sha256:zz", "", 400, ctJSON, ""},
		{"load", "POST", "/api/generate", `{"model":"llama3"}`, 200, ctJSON, ""},
		{"v1 model unknown", "GET", "/v1/models/nope", "", 404, "application/json", `{"error":{"message":"model 'nope' not found","type":"api_error","param":null,"code":null}}` + "\n"},
		{"v1 bad json", "POST", "/v1/chat/completions", `{bad`, 400, ctJSON, `{"error":{"message":"invalid character 'b' looking for beginning of object key string","type":"invalid_request_error","param":null,"code":null}}`},
		{"v1 no messages", "POST", "/v1/chat/completions", `{"model":"llama3","messages":[]}`, 400, ctJSON, `{"error":{"message":"[] is too short - 'messages'","type":"invalid_request_error","param":null,"code":null}}`},
		{"v1 chat unknown", "POST", "/v1/chat/completions", `{"model":"nope",` + msgs + `}`, 404, "application/json", `{"error":{"message":"model 'nope' not found","type":"api_error","param":null,"code":null}}` + "\n"},
		{"v1 chat empty model", "POST", "/v1/chat/completions", `{"model":"",` + msgs + `}`, 400, "application/json", `{"error":{"message":"model is required","type":"api_error","param":null,"code":null}}` + "\n"},
		{"v1 embed unknown", "POST", "/v1/embeddings", `{"model":"nope","input":"x"}`, 404, "application/json", `{"error":{"message":"model \"nope\" not found, try pulling it first","type":"api_error","param":null,"code":null}}` + "\n"},
		{"v1 embed bad format", "POST", "/v1/embeddings", `{"model":"nomic-embed-text","input":"x","encoding_format":"hex"}`, 400, ctJSON, `{"error":{"message":"Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].","type":"invalid_request_error","param":null,"code":null}}`},
		{"v1 embed no input", "POST", "/v1/embeddings", `{"model":"nomic-embed-text"}`, 400, ctJSON, `{"error":{"message":"invalid input","type":"invalid_request_error","param":null,"code":null}}`},
		{"v1 image no prompt", "POST", "/v1/images/generations", `{"model":"llama3"}`, 400, ctJSON, `{"error":{"message":"prompt is required","type":"invalid_request_error","param":null,"code":null}}`},
		{"v1 image unknown", "POST", "/v1/images/generations", `{"model":"nope","prompt":"a cat"}`, 404, "application/json", `{"error":{"message":"model 'nope' not found","type":"api_error","param":null,"code":null}}` + "\n"},
		{"v1 image edit no image", "POST", "/v1/images/edits", `{"model":"llama3","prompt":"a cat"}`, 400, ctJSON, `{"error":{"message":"image is required","type":"invalid_request_error","param":null,"code":null}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, s.URL()+tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ct {
				t.Errorf("Content-Type %q, want %q", got, tc.ct)
			}
			if tc.want != "" && string(body) != tc.want {
				t.Errorf("body\n got %s\nwant %s", body, tc.want)
			}
		})
	}

	// 405 carries Allow, as gin's HandleMethodNotAllowed does.
	resp, _ := do(t, "POST", s.URL()+"/api/tags", "")
	if resp.Header.Get("Allow") != "HEAD, GET" {
		t.Errorf("Allow = %q", resp.Header.Get("Allow"))
	}
	// HEAD of a missing blob: no body, but the length of the JSON error.
	resp, _ = do(t, "HEAD", s.URL()+"/api/blobs/sha256:"+strings.Repeat("a", 64), "")
	if resp.ContentLength != 102 {
		t.Errorf("HEAD missing blob Content-Length %d, want 102", resp.ContentLength)
	}
	// Empty copy/delete answers have no Content-Type and length 0.
	resp, body := do(t, "POST", s.URL()+"/api/copy", `{"source":"llama3","destination":"again"}`)
	if resp.StatusCode != 200 || resp.ContentLength != 0 || len(body) != 0 || resp.Header.Get("Content-Type") != "" {
		t.Errorf("copy: %d %d %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Type"))
	}
}

func TestWireBusy(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	s.SetBusy(true)
	const busy = `{"error":"server busy, please try again.  maximum pending requests exceeded"}`
	for _, tc := range []struct{ path, body string }{
		{"/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`},
		{"/api/generate", `{"model":"llama3","prompt":"hi","stream":false}`},
		{"/api/embed", `{"model":"nomic-embed-text","input":"hi"}`},
		{"/api/embeddings", `{"model":"nomic-embed-text","prompt":"hi"}`},
	} {
		resp, body := do(t, "POST", s.URL()+tc.path, tc.body)
		if resp.StatusCode != 503 || string(body) != busy || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
		}
	}
	resp, body := do(t, "POST", s.URL()+"/v1/chat/completions", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"message":"server busy, please try again.  maximum pending requests exceeded","type":"api_error"`) {
		t.Errorf("/v1: %d %s", resp.StatusCode, body)
	}
	// Unknown models still get their 404, and non-inference endpoints work.
	if resp, _ := do(t, "POST", s.URL()+"/api/chat", `{"model":"nope"}`); resp.StatusCode != 404 {
		t.Errorf("unknown model while busy: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", s.URL()+"/api/tags", ""); resp.StatusCode != 200 {
		t.Errorf("tags while busy: %d", resp.StatusCode)
	}
	s.SetBusy(false)
	if resp, _ := do(t, "POST", s.URL()+"/api/generate", `{"model":"llama3","prompt":"hi"}`); resp.StatusCode != 200 {
		t.Errorf("after SetBusy(false): %d", resp.StatusCode)
	}
}

func TestWireCheckHost(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{CheckHost: true})
	for host, want := range map[string]int{
		"balancer.example.com": 403,
		"8.8.8.8:11434":        403,
		"balancer.internal":    200,
		"node.local:11434":     200,
		"x.localhost":          200,
		"localhost:11434":      200,
		"10.1.2.3:8080":        200,
		"127.0.0.1":            200,
		"[::1]:11434":          200,
	} {
		resp, body := do(t, "GET", s.URL()+"/api/version", "", "Host", host)
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
		if want == 403 && (len(body) != 0 || resp.ContentLength != 0) {
			t.Errorf("Host %s: 403 with body %q", host, body)
		}
	}
	if _, _, host := s.LastRequest("/api/version"); host == "" {
		t.Error("LastRequest lost the Host")
	}
	// Without CheckHost any Host is fine.
	s2 := fakeollama.Start(t, fakeollama.Options{})
	if resp, _ := do(t, "GET", s2.URL()+"/", "", "Host", "balancer.example.com"); resp.StatusCode != 200 {
		t.Errorf("no CheckHost: %d", resp.StatusCode)
	}
}

// readLines splits an NDJSON body.
func readLines(t *testing.T, body []byte) [][]byte {
	t.Helper()
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	return lines
}

// TestWireNativeLinesMatchOllamaEncoding checks that the hand-built stream
// lines are byte for byte what json.Marshal of the ollama api types gives
// (field order, omitted zero metrics, escaping).
func TestWireNativeLinesMatchOllamaEncoding(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}})

	resp, body := do(t, "POST", s.URL()+"/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`)
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || resp.TransferEncoding == nil {
		t.Fatalf("chat stream headers %v", resp.Header)
	}
	for _, line := range readLines(t, body) {
		var r api.ChatResponse
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(r)
		if !bytes.Equal(line, want) {
			t.Errorf("chat line\n got %s\nwant %s", line, want)
		}
	}

	_, body = do(t, "POST", s.URL()+"/api/generate", `{"model":"llama3","prompt":"one two three"}`)
	lines := readLines(t, body)
	for _, line := range lines {
		var r api.GenerateResponse
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(r)
		if !bytes.Equal(line, want) {
			t.Errorf("generate line\n got %s\nwant %s", line, want)
		}
	}
	if !bytes.Contains(lines[len(lines)-1], []byte(`"done":true,"done_reason":"stop","context":[`)) {
		t.Errorf("final generate line %s", lines[len(lines)-1])
	}

	// Not streamed: one c.JSON object, no trailing newline.
	resp, body = do(t, "POST", s.URL()+"/api/chat", `{"model":"llama3","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
	var r api.ChatResponse
	if err := json.Unmarshal(body, &r); err != nil || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" || bytes.HasSuffix(body, []byte("\n")) {
		t.Fatalf("stream:false: %v %v %q", err, resp.Header, body)
	}
	if want, _ := json.Marshal(r); !bytes.Equal(body, want) {
		t.Errorf("stream:false\n got %s\nwant %s", body, want)
	}

}

func TestWireOpenAISSE(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	resp, body := do(t, "POST", s.URL()+"/v1/chat/completions",
		`{"model":"llama3","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi there"}]}`,
		"Authorization", "Bearer ollama")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	events := strings.Split(string(body), "\n\n")
	if events[len(events)-1] != "" {
		t.Fatalf("body does not end with a blank line: %q", body)
	}
	events = events[:len(events)-1]
	// 5 tokens, the finish chunk, the usage chunk, [DONE].
	if len(events) != 8 || events[7] != "data: [DONE]" {
		t.Fatalf("events %q", events)
	}
	var text strings.Builder
	for i, ev := range events[:7] {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(data, "\n") {
			t.Fatalf("event %d not a single data line: %q", i, ev)
		}
		var c openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		if want, _ := json.Marshal(c); string(want) != data {
			t.Errorf("chunk %d\n got %s\nwant %s", i, data, want)
		}
		if c.Object != "chat.completion.chunk" || c.Model != "llama3" || !strings.HasPrefix(c.Id, "chatcmpl-") || c.SystemFingerprint != "fp_ollama" {
			t.Errorf("chunk %d: %+v", i, c)
		}
		switch {
		case i < 5:
			text.WriteString(c.Choices[0].Delta.Content.(string))
			if c.Choices[0].FinishReason != nil {
				t.Errorf("chunk %d has a finish_reason", i)
			}
		case i == 5:
			if *c.Choices[0].FinishReason != "stop" || c.Choices[0].Delta.Content != "" {
				t.Errorf("finish chunk %s", data)
			}
		case i == 6:
			if len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 5 || c.Usage.PromptTokens != 2 || c.Usage.TotalTokens != 7 {
				t.Errorf("usage chunk %s", data)
			}
		}
	}
	if text.String() != fakeollama.Answer(5) {
		t.Errorf("text %q", text.String())
	}
	if h, _, _ := s.LastRequest("/v1/chat/completions"); h.Get("Authorization") != "Bearer ollama" {
		t.Errorf("Authorization not recorded: %v", h)
	}

	// Without include_usage: no usage chunk.
	_, body = do(t, "POST", s.URL()+"/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if strings.Contains(string(body), `"usage"`) || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("no include_usage: %s", body)
	}

	// Not streamed (the OpenAI default).
	resp, body = do(t, "POST", s.URL()+"/v1/chat/completions", `{"model":"llama3","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
	var cc openai.ChatCompletion
	if err := json.Unmarshal(body, &cc); err != nil || resp.Header.Get("Content-Type") != "application/json" || !bytes.HasSuffix(body, []byte("}\n")) {
		t.Fatalf("non-stream: %v %v %s", err, resp.Header, body)
	}
	if cc.Object != "chat.completion" || cc.Choices[0].Message.Content != fakeollama.Answer(2) || *cc.Choices[0].FinishReason != "length" || cc.Usage.CompletionTokens != 2 {
		t.Errorf("non-stream: %s", body)
	}

	// /v1/completions, streamed: choices come before model, zero usage on
	// every chunk with include_usage.
	_, body = do(t, "POST", s.URL()+"/v1/completions", `{"model":"llama3","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}`)
	events = strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
	if len(events) != 8 || events[7] != "data: [DONE]" {
		t.Fatalf("completion events %q", events)
	}
	for i, ev := range events[:7] {
		data := strings.TrimPrefix(ev, "data: ")
		var c openai.CompletionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		if want, _ := json.Marshal(c); string(want) != data {
			t.Errorf("completion chunk %d\n got %s\nwant %s", i, data, want)
		}
	}
	_, body = do(t, "POST", s.URL()+"/v1/completions", `{"model":"llama3","prompt":"hi"}`)
	var comp openai.Completion
	if err := json.Unmarshal(body, &comp); err != nil || comp.Object != "text_completion" || comp.Choices[0].Text != fakeollama.Answer(5) {
		t.Errorf("completion: %v %s", err, body)
	}
}

func TestWireOpenAIModelsAndEmbeddings(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	_, body := do(t, "GET", s.URL()+"/v1/models", "")
	var list openai.ListCompletion
	if err := json.Unmarshal(body, &list); err != nil || list.Object != "list" || len(list.Data) != 2 || list.Data[0].Id != "llama3:latest" || list.Data[0].OwnedBy != "library" || list.Data[0].Created == 0 {
		t.Fatalf("models: %v %s", err, body)
	}
	resp, body := do(t, "GET", s.URL()+"/v1/models/llama3", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), `{"id":"llama3","object":"model","created":`) {
		t.Fatalf("model: %d %s", resp.StatusCode, body)
	}
	// Empty store: Ollama's "data" is null, not [].
	_, body = do(t, "GET", fakeollama.Start(t, fakeollama.Options{}).URL()+"/v1/models", "")
	if string(body) != `{"object":"list","data":null}`+"\n" {
		t.Errorf("empty models: %s", body)
	}

	for _, format := range []string{"", "float", "base64"} {
		req := `{"model":"nomic-embed-text","input":["alpha","beta"]`
		if format != "" {
			req += `,"encoding_format":"` + format + `"`
		}
		resp, body := do(t, "POST", s.URL()+"/v1/embeddings", req+"}")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", format, resp.StatusCode, body)
		}
		var out struct {
			Object string `json:"object"`
			Model  string `json:"model"`
			Data   []struct {
				Object    string          `json:"object"`
				Embedding json.RawMessage `json:"embedding"`
				Index     int             `json:"index"`
			} `json:"data"`
			Usage openai.EmbeddingUsage `json:"usage"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		if out.Object != "list" || out.Model != "nomic-embed-text" || len(out.Data) != 2 || out.Usage.PromptTokens != 2 {
			t.Fatalf("%s: %s", format, body)
		}
		for i, d := range out.Data {
			var got []float32
			if format == "base64" {
				var b64 string
				if err := json.Unmarshal(d.Embedding, &b64); err != nil {
					t.Fatalf("base64 embedding is not a string: %s", d.Embedding)
				}
				got = decodeBase64Floats(t, b64)
			} else if err := json.Unmarshal(d.Embedding, &got); err != nil {
				t.Fatal(err)
			}
			want := fakeollama.Vector([]string{"alpha", "beta"}[i], 8)
			if d.Index != i || d.Object != "embedding" || len(got) != len(want) {
				t.Fatalf("%s: item %d %+v", format, i, d)
			}
			for j := range want {
				if got[j] != want[j] {
					t.Fatalf("%s: item %d differs: %v vs %v", format, i, got, want)
				}
			}
		}
	}
}
