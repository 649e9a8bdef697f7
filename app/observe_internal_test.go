package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
)

// TestOpenAPICoversEveryRoute fails when a route is served but missing from
// /api/schema, or documented but not served. Register a new route's
// documentation with documentAPI (see openapi.go).
func TestOpenAPICoversEveryRoute(t *testing.T) {
	h := newBareHandler(t)
	documented := map[string]bool{}
	for _, r := range documentedRoutes() {
		documented[r] = true
	}
	served := map[string]bool{}
	for _, p := range h.Patterns() {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			continue // a method-less catch-all ("/api/", "/v1/"): the 404/405 answers
		}
		path = strings.ReplaceAll(path, "...}", "}")
		path = strings.TrimSuffix(path, "{$}") // "/{$}" is "/", "/ui/{$}" is "/ui/"
		key := method + " " + path
		served[key] = true
		if !documented[key] {
			t.Errorf("route %q is served but not in the OpenAPI document (add it with documentAPI)", p)
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("%q is in the OpenAPI document but no route serves it", key)
		}
	}
	doc := openAPIDocument("test")
	ids := map[string]bool{}
	for _, item := range doc["paths"].(map[string]any) {
		for _, op := range item.(map[string]any) {
			id := op.(map[string]any)["operationId"].(string)
			if ids[id] {
				t.Errorf("duplicate operationId %s", id)
			}
			ids[id] = true
		}
	}
}

// observeFleet is a FleetStore with no nodes.
type observeFleet struct{}

func (observeFleet) Nodes(context.Context) ([]fleet.Node, error) { return nil, nil }
func (observeFleet) Settings(context.Context) (fleet.Settings, error) {
	return fleet.DefaultSettings(), nil
}

func newBareHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := New(Config{}, Deps{Fleet: observeFleet{}, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(),
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParseLogQuery(t *testing.T) {
	loc := time.FixedZone("UTC-5", -5*3600)
	q, fe := parseLogQuery(url.Values{"start": {"2026-01-02 03:04:05,123"}, "end": {"2026-01-02"}, "level": {"Warning, error"},
		"source": {"ACCESS"}, "query": {" GPU "}, "limit": {"500"}, "offset": {"7"}}, loc)
	if fe != nil {
		t.Fatal(fe)
	}
	if !q.start.Equal(time.Date(2026, 1, 2, 8, 4, 5, 123e6, time.UTC)) || !q.end.Equal(time.Date(2026, 1, 3, 4, 59, 59, 999999999, time.UTC)) {
		t.Fatalf("start %v end %v", q.start, q.end)
	}
	if !slices.Equal(q.levels, []string{"WARN", "ERROR"}) || q.source != "access" || q.query != "gpu" || q.limit != 100 || q.offset != 7 {
		t.Fatalf("q = %v", q)
	}
	if q, fe := parseLogQuery(url.Values{"start": {"2026-01-02T03:04:05.5+08:00"}}, loc); fe != nil || !q.start.Equal(time.Date(2026, 1, 1, 19, 4, 5, 5e8, time.UTC)) {
		t.Fatalf("zoned start = %v, %v", q.start, fe)
	}
}

// FuzzParseLogQuery runs its seed corpus as a regular test; `go test
// -fuzz FuzzParseLogQuery ./app/` explores further. Parsing must never
// panic, and what it accepts must be usable: a bounded limit and offset,
// ordered times, a filter that evaluates on any line.
func FuzzParseLogQuery(f *testing.F) {
	for _, s := range []string{
		"", "source=access&level=warn", "start=2026-01-02T03:04:05Z&end=2026-01-02", "start=2026-01-02+03:04:05",
		"limit=-1&offset=99999999999999999999", "level=,,,", "query=%00%ff", "start=2026-02-30", "end=0000-01-01T00:00:00Z",
		"query=" + strings.Repeat("a", 600), "source=all&level=info,debug,error,warning&query=ünï",
	} {
		f.Add(s, `{"time":"2026-01-02T03:04:05Z","level":"INFO","msg":"request","status":200}`)
	}
	f.Fuzz(func(t *testing.T, rawQuery, line string) {
		v, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		q, fe := parseLogQuery(v, time.UTC)
		if fe != nil {
			if len(fe) == 0 {
				t.Fatal("empty field errors")
			}
			return
		}
		if q.limit < 1 || q.limit > maxLogLimit || q.offset < 0 {
			t.Fatalf("limit %d offset %d", q.limit, q.offset)
		}
		if !q.start.IsZero() && !q.end.IsZero() && q.end.Before(q.start) {
			t.Fatalf("end %v before start %v", q.end, q.start)
		}
		_, _, _ = q.match([]byte(line))
	})
}

// TestPanicAnswers500: a panic before the answer started reaches the
// client as a whole 500 in the route's shape (net/http would drop a
// buffered one with the connection), and the server keeps serving; one
// after it started cuts the connection, so the client sees a broken
// answer rather than a complete-looking one.
func TestPanicAnswers500(t *testing.T) {
	h := newBareHandler(t)
	h.router = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/started" {
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
		}
		panic("boom")
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tt := range []struct{ path, want string }{
		{"/api/chat", `{"error":"internal error"}`},
		{"/v1/chat/completions", `{"error":{"code":null,"message":"internal error","param":null,"type":"api_error"}}`},
		{"/v1/messages", `{"error":{"message":"internal error","type":"api_error"},"type":"error"}`},
	} {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 500 || strings.TrimSpace(string(body)) != tt.want {
			t.Errorf("%s: %d %s (%v); want 500 %s", tt.path, resp.StatusCode, body, err, tt.want)
		}
	}
	resp, err := http.Get(srv.URL + "/api/started")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a panic mid-answer ended it cleanly; want the connection cut")
	}
}

// outageFleet is a FleetStore of one node that can go down.
type outageFleet struct{ down atomic.Bool }

func (f *outageFleet) Nodes(context.Context) ([]fleet.Node, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("list nodes: %w", fleet.ErrUnavailable)
	}
	return []fleet.Node{{ID: 1, Name: "gpu-1", BaseURL: "http://127.0.0.1:1", Enabled: true}}, nil
}

func (f *outageFleet) Settings(context.Context) (fleet.Settings, error) {
	return fleet.DefaultSettings(), nil
}

// TestInvalidateKeepsTheFleet: a change that makes the next request re-read
// the fleet (a re-probe after a failure, a save) must not leave a replica
// without one while the store is down: the last nodes stand in.
func TestInvalidateKeepsTheFleet(t *testing.T) {
	store := &outageFleet{}
	h, err := New(Config{}, Deps{Fleet: store, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(),
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v := h.view.get(ctx, h.now()); len(v.nodes) != 1 {
		t.Fatalf("nodes %v", v.nodes)
	}
	store.down.Store(true)
	h.view.invalidate()
	if v := h.view.get(ctx, h.now()); len(v.nodes) != 1 || v.storeErr == nil {
		t.Fatalf("after invalidate with the store down: nodes %v, store error %v; want the last node kept", v.nodes, v.storeErr)
	}
}
