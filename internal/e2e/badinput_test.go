package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// errorShape names the error body a route speaks.
type errorShape int

const (
	ollamaShape    errorShape = iota // {"error":"…"}
	openAIShape                      // {"error":{"message":"…",…}}
	anthropicShape                   // {"type":"error","error":{"type":"…","message":"…"}}
)

// checkErrorShape fails unless body is a JSON error in shape with a
// non-empty message, and returns the message.
func checkErrorShape(t *testing.T, what string, hdr http.Header, body []byte, shape errorShape) string {
	t.Helper()
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q; want application/json", what, ct)
	}
	if !utf8.Valid(body) {
		t.Errorf("%s: the error body is not valid UTF-8: %q", what, body)
	}
	switch shape {
	case openAIShape:
		var v struct {
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.Error == nil || v.Error.Message == "" {
			t.Errorf("%s: want OpenAI's {\"error\":{\"message\":…}}, got %s", what, body)
			return ""
		}
		return v.Error.Message
	case anthropicShape:
		var v struct {
			Type  string `json:"type"`
			Error *struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.Type != "error" || v.Error == nil || v.Error.Type == "" || v.Error.Message == "" {
			t.Errorf("%s: want Anthropic's {\"type\":\"error\",\"error\":{…}}, got %s", what, body)
			return ""
		}
		return v.Error.Message
	default:
		var v struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.Error == "" {
			t.Errorf("%s: want Ollama's {\"error\":\"…\"}, got %s", what, body)
			return ""
		}
		return v.Error
	}
}

// TestBadInput sends malformed, oversized, slow and nonsensical requests to
// the real binary: each gets a clear error in its route's shape, and the
// process keeps serving and never panics.
func TestBadInput(t *testing.T) {
	fakes := startFakes(t, 1, fakeollama.Options{})
	s := startServe(t, serveOpts{nodes: fakes, args: []string{"--max-body-bytes", "1024", "--read-header-timeout", "1s"}})
	big := `{"model":"llama3","messages":[{"role":"user","content":"` + strings.Repeat("x", 4096) + `"}]}`

	cases := []struct {
		name, method, path, body string
		chunked                  bool // send without Content-Length
		status                   int  // 0: any 4xx
		shape                    errorShape
		allow                    string // for 405: a method Allow must list
	}{
		{name: "truncated JSON", method: "POST", path: "/api/chat", body: `{"model":`, status: 400},
		{name: "not JSON", method: "POST", path: "/api/generate", body: `model=llama3`, status: 400},
		{name: "empty body", method: "POST", path: "/api/chat", body: ``, status: 400},
		{name: "JSON array", method: "POST", path: "/api/embed", body: `[{"model":"llama3"}]`, status: 400},
		{name: "JSON null", method: "POST", path: "/api/chat", body: `null`, status: 400},
		{name: "model is a number", method: "POST", path: "/api/chat", body: `{"model":123}`, status: 400},
		{name: "model is a list", method: "POST", path: "/api/show", body: `{"model":["llama3"]}`, status: 400},
		{name: "model is null", method: "POST", path: "/api/generate", body: `{"model":null,"prompt":"hi"}`, status: 400},
		{name: "messages of the wrong type", method: "POST", path: "/api/chat", body: `{"model":"llama3","messages":"hello"}`, status: 400},
		{name: "v1 truncated JSON", method: "POST", path: "/v1/chat/completions", body: `{"model":`, status: 400, shape: openAIShape},
		{name: "v1 model is an object", method: "POST", path: "/v1/chat/completions", body: `{"model":{}}`, status: 400, shape: openAIShape},
		{name: "v1 body is a string", method: "POST", path: "/v1/embeddings", body: `"llama3"`, status: 400, shape: openAIShape},
		{name: "v1 messages of the wrong type", method: "POST", path: "/v1/chat/completions", body: `{"model":"llama3","messages":{"role":"user"}}`, status: 400, shape: openAIShape},
		{name: "huge body", method: "POST", path: "/api/chat", body: big, status: 413},
		{name: "huge body, chunked", method: "POST", path: "/api/chat", body: big, chunked: true, status: 413},
		{name: "v1 huge body", method: "POST", path: "/v1/chat/completions", body: big, status: 413, shape: openAIShape},
		{name: "v1 huge body, chunked", method: "POST", path: "/v1/completions", body: big, chunked: true, status: 413, shape: openAIShape},
		{name: "non-UTF-8 model name", method: "POST", path: "/api/chat", body: "{\"model\":\"\xff\xfe\xfd\",\"messages\":[]}", status: 404},
		{name: "v1 non-UTF-8 model name", method: "POST", path: "/v1/chat/completions", body: "{\"model\":\"ll\xc3\x28ama\"}", status: 404, shape: openAIShape},
		{name: "unknown /api route", method: "GET", path: "/api/nonexistent", status: 404},
		{name: "unknown /v1 route", method: "POST", path: "/v1/nonexistent", body: `{}`, status: 404, shape: openAIShape},
		{name: "non-UTF-8 path", method: "GET", path: "/api/%ff%fe", status: 404},
		{name: "wrong method on /api/chat", method: "GET", path: "/api/chat", status: 405, allow: "POST"},
		{name: "wrong method on /api/tags", method: "DELETE", path: "/api/tags", status: 405, allow: "GET"},
		{name: "wrong method on /v1/chat/completions", method: "PUT", path: "/v1/chat/completions", body: `{}`, status: 405, shape: openAIShape, allow: "POST"},
		{name: "wrong method on /v1/models", method: "POST", path: "/v1/models", body: `{}`, status: 405, shape: openAIShape, allow: "GET"},
		{name: "wrong method on /v1/messages", method: "GET", path: "/v1/messages", status: 405, shape: anthropicShape, allow: "POST"},
		{name: "unknown route under /v1/messages", method: "POST", path: "/v1/messages/batches", body: `{}`, status: 404, shape: anthropicShape},
		{name: "anthropic truncated JSON", method: "POST", path: "/v1/messages", body: `{"model":`, status: 400, shape: anthropicShape},
		{name: "anthropic huge body", method: "POST", path: "/v1/messages", body: big, status: 413, shape: anthropicShape},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // hides the length: chunked
				}
			}
			req, err := http.NewRequest(tc.method, s.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.status != 0 && resp.StatusCode != tc.status {
				t.Errorf("%s %s: status %d; want %d (body %s)", tc.method, tc.path, resp.StatusCode, tc.status, got)
			}
			msg := checkErrorShape(t, tc.method+" "+tc.path, resp.Header, got, tc.shape)
			if tc.allow != "" && !strings.Contains(resp.Header.Get("Allow"), tc.allow) {
				t.Errorf("%s %s: Allow %q; want it to list %s", tc.method, tc.path, resp.Header.Get("Allow"), tc.allow)
			}
			t.Logf("%d %s", resp.StatusCode, msg)
		})
	}

	t.Run("non-UTF-8 message content", func(t *testing.T) {
		body := "{\"model\":\"llama3\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc0\xaf\"}]}"
		resp, err := client.Post(s.URL+"/api/chat", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The node decides about the content; whatever it says arrives as
		// valid JSON, and the proxy does not fail.
		if resp.StatusCode >= 500 || !json.Valid(got) {
			t.Errorf("non-UTF-8 content: %s %s", resp.Status, got)
		}
		t.Logf("%s %s", resp.Status, bytes.TrimSpace(got))
	})

	for _, tc := range []struct {
		name, path string
		fillers    int // 2 KiB headers
		shape      errorShape
		plain      bool // past what net/http reads: its own plain-text 431
	}{
		{"huge headers", "/api/chat", 40, ollamaShape, false},
		{"huge headers on /v1", "/v1/chat/completions", 40, openAIShape, false},
		// Past four times the cap net/http stops reading and answers by
		// itself, before any handler; the connection closes.
		{"headers beyond what the server reads", "/api/chat", 200, ollamaShape, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", s.URL+tc.path, strings.NewReader(`{"model":"llama3"}`))
			for i := range tc.fillers {
				req.Header.Set(fmt.Sprintf("X-Filler-%d", i), strings.Repeat("h", 2048))
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("%d KiB of headers: %s %q; want 431", 2*tc.fillers, resp.Status, got)
			}
			if !tc.plain {
				if msg := checkErrorShape(t, tc.name, resp.Header, got, tc.shape); !strings.Contains(msg, "65536") {
					t.Errorf("%s: message %q does not name the limit", tc.name, msg)
				}
			}
			t.Logf("%s %s", resp.Status, bytes.TrimSpace(got))
		})
	}

	t.Run("slow-loris headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			_, _ = io.Copy(io.Discard, conn) // returns when the server closes
			closed <- time.Since(start)
		}()
		if _, err := io.WriteString(conn, "POST /api/chat HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		// Trickle a header line every 200 ms, and check that others are
		// served meanwhile.
		var took time.Duration
		served := false
	trickle:
		for i := 0; ; i++ {
			select {
			case took = <-closed:
				break trickle
			case <-time.After(200 * time.Millisecond):
			}
			if i == 2 {
				r := chat(t.Context(), nil, s.URL)
				if !r.ok() {
					t.Errorf("a normal request during the slow-loris: %v", r)
				}
				served = true
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("the slow-loris connection is still open after 5 s; --read-header-timeout is 1s")
			}
			_, _ = fmt.Fprintf(conn, "X-Slow-%d: a\r\n", i)
		}
		if took < 900*time.Millisecond || took > 2500*time.Millisecond {
			t.Errorf("slow-loris connection closed after %s; want about the 1 s read-header timeout", took)
		}
		if !served {
			t.Error("no normal request was sent during the slow-loris")
		}
		t.Logf("slow-loris connection closed after %s", took.Round(10*time.Millisecond))
	})

	t.Run("garbage request line", func(t *testing.T) {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte("\xff\xfe GARBAGE \x00\r\n\r\n"))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 400") {
			t.Errorf("garbage request line: got %q; want a 400", line)
		}
	})

	// Still serving, and nothing panicked.
	if r := chat(t.Context(), nil, s.URL); !r.ok() {
		t.Errorf("a normal request after the bad input: %v", r)
	}
	if out := s.Output(); strings.Contains(out, "panic") {
		t.Errorf("the server's output mentions a panic:\n%s", tail(out, 40))
	}
}
