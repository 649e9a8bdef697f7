package app_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/infra/logfile"
	"github.com/aivonx/aivonx/internal/fakeollama"
)

// logLine is a slog JSON line at t.
func logLine(t time.Time, level, msg string, attrs string) string {
	s := fmt.Sprintf(`{"time":%q,"level":%q,"msg":%q`, t.Format(time.RFC3339Nano), level, msg)
	if attrs != "" {
		s += "," + attrs
	}
	return s + "}"
}

func TestLogs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aivonx.log")
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	// Rotated file: minutes 0–2; current file: minutes 3–7.
	old := []string{
		logLine(at(0), "INFO", "listening", `"addr":":8000"`),
		logLine(at(1), "WARN", "node unhealthy", `"node":"gpu-1","reason":"connection refused"`),
		logLine(at(2), "INFO", "request", `"method":"POST","path":"/api/chat","status":200,"model":"llama3"`),
	}
	cur := []string{
		logLine(at(3), "INFO", "request", `"method":"GET","path":"/api/tags","status":200`),
		"not json at all",
		logLine(at(4), "ERROR", "panic serving request", `"path":"/api/chat"`),
		logLine(at(5), "INFO", "node healthy", `"node":"GPU-1","reason":"lab \"gpu\" box \\ 2"`),
		logLine(at(6), "WARN", "request", `"method":"POST","path":"/api/chat","status":502,"err":"Ünïcode <b>"`),
		logLine(at(7), "DEBUG", "refresh", ``),
	}
	if err := os.WriteFile(filepath.Join(dir, "aivonx-2026-03-01T10-03-00.000.log"), []byte(strings.Join(old, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(cur, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	taipei := time.FixedZone("UTC+8", 8*3600)
	e := newManageEnv(t, app.Config{Observe: app.ObserveConfig{Location: taipei}}, app.Deps{Logs: logfile.NewReader(path)})

	msgs := func(q string) ([]string, map[string]any) {
		t.Helper()
		page := e.expect("GET", "/api/logs?"+q, "", 200)
		var out []string
		for _, r := range page["results"].([]any) {
			out = append(out, r.(map[string]any)["msg"].(string))
		}
		return out, page
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"refresh", "request", "node healthy", "panic serving request", "request", "request", "node unhealthy", "listening"}},
		{"source=access", []string{"request", "request", "request"}},
		{"source=proxy&level=warn,error", []string{"panic serving request", "node unhealthy"}},
		{"level=WARNING", []string{"request", "node unhealthy"}},
		{"query=gpu-1", []string{"node healthy", "node unhealthy"}},                 // attrs, any case
		{"query=PANIC", []string{"panic serving request"}},                          // message
		{"query=" + url.QueryEscape("ÜNÏCODE <b>"), []string{"request"}},            // non-ASCII and HTML
		{"query=" + url.QueryEscape(`lab "gpu" box \ 2`), []string{"node healthy"}}, // as shown, not as JSON escapes it
		{"query=" + url.QueryEscape(`"status":502`), []string{"request"}},           // as JSON, too
		{"start=2026-03-01T10:02:00Z&end=2026-03-01T10:04:00Z", []string{"panic serving request", "request", "request"}},
		{"start=2026-03-01+18:05:00", []string{"refresh", "request", "node healthy"}}, // Taipei local time
		{"end=2026-03-01T11:02:30%2B01:00", []string{"request", "node unhealthy", "listening"}},
		{"start=2026-03-01&end=2026-03-01", []string{"refresh", "request", "node healthy", "panic serving request", "request", "request", "node unhealthy", "listening"}},
		{"end=2026-02-28", nil},
	}
	for _, tt := range tests {
		got, _ := msgs(tt.query)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.query, got, tt.want)
		}
	}

	t.Run("Paging", func(t *testing.T) {
		got, page := msgs("limit=3&offset=2")
		if !slices.Equal(got, []string{"node healthy", "panic serving request", "request"}) || page["count"].(float64) != 5 || page["has_more"] != true {
			t.Fatalf("page = %v", page)
		}
		got, page = msgs("limit=3&offset=6")
		if !slices.Equal(got, []string{"node unhealthy", "listening"}) || page["count"].(float64) != 8 || page["has_more"] != false {
			t.Fatalf("last page = %v", page)
		}
		_, page = msgs("limit=1000")
		if page["limit"].(float64) != 100 {
			t.Fatalf("limit not capped: %v", page["limit"])
		}
	})

	t.Run("EntryShape", func(t *testing.T) {
		page := e.expect("GET", "/api/logs/?query=502", "", 200) // the upstream's path
		r := page["results"].([]any)[0].(map[string]any)
		attrs := r["attrs"].(map[string]any)
		if r["time"] != at(6).Format(time.RFC3339) || r["level"] != "WARN" || attrs["status"].(float64) != 502 || attrs["msg"] != nil {
			t.Fatalf("entry = %v", r)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for _, q := range []string{"source=django", "level=verbose", "start=yesterday", "end=2026-13-01", "limit=x", "limit=0", "offset=-1",
			"start=2026-03-02&end=2026-03-01"} {
			body := e.expect("GET", "/api/logs?"+q, "", 400)
			if body["errors"] == nil {
				t.Fatalf("%s: %v", q, body)
			}
		}
	})
}

func TestLogsNotConfigured(t *testing.T) {
	e := newManageEnv(t, app.Config{}, app.Deps{})
	body := e.expect("GET", "/api/logs", "", 404)
	if body["error"] != "no log file configured: start serve with --log-file" {
		t.Fatalf("body = %v", body)
	}
}

func TestMetrics(t *testing.T) {
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, node)
	if status, body := e.do("POST", "/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("chat: %d %s", status, body)
	}
	e.do("POST", "/api/chat", `{"model":"no-such-model"}`)
	status, text := e.do("GET", "/metrics", "")
	if status != 200 {
		t.Fatalf("metrics: %d", status)
	}
	for _, want := range []string{
		`aivonx_requests_total{model="llama3:latest",node="nodeA",route="POST /api/chat",status="200"} 1`,
		`aivonx_requests_total{model="other",node="",route="POST /api/chat",status="404"} 1`,
		`aivonx_request_duration_seconds_count{route="POST /api/chat"} 2`,
		`aivonx_time_to_first_byte_seconds_count{route="POST /api/chat"}`,
		`aivonx_completion_tokens_total{model="llama3:latest"}`,
		`aivonx_prompt_tokens_total{model="llama3:latest"}`,
		`aivonx_node_healthy{node="nodeA",node_id="1"} 1`,
		`aivonx_node_in_flight_requests{node="nodeA",node_id="1"} 0`,
		`aivonx_node_latency_seconds{node="nodeA",node_id="1"}`,
		`aivonx_worker_last_pass_age_seconds `,
		`aivonx_retries_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	t.Run("FailoverCounted", func(t *testing.T) {
		b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
		e.expect("POST", "/api/proxy/nodes", `{"name":"nodeB","base_url":"`+b.URL()+`"}`, 201)
		e.pass()
		node.Stop()
		// Ties are broken at random: the dead node is picked within a few
		// requests, fails over once, and is then avoided.
		for range 40 {
			e.do("POST", "/api/chat", `{"model":"llama3","stream":false}`)
		}
		_, text := e.do("GET", "/metrics", "")
		if !strings.Contains(text, "aivonx_failovers_total 1") || !strings.Contains(text, "aivonx_retries_total 1") {
			t.Fatalf("failover not counted:\n%s", grep(text, "aivonx_"))
		}
	})
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestSchema(t *testing.T) {
	e := newManageEnv(t, app.Config{}, app.Deps{})
	doc := e.expect("GET", "/api/schema", "", 200)
	if doc["openapi"] != "3.0.3" || doc["paths"].(map[string]any)["/api/proxy/nodes/{id}"] == nil {
		t.Fatalf("doc = %v", doc["info"])
	}
	status, y := e.do("GET", "/api/schema?format=yaml", "")
	if status != 200 || !strings.Contains(y, "openapi: 3.0.3") {
		t.Fatalf("yaml: %d %.100s", status, y)
	}
}
