package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
	"github.com/aivonx/aivonx/worker"
)

// staticStore is a FleetStore fake: nodes and settings held in memory.
type staticStore struct {
	mu       sync.Mutex
	nodes    []fleet.Node
	settings fleet.Settings
}

func (s *staticStore) Nodes(context.Context) ([]fleet.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fleet.Node(nil), s.nodes...), nil
}

func (s *staticStore) Settings(context.Context) (fleet.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings, nil
}

// testEnv is the proxy in front of fake nodes, with the real worker and
// in-memory adapters of the embedded mode.
type testEnv struct {
	t        *testing.T
	h        *app.Handler
	proxy    *httptest.Server
	store    *staticStore
	board    *memory.StatusBoard
	inflight *memory.InFlight
	worker   *worker.Worker
	logs     *testenv.Buffer
}

// node is a node the proxy can reach: a fake Ollama, or a server that
// fronts one.
type node interface{ URL() string }

// urlOf is a node at a URL.
type urlOf string

func (u urlOf) URL() string { return string(u) }

func newEnv(t *testing.T, cfg app.Config, nodes ...node) *testEnv {
	t.Helper()
	e := &testEnv{t: t, store: &staticStore{settings: fleet.DefaultSettings()}, board: memory.NewStatusBoard(),
		inflight: memory.NewInFlight(), logs: &testenv.Buffer{}}
	for i, n := range nodes {
		e.store.nodes = append(e.store.nodes, fleet.Node{ID: int64(i + 1), Name: "node" + string(rune('A'+i)), BaseURL: n.URL(), Enabled: true})
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	e.worker, err = worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, e.store, e.board, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	e.pass()
	cfg.RefreshEvery = refreshEvery
	h, err := app.New(cfg, app.Deps{Fleet: e.store, Statuses: e.board, InFlight: e.inflight, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	e.proxy = httptest.NewServer(h)
	t.Cleanup(e.proxy.Close)
	return e
}

// pass runs a health pass and waits until the handler's cached view is
// old enough to be re-read inline by the next request.
func (e *testEnv) pass() {
	e.t.Helper()
	if err := e.worker.RunOnce(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(3 * refreshEvery)
}

// settle waits until the next request re-reads the store.
func (e *testEnv) settle() { time.Sleep(3 * refreshEvery) }

const refreshEvery = time.Millisecond

func (e *testEnv) post(path, body string) *http.Response {
	e.t.Helper()
	resp, err := testClient.Post(e.proxy.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *testEnv) inFlight() int {
	counts, _ := e.inflight.Counts(context.Background(), []int64{1, 2, 3})
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// testClient bounds every request, so a proxy bug fails a test instead of
// hanging it.
var testClient = &http.Client{Timeout: 20 * time.Second}

var chat = `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`

func TestStreamReachesClientBeforeNextToken(t *testing.T) {
	gate := make(chan struct{})
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 3, Gate: gate})
	e := newEnv(t, app.Config{}, node)

	// Like Ollama, the node sends its headers with the first token.
	go func() { gate <- struct{}{} }()
	resp := e.post("/api/chat", chat) // stream omitted: streamed, as Ollama does
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		t.Fatalf("Content-Type = %q", ct)
	}
	lines := bufio.NewReader(resp.Body)
	for i := range 3 {
		if i > 0 {
			gate <- struct{}{} // let the node produce token i, and only it
		}
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		// The node cannot produce token i+1 until the next send on gate, so
		// receiving this line proves the proxy did not hold it back.
		var chunk struct {
			Message struct{ Content string }
			Done    bool
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil || chunk.Done || chunk.Message.Content == "" {
			t.Fatalf("token %d: line %q (%v)", i, line, err)
		}
	}
	last, _ := io.ReadAll(lines)
	if !strings.Contains(string(last), `"done":true`) {
		t.Fatalf("final line = %q", last)
	}
	if got := resp.Header.Get("X-Aivonx-Node"); got != "nodeA" {
		t.Fatalf("X-Aivonx-Node = %q", got)
	}
	waitFor(t, "in-flight count back to zero", func() bool { return e.inFlight() == 0 })
}

func TestFailoverBeforeFirstByte(t *testing.T) {
	t.Run("Refused", func(t *testing.T) {
		a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		e := newEnv(t, app.Config{}, a, b)
		a.Stop() // dead, but the last health pass said healthy
		for range 10 {
			resp := e.post("/api/chat", chat)
			body := readAll(t, resp)
			if resp.StatusCode != 200 || !strings.Contains(body, `"done":true`) {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Aivonx-Node"); got != "nodeB" {
				t.Fatalf("served by %q, want nodeB", got)
			}
		}
		// The failed connection marked A unreachable at once: one request
		// paid for the discovery, the others went straight to B.
		if !strings.Contains(e.logs.String(), `"msg":"node unreachable"`) {
			t.Fatal("no passive-check log line")
		}
		if strings.Count(e.logs.String(), `"msg":"node unreachable"`) != 1 {
			t.Fatalf("node marked unreachable more than once:\n%s", e.logs.String())
		}
	})
	t.Run("Busy", func(t *testing.T) {
		a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		e := newEnv(t, app.Config{}, a, b)
		a.SetBusy(true)
		for range 10 {
			resp := e.post("/api/chat", chat)
			if body := readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Aivonx-Node") != "nodeB" {
				t.Fatalf("status %d node %q body %q", resp.StatusCode, resp.Header.Get("X-Aivonx-Node"), body)
			}
		}
		// Busy is not down: A was tried again (least-active ties are random),
		// and it was never marked unreachable.
		if a.Requests("/api/chat") < 2 {
			t.Fatalf("busy node tried %d times; it must stay a candidate", a.Requests("/api/chat"))
		}
		if strings.Contains(e.logs.String(), "node unreachable") {
			t.Fatal("a busy node was marked unreachable")
		}
	})
	t.Run("BusyEverywherePassesThe503", func(t *testing.T) {
		a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		e := newEnv(t, app.Config{}, a)
		a.SetBusy(true)
		resp := e.post("/api/chat", chat)
		if body := readAll(t, resp); resp.StatusCode != 503 || !strings.Contains(body, "server busy") {
			t.Fatalf("status %d body %q; want the node's own 503", resp.StatusCode, body)
		}
	})
	t.Run("AllRefused", func(t *testing.T) {
		a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		e := newEnv(t, app.Config{}, a)
		a.Stop()
		resp := e.post("/api/chat", chat)
		body := readAll(t, resp)
		if resp.StatusCode != 502 || !strings.Contains(body, `"error":`) {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if e.inFlight() != 0 {
			t.Fatal("in-flight count leaked")
		}
	})
}

// A node that restarted has closed the proxy's pooled connection to it:
// the request is sent again on a new connection, with its whole body, and
// the client never hears of it.
func TestDeadPooledConnectionReplaysTheBody(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newEnv(t, app.Config{}, node)
	for i := range 3 {
		if resp := e.post("/api/chat", chat); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		} else {
			readAll(t, resp)
		}
		node.Stop()
		if err := node.Restart(); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"model":"llama3","messages":[{"role":"user","content":"again %d"}],"stream":false}`, i)
		resp := e.post("/api/chat", body)
		if got := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"done":true`) {
			t.Fatalf("after the node restarted: status %d body %q", resp.StatusCode, got)
		}
		if _, got, _ := node.LastRequest("/api/chat"); string(got) != body {
			t.Fatalf("node got body %q, want %q", got, body)
		}
	}
}

func TestMidStreamFailureIsVisibleAndNeverRetried(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5})
	e := newEnv(t, app.Config{}, a, b)
	a.SetDropAfter(2)
	b.SetDropAfter(2)

	resp := e.post("/api/chat", chat)
	body := readAll(t, resp)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if resp.StatusCode != 200 || len(lines) != 3 {
		t.Fatalf("status %d, %d lines: %q", resp.StatusCode, len(lines), body)
	}
	var last struct{ Error string }
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil || !strings.Contains(last.Error, "failed mid-stream") {
		t.Fatalf("last line %q: want an error line", lines[2])
	}
	if got := a.Requests("/api/chat") + b.Requests("/api/chat"); got != 1 {
		t.Fatalf("%d node requests; a stream that started must never be retried", got)
	}
	waitFor(t, "in-flight zero", func() bool { return e.inFlight() == 0 })

	t.Run("SSE", func(t *testing.T) {
		resp := e.post("/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		body := readAll(t, resp)
		if !strings.Contains(body, `data: {"error":{`) || strings.Contains(body, "[DONE]") {
			t.Fatalf("SSE body %q: want a final error event and no [DONE]", body)
		}
	})
}

func TestClientCancellationReachesNode(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 1000, TokenDelay: 5 * time.Millisecond})
	e := newEnv(t, app.Config{}, node)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.proxy.URL+"/api/generate", strings.NewReader(`{"model":"llama3","prompt":"hi"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the node to stop generating", func() bool { return node.Cancelled() == 1 && node.Active() == 0 })
	waitFor(t, "in-flight zero", func() bool { return e.inFlight() == 0 })
}

func TestErrors(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newEnv(t, app.Config{MaxBodyBytes: 1 << 10}, node)
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantBody         string
	}{
		{"UnknownModel", "/api/chat", `{"model":"nope"}`, 404, `{"error":"model 'nope' not found"}`},
		{"UnknownModelOpenAI", "/v1/chat/completions", `{"model":"nope"}`, 404, `{"error":{"code":null,"message":"model 'nope' not found","param":null,"type":"api_error"}}`},
		{"BadJSON", "/api/generate", `{"model":`, 400, `{"error":"invalid JSON: unexpected end of JSON input"}`},
		{"BadJSONOpenAI", "/v1/embeddings", `{`, 400, `"type":"invalid_request_error"`},
		{"WrongType", "/api/chat", `{"model":42}`, 400, `{"error":"model must be a string"}`},
		{"WrongTypeName", "/api/show", `{"name":["llama3"]}`, 400, `{"error":"name must be a string"}`},
		{"NotAnObject", "/api/chat", `[1]`, 400, `{"error":"must be a JSON object"}`},
		{"NoModel", "/api/embed", `{"input":"x"}`, 400, `{"error":"model is required"}`},
		{"Empty", "/api/chat", ``, 400, `{"error":"missing request body"}`},
		{"TooLarge", "/api/chat", `{"model":"llama3","prompt":"` + strings.Repeat("x", 2<<10) + `"}`, 413, `larger than 1024 bytes`},
		{"UnknownRoute", "/api/nope", `{}`, 404, `{"error":"no route for POST /api/nope"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.post(tt.path, tt.body)
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("%s → %d %s; want %d containing %s", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	t.Run("TrailingSlashRedirects", func(t *testing.T) {
		// As Ollama's router: 307 keeps a POST's body, 301 for a GET.
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, tt := range []struct {
			method, path string
			want         int
		}{{"POST", "/api/chat/", 307}, {"GET", "/api/tags/?x=1", 301}, {"POST", "/v1/chat/completions/", 307}, {"POST", "/api/nope/", 404}} {
			req, _ := http.NewRequest(tt.method, e.proxy.URL+tt.path, strings.NewReader(chat))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			if loc := resp.Header.Get("Location"); resp.StatusCode != tt.want || tt.want != 404 && !strings.HasPrefix(loc, strings.TrimSuffix(strings.Split(tt.path, "?")[0], "/")) {
				t.Errorf("%s %s: %d Location %q, want %d", tt.method, tt.path, resp.StatusCode, loc, tt.want)
			}
		}
		// A client that follows it gets its answer.
		if resp := e.post("/api/chat/", chat); readAll(t, resp) == "" || resp.StatusCode != 200 {
			t.Errorf("POST /api/chat/ followed: %d", resp.StatusCode)
		}
	})
	t.Run("MethodNotAllowed", func(t *testing.T) {
		resp, err := http.Get(e.proxy.URL + "/api/chat")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || !strings.Contains(body, `"error"`) {
			t.Fatalf("GET /api/chat → %d Allow=%q %s", resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	})
	t.Run("NoHealthyNode", func(t *testing.T) {
		node.Stop()
		e.pass()
		resp := e.post("/api/chat", chat)
		if body := readAll(t, resp); resp.StatusCode != 503 || body != `{"error":"no healthy nodes available"}`+"\n" {
			t.Fatalf("→ %d %q", resp.StatusCode, body)
		}
		resp, _ = http.Head(e.proxy.URL + "/")
		if resp.StatusCode != 503 {
			t.Fatalf("HEAD / → %d with no healthy node", resp.StatusCode)
		}
	})
}

// TestFirstByteTimeout: a stream's head comes with its first token, so a
// node that sends nothing for the first-byte timeout is given up (504). An
// answer that comes whole (stream false, OpenAI's default) is only sent
// once it is done, however long that takes: no such bound.
func TestFirstByteTimeout(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 3, TokenDelay: 150 * time.Millisecond})
	e := newEnv(t, app.Config{FirstByteTimeout: 100 * time.Millisecond}, node)
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	for _, tt := range []struct {
		path, body string
		want       int
	}{
		{"/api/chat", `{"model":"llama3",` + msgs + `}`, 504},
		{"/v1/chat/completions", `{"model":"llama3","stream":true,` + msgs + `}`, 504},
		{"/api/chat", `{"model":"llama3","stream":false,` + msgs + `}`, 200},
		{"/v1/chat/completions", `{"model":"llama3",` + msgs + `}`, 200},
		{"/api/generate", `{"model":"llama3","prompt":"hi","Stream":false}`, 200},
	} {
		resp := e.post(tt.path, tt.body)
		if body := readAll(t, resp); resp.StatusCode != tt.want {
			t.Errorf("%s %s: %d %s, want %d", tt.path, tt.body, resp.StatusCode, body, tt.want)
		}
	}
}

// TestLoadAndUnload: a request without prompt or messages only loads the
// model, or with keep_alive 0 unloads it (what `ollama stop` sends). A
// load goes where the model is in memory already; an unload frees it on
// every node that has it, not on a random one.
func TestLoadAndUnload(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Loaded: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Loaded: []string{"llama3:latest"}})
	c := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newEnv(t, app.Config{}, a, b, c)

	for _, body := range []string{`{"model":"llama3"}`, `{"model":"llama3","prompt":""}`} {
		for range 6 {
			resp := e.post("/api/generate", body)
			if got := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"done_reason":"load"`) {
				t.Fatalf("load: %d %s", resp.StatusCode, got)
			}
		}
	}
	if n := c.Requests("/api/generate"); n != 0 {
		t.Fatalf("%d loads went to the node without the model in memory", n)
	}

	a.ResetStats()
	b.ResetStats()
	for _, keep := range []string{`0`, `"0s"`, `"0"`} {
		resp := e.post("/api/chat", `{"model":"llama3","messages":[],"keep_alive":`+keep+`}`)
		if got := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"done_reason":"unload"`) {
			t.Fatalf("unload %s: %d %s", keep, resp.StatusCode, got)
		}
	}
	if na, nb, nc := a.Requests("/api/chat"), b.Requests("/api/chat"), c.Requests("/api/chat"); na != 3 || nb != 3 || nc != 0 {
		t.Fatalf("unloads reached %d, %d and %d nodes' chat; want 3 on each node that has it, 0 elsewhere", na, nb, nc)
	}

	// With a prompt it is an ordinary request, spread as usual.
	for range 30 {
		readAll(t, e.post("/api/generate", `{"model":"llama3","prompt":"hi","stream":false}`))
	}
	if c.Requests("/api/generate") == 0 {
		t.Fatal("no ordinary request reached the node without the model loaded")
	}
}

// TestModelNameForms: the spellings Ollama's name parser accepts for one
// model reach the node that has it.
func TestModelNameForms(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newEnv(t, app.Config{}, node)
	for _, name := range []string{"llama3", "LLAMA3:Latest", "library/llama3", "registry.ollama.ai/library/llama3:latest"} {
		resp := e.post("/api/chat", `{"model":"`+name+`","stream":false}`)
		if body := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"model":"`+name+`"`) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
}

func TestHeadersToAndFromNode(t *testing.T) {
	// CheckHost: a loopback Ollama rejects a foreign Host with 403.
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, CheckHost: true})
	e := newEnv(t, app.Config{}, node)
	req, _ := http.NewRequest("POST", e.proxy.URL+"/api/chat", strings.NewReader(`{"model":"llama3","stream":false}`))
	req.Host = "balancer.example.com"
	req.Header.Set("Authorization", "Bearer client-secret")
	req.Header.Set("Cookie", "session=abc")
	req.Header.Set("X-Api-Key", "k")
	req.Header.Set("User-Agent", "ollama-js/0.6.4")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "drop me")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d %q: the node's Host check failed", resp.StatusCode, body)
	}
	got, _, host := node.LastRequest("/api/chat")
	for _, h := range []string{"Authorization", "Cookie", "X-Api-Key", "X-Hop"} {
		if got.Get(h) != "" {
			t.Errorf("%s forwarded to the node", h)
		}
	}
	if got.Get("User-Agent") != "ollama-js/0.6.4" || got.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("headers at node: %v", got)
	}
	if strings.Contains(host, "example.com") {
		t.Errorf("Host %q forwarded", host)
	}
	if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("X-Aivonx-Version") == "" {
		t.Errorf("missing proxy headers: %v", resp.Header)
	}
}

// TestBrowserThroughProxy: the proxy is the CORS boundary. A real Ollama
// answers 403 to an Origin it does not know, so the browser's Origin must
// not reach the node.
func TestBrowserThroughProxy(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, CheckOrigin: true})
	// In front of the node, what nginx with gzip on would add.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Encoding")
		node.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	e := newEnv(t, app.Config{Auth: app.AuthConfig{CORSOrigins: []string{"https://chat.example.com"}}}, urlOf(front.URL))
	for _, origin := range []string{"https://chat.example.com", "http://localhost:3000"} {
		req, _ := http.NewRequest("POST", e.proxy.URL+"/api/chat", strings.NewReader(`{"model":"llama3","stream":false}`))
		req.Header.Set("Origin", origin)
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("%s: %d %v %q", origin, resp.StatusCode, resp.Header, body)
		}
		if vary := strings.Join(resp.Header.Values("Vary"), ","); !strings.Contains(vary, "Origin") || !strings.Contains(vary, "Accept-Encoding") {
			t.Fatalf("Vary %q: want the proxy's Origin and the node's Accept-Encoding", vary)
		}
		if got, _, _ := node.LastRequest("/api/chat"); got.Get("Origin") != "" {
			t.Fatalf("Origin %q reached the node", got.Get("Origin"))
		}
	}
	// The fake is faithful: the same request straight to it is refused.
	req, _ := http.NewRequest("POST", node.URL()+"/api/chat", strings.NewReader(`{"model":"llama3","stream":false}`))
	req.Header.Set("Origin", "https://chat.example.com")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the fake node answered a foreign origin with %d, want 403", resp.StatusCode)
	}
}

func TestFleetViews(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest", "shared:latest"}, Loaded: []string{"llama3:latest"}, Version: "0.17.4"})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"qwen:7b", "shared:latest"}, Version: "0.9.1"})
	down := fakeollama.Start(t, fakeollama.Options{Models: []string{"onlyhere:latest"}})
	e := newEnv(t, app.Config{}, a, b, down)
	down.Stop()
	e.pass()

	get := func(path string, into any) {
		t.Helper()
		resp, err := http.Get(e.proxy.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s → %d %s", path, resp.StatusCode, body)
		}
		if err := json.Unmarshal([]byte(body), into); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	var tags struct {
		Models []struct{ Name, Digest string }
	}
	get("/api/tags", &tags)
	var names []string
	for _, m := range tags.Models {
		names = append(names, m.Name)
		if m.Digest == "" {
			t.Errorf("%s lost the node's fields", m.Name)
		}
	}
	// Newest first, as Ollama lists them: each fake's models are an hour
	// old, a minute apart in the order given, and b started after a.
	if strings.Join(names, ",") != "qwen:7b,llama3:latest,shared:latest" {
		t.Fatalf("tags = %v (a down node's models must not be listed; duplicates merged; newest first)", names)
	}
	var ps struct{ Models []struct{ Name string } }
	get("/api/ps", &ps)
	if len(ps.Models) != 1 || ps.Models[0].Name != "llama3:latest" {
		t.Fatalf("ps = %+v", ps)
	}
	var version struct{ Version string }
	get("/api/version", &version)
	if version.Version != "0.9.1" {
		t.Fatalf("version = %q, want the lowest", version.Version)
	}
	var models struct {
		Object string
		Data   []struct{ ID, Object, OwnedBy string }
	}
	get("/v1/models", &models)
	if models.Object != "list" || len(models.Data) != 3 || models.Data[0].ID != "qwen:7b" {
		t.Fatalf("/v1/models = %+v", models)
	}
	var one struct{ ID string }
	get("/v1/models/llama3", &one)
	if one.ID != "llama3" {
		t.Fatalf("/v1/models/llama3 id = %q, want the name as requested", one.ID)
	}
	var state struct {
		Nodes []struct {
			Name      string
			Status    string
			LatencyMS *float64 `json:"latency_ms"`
			Reason    string
		}
	}
	get("/api/proxy/state", &state)
	if len(state.Nodes) != 3 || state.Nodes[2].Status != "standby" || state.Nodes[2].LatencyMS != nil || state.Nodes[2].Reason == "" {
		t.Fatalf("state = %+v", state)
	}
	var active struct {
		Nodes []struct{ ID int64 }
		Total int `json:"total_active_requests"`
	}
	get("/api/proxy/active-requests?node_id=2", &active)
	if len(active.Nodes) != 1 || active.Nodes[0].ID != 2 {
		t.Fatalf("active-requests = %+v", active)
	}
	for path, want := range map[string]int{"/api/proxy/active-requests?node_id=x": 400, "/api/proxy/active-requests?node_id=99": 404, "/v1/models/nope": 404} {
		resp, _ := http.Get(e.proxy.URL + path)
		if readAll(t, resp); resp.StatusCode != want {
			t.Errorf("GET %s → %d, want %d", path, resp.StatusCode, want)
		}
	}
	var health struct {
		Status string
		Nodes  struct{ Total, Healthy int }
	}
	get("/api/health", &health)
	if health.Status != "ok" || health.Nodes.Total != 3 || health.Nodes.Healthy != 2 {
		t.Fatalf("health = %+v", health)
	}
	// No node left to route to: still 200 (the proxy is up), but a monitor
	// reading the status sees the outage.
	a.Close()
	b.Close()
	e.pass()
	e.settle()
	get("/api/health", &health)
	if health.Status != "degraded" || health.Nodes.Healthy != 0 {
		t.Fatalf("health with every node down = %+v", health)
	}
}

func TestRoutingSpreadsAndDrains(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newEnv(t, app.Config{}, a, b)
	for range 40 {
		readAll(t, e.post("/api/chat", `{"model":"llama3","stream":false}`))
	}
	if a.Requests("/api/chat") < 5 || b.Requests("/api/chat") < 5 {
		t.Fatalf("sequential requests: A=%d B=%d; ties must not always pick one node", a.Requests("/api/chat"), b.Requests("/api/chat"))
	}
	// Disabling is the admin's drain switch; it applies without a worker pass.
	e.store.mu.Lock()
	e.store.nodes[0].Enabled = false
	e.store.mu.Unlock()
	e.settle()
	before := a.Requests("/api/chat")
	for range 10 {
		readAll(t, e.post("/api/chat", `{"model":"llama3","stream":false}`))
	}
	if a.Requests("/api/chat") != before {
		t.Fatal("a disabled node still got requests")
	}
}

// lowestLatencyEnv is a proxy routing by lowest latency in front of a fast
// node (started with fastOpts) and a slow one.
func lowestLatencyEnv(t *testing.T, fastOpts fakeollama.Options) (e *testEnv, fast, slow *fakeollama.Server) {
	fastOpts.Models = []string{"llama3:latest"}
	fast = fakeollama.Start(t, fastOpts)
	slow = fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	slow.SetLivenessDelay(50 * time.Millisecond)
	e = newEnv(t, app.Config{}, fast, slow)
	e.store.mu.Lock()
	e.store.settings.Strategy = fleet.LowestLatency
	e.store.mu.Unlock()
	e.settle()
	return e, fast, slow
}

func TestLowestLatencyAvoidsSlowNode(t *testing.T) {
	e, _, slow := lowestLatencyEnv(t, fakeollama.Options{})
	for range 20 {
		readAll(t, e.post("/api/chat", `{"model":"llama3","stream":false}`))
	}
	if slow.Requests("/api/chat") > 0 {
		t.Fatalf("slow node got %d requests under lowest_latency", slow.Requests("/api/chat"))
	}
}

// TestPreferredNodesFallBack: the nodes a strategy or a load prefers come
// first, not alone: when they are busy or down the request goes to the
// others rather than failing.
func TestPreferredNodesFallBack(t *testing.T) {
	e, fast, slow := lowestLatencyEnv(t, fakeollama.Options{Loaded: []string{"llama3:latest"}})
	fast.SetBusy(true)
	for _, body := range []string{
		`{"model":"llama3","prompt":"hi","stream":false}`, // lowest_latency prefers fast
		`{"model":"llama3"}`,                              // a load prefers fast, where it is loaded
	} {
		resp := e.post("/api/generate", body)
		if got := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("%s with the preferred node busy: %d %s", body, resp.StatusCode, got)
		}
	}
	if n := slow.Requests("/api/generate"); n != 2 {
		t.Fatalf("the other node served %d requests; want 2", n)
	}
	// An unload goes only where the model is loaded.
	resp := e.post("/api/generate", `{"model":"llama3","keep_alive":0}`)
	if readAll(t, resp); slow.Requests("/api/generate") != 2 || fast.Requests("/api/generate") == 0 {
		t.Fatalf("unload: %d, requests %d on the node without the model, %d on the one with it", resp.StatusCode, slow.Requests("/api/generate"), fast.Requests("/api/generate"))
	}
}

func TestSSEWithoutDoneEndsWithError(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5})
	e := newEnv(t, app.Config{}, node)
	node.SetErrorAfter(2) // Ollama's runner crash on /v1: an empty chunk, no [DONE]
	resp := e.post("/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	body := readAll(t, resp)
	if !strings.HasSuffix(strings.TrimSpace(body), `"code":null,"message":"node nodeA ended the stream without [DONE] (the model runner may have failed)","param":null,"type":"api_error"}}`) {
		t.Fatalf("body %q: want a final error event", body)
	}
	node.ClearFaults()
	resp = e.post("/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if body := readAll(t, resp); strings.Contains(body, `"error"`) || !strings.HasSuffix(strings.TrimSpace(body), "data: [DONE]") {
		t.Fatalf("a complete stream was changed: %q", body)
	}
}

// TestRequestBodyIdleTimeout: a body that stops arriving ends its request
// with a 408 and never reaches a node; one that arrives slowly but
// steadily is served; and the bound ends with the body, so a stream that
// lasts longer than it is not cut.
func TestRequestBodyIdleTimeout(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 4, TokenDelay: 150 * time.Millisecond})
	e := newEnv(t, app.Config{BodyIdleTimeout: 300 * time.Millisecond}, node)
	send := func(parts []string, pause time.Duration) string {
		t.Helper()
		conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		total := 0
		for _, p := range parts {
			total += len(p)
		}
		fmt.Fprintf(conn, "POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", total+10) // 10 bytes never come
		for _, p := range parts {
			time.Sleep(pause)
			conn.Write([]byte(p))
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	got := send([]string{`{"model":"llama3",`}, 0)
	if !strings.HasPrefix(got, "408 ") || !strings.Contains(got, "request body stalled") {
		t.Fatalf("stalled body → %s; want 408", got)
	}
	got = send([]string{`{"model":`, `"llama3",`, `"messages":[],`, `"x":1`}, 150*time.Millisecond) // 600 ms in all
	if !strings.HasPrefix(got, "408 ") || node.Requests("/api/chat") != 0 {
		t.Fatalf("slow body that then stalled → %s, node requests %d; want 408 and none", got, node.Requests("/api/chat"))
	}

	// A body the handler never reads (a GET) must not hold the answer
	// back for ever: net/http reads it before replying.
	conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /api/tags HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET with a body that never comes: %v %v; want the answer", resp, err)
	}

	// Steady: every pause shorter than the bound; then a stream of 600 ms.
	pr, pw := io.Pipe()
	go func() {
		for _, p := range []string{`{"model":`, `"llama3",`, `"messages":[{"role":"user","content":"hi"}]}`} {
			time.Sleep(150 * time.Millisecond)
			pw.Write([]byte(p))
		}
		pw.Close()
	}()
	resp, err := http.Post(e.proxy.URL+"/api/chat", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || strings.Count(body, "\n") != 5 || !strings.Contains(body, `"done":true`) {
		t.Fatalf("steady body, long stream → %d %q; want the whole stream", resp.StatusCode, body)
	}
}

// downStore is a fleet store that can stop answering, as Postgres in an
// outage.
type downStore struct {
	*staticStore
	down atomic.Bool
}

func (s *downStore) Nodes(ctx context.Context) ([]fleet.Node, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("read nodes: %w", fleet.ErrUnavailable)
	}
	return s.staticStore.Nodes(ctx)
}

// A replica that read the fleet at start (Warm) routes from memory through
// a store outage that begins before its first request; without it, it
// would have nothing to route by.
func TestWarmBeforeAStoreOutage(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	board := memory.NewStatusBoard()
	log := slog.New(slog.DiscardHandler)
	for _, warm := range []bool{true, false} {
		store := &downStore{staticStore: &staticStore{settings: fleet.DefaultSettings(),
			nodes: []fleet.Node{{ID: 1, Name: "nodeA", BaseURL: node.URL(), Enabled: true}}}}
		w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, store, board, nil, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		h, err := app.New(app.Config{RefreshEvery: time.Millisecond}, app.Deps{Fleet: store, Statuses: board, InFlight: memory.NewInFlight(), Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if warm {
			if err := h.Warm(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		store.down.Store(true)
		time.Sleep(5 * time.Millisecond) // the view is too old to use without a refresh
		if err := h.Warm(context.Background()); !errors.Is(err, fleet.ErrUnavailable) {
			t.Fatalf("Warm with the store down = %v; want it to say so", err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/chat", strings.NewReader(`{"model":"llama3","stream":false}`)))
		if want := map[bool]int{true: 200, false: 503}[warm]; rec.Code != want {
			t.Fatalf("warmed %t: chat during the outage answered %d %s; want %d", warm, rec.Code, rec.Body, want)
		}
	}
}

// A request whose context has a deadline (a Lambda invocation's, which
// infra/lambda ends shortly before Lambda stops the process) and runs out
// of time ends in words, not as an answer that looks whole: a stream with
// the route's error, a request no node answered yet with 504.
func TestRequestOutOfTime(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 20, TokenDelay: 50 * time.Millisecond})
	e := newEnv(t, app.Config{}, node)
	serve := func(path, body string) *httptest.ResponseRecorder {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)).WithContext(ctx))
		return rec
	}
	rec := serve("/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`)
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	if rec.Code != 200 || len(lines) < 2 || len(lines) > 10 ||
		!strings.HasPrefix(lines[len(lines)-1], `{"error":"the stream from node nodeA was cut at the request's time limit`) {
		t.Fatalf("stream out of time: %d %q", rec.Code, rec.Body)
	}
	rec = serve("/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if body := rec.Body.String(); !strings.Contains(body, `"message":"the stream from node nodeA was cut at the request's time limit`) || strings.Contains(body, "[DONE]") {
		t.Fatalf("SSE stream out of time: %q", body)
	}
	rec = serve("/api/chat", `{"model":"llama3","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
	if rec.Code != http.StatusGatewayTimeout || !strings.Contains(rec.Body.String(), `"error":"node nodeA did not answer before the request's time limit`) {
		t.Fatalf("whole answer out of time: %d %s", rec.Code, rec.Body)
	}
}
