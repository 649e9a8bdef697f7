package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/app/history"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/worker"
)

// requestsEnv is the handler with accounts and the request log in the
// embedded store (or the given request log), in front of two fake nodes.
type requestsEnv struct {
	*authEnv
	admin        string // an admin's access token
	nodeA, nodeB *fakeollama.Server
}

func newRequestsEnv(t *testing.T, obs app.ObserveConfig, requests app.RequestLog) *requestsEnv {
	t.Helper()
	ctx := context.Background()
	nodeA := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	nodeB := fakeollama.Start(t, fakeollama.Options{Models: []string{"qwen2.5:0.5b"}})
	store, err := sqlite.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if requests == nil {
		requests = store
	}
	fs := &staticStore{settings: fleet.DefaultSettings(), nodes: []fleet.Node{
		{ID: 1, Name: "nodeA", BaseURL: nodeA.URL(), Enabled: true},
		{ID: 2, Name: "nodeB", BaseURL: nodeB.URL(), Enabled: true},
	}}
	board := memory.NewStatusBoard()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, fs, board, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if obs.RequestLogFlushEvery == 0 {
		obs.RequestLogFlushEvery = 20 * time.Millisecond
	}
	cfg := app.Config{RefreshEvery: time.Millisecond, Observe: obs,
		Auth: app.AuthConfig{SecretKey: testSecret, UsageFlushEvery: 20 * time.Millisecond}}
	h, err := app.New(cfg, app.Deps{Fleet: fs, Statuses: board, InFlight: memory.NewInFlight(), Log: log, Accounts: store, Requests: requests})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.FlushRequests(context.Background())
		store.Close()
	})
	e := &requestsEnv{authEnv: &authEnv{t: t, url: srv.URL, store: store, h: h}, nodeA: nodeA, nodeB: nodeB}
	hash, _ := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if _, err := store.CreateUser(ctx, account.User{Username: "alice", Role: account.RoleAdmin, PasswordHash: string(hash)}); err != nil {
		t.Fatal(err)
	}
	e.admin, _ = e.login("alice", "correct horse")
	return e
}

type requestPage struct {
	Count   int              `json:"count"`
	Offset  int              `json:"offset"`
	Limit   int              `json:"limit"`
	HasMore bool             `json:"has_more"`
	Results []history.Record `json:"results"`
}

func (e *requestsEnv) requests(query string) requestPage {
	e.t.Helper()
	resp, body := e.do("GET", "/api/requests?"+query, "", "Authorization", "Bearer "+e.admin)
	if resp.StatusCode != 200 {
		e.t.Fatalf("GET /api/requests?%s: %d %s", query, resp.StatusCode, body)
	}
	var p requestPage
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Results == nil {
		e.t.Fatalf("GET /api/requests?%s: body %s: %v", query, body, err)
	}
	return p
}

func paths(p requestPage) []string {
	out := []string{}
	for _, r := range p.Results {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	e := newRequestsEnv(t, app.ObserveConfig{}, nil)
	_, key := createKey(t, e.authEnv, e.admin, `{"name":"ci-bot"}`)

	// A proxied chat with an API key, an anonymous one to the other node
	// (inference routes are open, and a login token is no API key), one for a model no node has, and requests that stay out of the
	// log: health, metrics, the UI, and reads the UI polls.
	resp, got := e.do("POST", "/api/chat", chatBody, "Authorization", "Bearer "+key, "X-Request-Id", "chat-1")
	expect(t, resp, got, 200, `"done":true`)
	var final struct {
		PromptEvalCount int64 `json:"prompt_eval_count"`
		EvalCount       int64 `json:"eval_count"`
	}
	json.Unmarshal([]byte(got), &final)
	if final.EvalCount == 0 || final.PromptEvalCount == 0 {
		t.Fatalf("the fake node reported no tokens: %s", got)
	}
	time.Sleep(2 * time.Millisecond) // distinct times, for the order below
	resp, got = e.do("POST", "/v1/chat/completions", `{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer sk-dummy")
	expect(t, resp, got, 200, `chat.completion`)
	time.Sleep(2 * time.Millisecond)
	resp, got = e.do("POST", "/api/generate", `{"model":"nope","prompt":"x"}`)
	expect(t, resp, got, 404, `"error"`)
	for _, p := range []string{"/api/health", "/metrics", "/ui/", "/ui/static/js/lib.js", "/api/proxy/state", "/api/logs", "/api/requests", "/api/account/me", "/api/keys", "/"} {
		e.do("GET", p, "", "Authorization", "Bearer "+e.admin)
	}
	// Nor do requests no route takes (a scanner's thousands would fill it).
	for _, mp := range [][2]string{{"GET", "/api/wp-login.php"}, {"POST", "/v1/nope"}, {"DELETE", "/api/chat"}} {
		resp, got := e.do(mp[0], mp[1], "{}")
		if resp.StatusCode != 404 && resp.StatusCode != 405 {
			t.Fatalf("%s %s: %d %s", mp[0], mp[1], resp.StatusCode, got)
		}
	}

	var page requestPage
	waitFor(t, "three records in /api/requests", func() bool {
		page = e.requests("")
		return len(page.Results) >= 3
	})
	time.Sleep(100 * time.Millisecond) // anything else would have arrived by now
	page = e.requests("")
	want := []string{"POST /api/generate", "POST /v1/chat/completions", "POST /api/chat", "POST /api/keys", "POST /api/account/login"}
	if got := paths(page); !slices.Equal(got, want) {
		t.Fatalf("recorded %v, want %v (newest first; no health, metrics, UI or polled reads)", got, want)
	}
	if page.Count != 5 || page.HasMore || page.Offset != 0 || page.Limit != 50 {
		t.Errorf("page %+v", page)
	}

	t.Run("ChatRecord", func(t *testing.T) {
		r := page.Results[2]
		if r.Model != "llama3:latest" || r.Node != "nodeA" || r.Status != 200 || r.Who != "key:ci-bot" || r.RequestID != "chat-1" ||
			r.PromptTokens != final.PromptEvalCount || r.CompletionTokens != final.EvalCount || r.Client != "127.0.0.1" ||
			r.DurationMS <= 0 || r.TTFBMS <= 0 || r.TTFBMS > r.DurationMS || r.Bytes == 0 || r.Error != "" || r.ID == 0 ||
			time.Since(r.Time) > time.Minute {
			t.Fatalf("chat record %+v; want llama3:latest on nodeA, 200, key:ci-bot, %d+%d tokens", r, final.PromptEvalCount, final.EvalCount)
		}
		if r := page.Results[1]; r.Model != "qwen2.5:0.5b" || r.Node != "nodeB" || r.Who != "" || r.CompletionTokens == 0 {
			t.Fatalf("openai record %+v", r)
		}
		if r := page.Results[0]; r.Model != "nope" || r.Node != "" || r.Status != 404 || r.Who != "" {
			t.Fatalf("404 record %+v", r)
		}
		if r := page.Results[3]; r.Who != "user:alice" || r.Status != 201 || r.Model != "" {
			t.Fatalf("management record %+v", r)
		}
		if r := page.Results[4]; r.Who != "user:alice" || r.Status != 200 {
			t.Fatalf("login record %+v", r)
		}
	})

	t.Run("Filters", func(t *testing.T) {
		now := time.Now().UTC()
		tests := []struct {
			query string
			want  []string
		}{
			{"model=llama3", []string{"POST /api/chat"}}, // the fleet's name of the model
			{"model=llama3:latest", []string{"POST /api/chat"}},
			{"model=nope", []string{"POST /api/generate"}},
			{"node=nodeB", []string{"POST /v1/chat/completions"}},
			{"who=key:ci-bot", []string{"POST /api/chat"}},
			{"who=user:alice", []string{"POST /api/keys", "POST /api/account/login"}},
			{"status=2xx", []string{"POST /v1/chat/completions", "POST /api/chat", "POST /api/keys", "POST /api/account/login"}},
			{"status=201", []string{"POST /api/keys"}},
			{"status=error", []string{"POST /api/generate"}},
			{"status=4XX&model=nope", []string{"POST /api/generate"}},
			{"since=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)), want},
			{"until=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)), nil},
			{"since=2020-01-01&until=2020-01-01", nil},
			{"limit=2", want[:2]},
			{"limit=2&offset=2", want[2:4]},
			{"limit=2&offset=4", want[4:]},
			{"offset=9", nil},
		}
		for _, tt := range tests {
			got := e.requests(tt.query)
			if !slices.Equal(paths(got), append([]string{}, tt.want...)) {
				t.Errorf("%s: got %v, want %v", tt.query, paths(got), tt.want)
			}
		}
		if p := e.requests("limit=2"); !p.HasMore || p.Count != 2 || p.Limit != 2 {
			t.Errorf("first page %+v, want has_more", p)
		}
		if p := e.requests("limit=2&offset=3"); p.HasMore || p.Count != 5 || p.Offset != 3 {
			t.Errorf("last page %+v", p)
		}
		if p := e.requests("limit=5000"); p.Limit != history.MaxLimit {
			t.Errorf("limit not capped: %d", p.Limit)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for q, field := range map[string]string{
			"status=abc": "status", "status=99": "status", "status=6xx": "status", "limit=0": "limit", "limit=x": "limit",
			"offset=-1": "offset", "since=yesterday": "since", "until=2026-13-01": "until",
			"since=2026-03-02&until=2026-03-01": "until", "model=" + strings.Repeat("m", 300): "model", "who=%FF": "who",
		} {
			resp, got := e.do("GET", "/api/requests?"+q, "", "Authorization", "Bearer "+e.admin)
			var body map[string]any
			json.Unmarshal([]byte(got), &body)
			if resp.StatusCode != 400 {
				t.Errorf("%.40s: %d %s, want 400", q, resp.StatusCode, got)
				continue
			}
			fieldError(t, body, field)
		}
		resp, got := e.do("GET", "/api/requests", "")
		expect(t, resp, got, 401, `{"error":"authentication required"}`)
		resp, got = e.do("GET", "/api/requests", "", "Authorization", "Bearer "+key)
		expect(t, resp, got, 401, `"error"`) // an API key is not a login
	})
}

// TestRequestLogFailures: a stream the client stopped reading is not
// recorded as a clean answer, and a request no node answered names the
// node that failed, so that the history can be searched by node.
func TestRequestLogFailures(t *testing.T) {
	t.Parallel()
	e := newRequestsEnv(t, app.ObserveConfig{}, nil)
	e.nodeA.SetTokenDelay(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/api/chat", strings.NewReader(`{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Request-Id", "left")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}
	cancel() // after the first token
	resp.Body.Close()

	e.nodeB.Stop()
	resp2, got := e.do("POST", "/api/chat", `{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"hi"}]}`, "X-Request-Id", "refused")
	expect(t, resp2, got, 502, "nodeB")

	var left, refused history.Record
	waitFor(t, "both records", func() bool {
		for _, r := range e.requests("limit=10").Results {
			switch r.RequestID {
			case "left":
				left = r
			case "refused":
				refused = r
			}
		}
		return left.RequestID != "" && refused.RequestID != ""
	})
	if left.Status != 200 || left.Node != "nodeA" || !strings.Contains(left.Error, "client went away") {
		t.Errorf("abandoned stream recorded as %+v", left)
	}
	if refused.Status != 502 || refused.Node != "nodeB" || !strings.Contains(refused.Error, "nodeB") {
		t.Errorf("refused request recorded as %+v", refused)
	}
	if p := e.requests("node=nodeB&limit=10"); len(p.Results) != 1 || p.Results[0].RequestID != "refused" {
		t.Errorf("the node filter finds %v", paths(p))
	}
}

func TestRequestLogNotConfigured(t *testing.T) {
	e := newManageEnv(t, app.Config{}, app.Deps{})
	body := e.expect("GET", "/api/requests", "", 501)
	if body["error"] != "no request log is configured on this server" {
		t.Fatalf("body = %v", body)
	}
}

func TestRequestLogRetention(t *testing.T) {
	t.Parallel()
	store, err := sqlite.Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	old := time.Now().Add(-15 * 24 * time.Hour)
	recent := time.Now().Add(-13 * 24 * time.Hour)
	if err := store.RecordRequests(context.Background(), []history.Record{
		{Time: old, Method: "POST", Path: "/api/old", Status: 200},
		{Time: recent, Method: "POST", Path: "/api/recent", Status: 200},
	}); err != nil {
		t.Fatal(err)
	}
	e := newRequestsEnv(t, app.ObserveConfig{RequestLogRetention: 14 * 24 * time.Hour}, store)
	var p requestPage
	waitFor(t, "the old record pruned after a flush", func() bool {
		p = e.requests("")
		return !slices.Contains(paths(p), "POST /api/old")
	})
	if got := paths(p); got[len(got)-1] != "POST /api/recent" || slices.Contains(got, "POST /api/old") {
		t.Fatalf("after pruning: %v", paths(p))
	}
}

// The row cap holds however fast requests come: the oldest records go
// first, from the first write on, and less than a tenth of the cap more is
// left after a write.
func TestRequestLogMaxRows(t *testing.T) {
	t.Parallel()
	store, err := sqlite.Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var old []history.Record
	for i := range 30 {
		old = append(old, history.Record{Time: time.Now().Add(time.Duration(i-60) * time.Minute), Method: "POST", Path: "/api/old", Status: 200})
	}
	if err := store.RecordRequests(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	e := newRequestsEnv(t, app.ObserveConfig{RequestLogMaxRows: 20}, store)
	count := func() (n int, newest string) {
		recs, err := store.Requests(context.Background(), history.Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 {
			newest = recs[0].RequestID
		}
		return len(recs), newest
	}
	for i := range 45 {
		id := fmt.Sprintf("r%02d", i)
		resp, got := e.do("POST", "/api/chat", chatBody, "X-Request-Id", id)
		expect(t, resp, got, 200, `"done":true`)
		if i == 0 {
			waitFor(t, "the first write trimmed the log to 20 rows", func() bool { n, newest := count(); return n == 20 && newest == id })
		}
	}
	// The trim follows the write that needs it: between two trims the
	// cap's tenth (2) may be exceeded by one less.
	waitFor(t, "the last request written and the log trimmed", func() bool {
		n, newest := count()
		return newest == "r44" && n >= 20 && n <= 21
	})
	recs, _ := store.Requests(context.Background(), history.Query{Limit: 100})
	for _, r := range recs {
		if r.Path == "/api/old" {
			t.Fatalf("an old record is left (%v); the oldest should go first", r.Time)
		}
	}
}

// fakeRequestLog is a RequestLog whose writes can hang or fail.
type fakeRequestLog struct {
	mu      sync.Mutex
	records []history.Record
	calls   int
	fail    func(call int) error // nil: succeed
	hang    chan struct{}        // non-nil: writes wait until it is closed (ignoring ctx)
}

func (f *fakeRequestLog) RecordRequests(ctx context.Context, recs []history.Record) error {
	f.mu.Lock()
	f.calls++
	call, hang, fail := f.calls, f.hang, f.fail
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	if fail != nil {
		if err := fail(call); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, recs...)
	return nil
}

func (f *fakeRequestLog) Requests(ctx context.Context, q history.Query) ([]history.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []history.Record{}
	for i := len(f.records) - 1; i >= 0; i-- {
		if q.Match(f.records[i]) {
			out = append(out, f.records[i])
		}
	}
	out = out[min(q.Offset, len(out)):]
	return out[:min(q.Limit, len(out))], nil
}

func (f *fakeRequestLog) PruneRequests(context.Context, time.Time) (int64, error) { return 0, nil }
func (f *fakeRequestLog) TrimRequests(context.Context, int) (int64, error)        { return 0, nil }

func (f *fakeRequestLog) written() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []string{}
	for _, r := range f.records {
		out = append(out, r.RequestID)
	}
	return out
}

// metric returns the value of a metric line of /metrics ("" if absent).
func (e *requestsEnv) metric(name string) string {
	e.t.Helper()
	_, text := e.do("GET", "/metrics", "")
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// A store whose writes hang slows no request; the records wait in memory,
// bounded, the oldest dropped and counted, and are written once the store
// answers again.
func TestRequestLogSlowStoreDoesNotBlock(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	f := &fakeRequestLog{hang: hang}
	e := newRequestsEnv(t, app.ObserveConfig{RequestLogBuffer: 20}, f)
	var once sync.Once
	release := func() { once.Do(func() { close(hang) }) }
	defer release()

	// The first write (the key creation below... or the first chat) hangs.
	start := time.Now()
	for i := range 50 {
		resp, got := e.do("POST", "/api/chat", chatBody, "X-Request-Id", fmt.Sprintf("c%02d", i))
		expect(t, resp, got, 200, `"done":true`)
		if i == 0 {
			waitFor(t, "a write in progress", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.calls > 0 })
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("50 chats took %v with a hanging request log", d)
	}
	time.Sleep(100 * time.Millisecond) // several flush periods: no write may start while one hangs
	f.mu.Lock()
	calls := f.calls
	f.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d writes started while the first hung, want 1", calls)
	}
	// The buffer holds at most 20 (it drops a tenth at a time).
	var pending, dropped int
	fmt.Sscan(e.metric("aivonx_request_log_pending"), &pending)
	fmt.Sscan(e.metric("aivonx_request_log_dropped_total"), &dropped)
	if pending < 18 || pending > 20 || dropped == 0 {
		t.Errorf("pending %d, dropped %d; want 18–20 pending and some dropped", pending, dropped)
	}

	release()
	waitFor(t, "the buffer written", func() bool { return e.metric("aivonx_request_log_pending") == "0" })
	// Every chat was written or counted as dropped; those written are in
	// order and end with the newest.
	var chats []string
	for _, id := range f.written() {
		if len(id) == 3 && id[0] == 'c' {
			chats = append(chats, id)
		}
	}
	if len(chats)+dropped != 50 || !slices.IsSorted(chats) || chats[len(chats)-1] != "c49" {
		t.Fatalf("written %v (%d) and %d dropped; want 50 in all, in order, c49 last", chats, len(chats), dropped)
	}
}

// A store that is unavailable for a while loses nothing; one that refuses
// a batch for good drops it after a few tries instead of retrying forever.
func TestRequestLogRetries(t *testing.T) {
	t.Parallel()
	t.Run("Unavailable", func(t *testing.T) {
		t.Parallel()
		f := &fakeRequestLog{fail: func(call int) error {
			if call <= 4 {
				return fmt.Errorf("record requests: %w", fleet.ErrUnavailable)
			}
			return nil
		}}
		e := newRequestsEnv(t, app.ObserveConfig{RequestLogFlushEvery: 5 * time.Millisecond}, f)
		for i := range 5 {
			resp, got := e.do("POST", "/api/chat", chatBody, "X-Request-Id", fmt.Sprintf("u%d", i))
			expect(t, resp, got, 200, `"done":true`)
		}
		waitFor(t, "every record written", func() bool { return len(f.written()) == 6 })
		if w := f.written(); !slices.Equal(w[1:], []string{"u0", "u1", "u2", "u3", "u4"}) {
			t.Fatalf("written %v, want the login then u0…u4 in order", w)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		f := &fakeRequestLog{fail: func(call int) error {
			if call <= 3 {
				return errors.New("record requests: value too long")
			}
			return nil
		}}
		e := newRequestsEnv(t, app.ObserveConfig{RequestLogFlushEvery: 5 * time.Millisecond}, f)
		waitFor(t, "the refused batch dropped", func() bool { return e.metric("aivonx_request_log_dropped_total") == "1" })
		resp, got := e.do("POST", "/api/chat", chatBody, "X-Request-Id", "after")
		expect(t, resp, got, 200, `"done":true`)
		waitFor(t, "later records written", func() bool { return slices.Equal(f.written(), []string{"after"}) })
	})
}

// A write refused for its role is recorded under the user who tried it.
func TestRequestLogNamesRefusedUsers(t *testing.T) {
	t.Parallel()
	e := newRequestsEnv(t, app.ObserveConfig{}, nil)
	e.user("victor", account.RoleViewer, "viewer pass")
	viewer, _ := e.login("victor", "viewer pass")
	resp, got := e.do("POST", "/api/proxy/nodes", `{"base_url":"http://10.0.0.9:11434"}`, "Authorization", "Bearer "+viewer)
	expect(t, resp, got, 403, "admin role required")
	waitFor(t, "the refused write in the history", func() bool {
		p := e.requests("who=user:victor&status=403")
		return len(p.Results) == 1 && p.Results[0].Path == "/api/proxy/nodes"
	})
}

// An OpenAI stream carries token counts only when its client asks
// (stream_options.include_usage), which most do not: the proxy asks for
// them, records them, and keeps the usage event from a client that did not
// ask, while one that did gets it as the node sent it.
func TestOpenAIStreamUsage(t *testing.T) {
	t.Parallel()
	e := newRequestsEnv(t, app.ObserveConfig{}, nil)
	for _, tt := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/completions", `{"model":"llama3","stream":true,"prompt":"hi"}`},
	} {
		t.Run(tt.path, func(t *testing.T) {
			id := "usage-" + tt.path
			resp, got := e.do("POST", tt.path, tt.body, "X-Request-Id", id)
			expect(t, resp, got, 200, "data: [DONE]")
			if strings.Contains(got, `"choices":[]`) || !strings.HasSuffix(got, "}\n\ndata: [DONE]\n\n") {
				t.Fatalf("a client that did not ask got the usage event, or a broken end:\n%s", got)
			}
			for _, ev := range strings.Split(strings.TrimSpace(got), "\n\n") {
				if !strings.HasPrefix(ev, "data: ") || strings.Contains(ev, "\n") {
					t.Fatalf("event %q is not one data line", ev)
				}
			}
			var r history.Record
			waitFor(t, "the stream's record", func() bool {
				for _, rec := range e.requests("limit=10").Results {
					if rec.RequestID == id {
						r = rec
						return true
					}
				}
				return false
			})
			if r.PromptTokens == 0 || r.CompletionTokens != 5 {
				t.Fatalf("record %+v; want the node's counts (5 completion tokens)", r)
			}

			// A client that asked gets the event, counts and all.
			asked := strings.Replace(tt.body, `"stream":true`, `"stream":true,"stream_options":{"include_usage":true}`, 1)
			resp, got = e.do("POST", tt.path, asked)
			expect(t, resp, got, 200, `"choices":[],`)
			if !strings.Contains(got, `"completion_tokens":5`) {
				t.Fatalf("the usage event lost its counts:\n%s", got)
			}
		})
	}
}
