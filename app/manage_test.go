package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
	"github.com/aivonx/aivonx/worker"
)

// manageEnv is the proxy with a real embedded store (Admin and Fleet),
// the real worker as Refresher, and fake nodes.
type manageEnv struct {
	t      *testing.T
	h      *app.Handler
	srv    *httptest.Server
	store  *sqlite.Store
	board  *memory.StatusBoard
	worker *worker.Worker
	logs   *testenv.Buffer
}

func newManageEnv(t *testing.T, cfg app.Config, deps app.Deps, nodes ...*fakeollama.Server) *manageEnv {
	t.Helper()
	store, err := sqlite.Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &manageEnv{t: t, store: store, board: memory.NewStatusBoard(), logs: &testenv.Buffer{}}
	for i, n := range nodes {
		if _, err := store.CreateNode(context.Background(), fleet.Node{Name: "node" + string(rune('A'+i)), BaseURL: n.URL(), Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.worker, err = worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, store, e.board, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.worker.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.RefreshEvery = refreshEvery
	deps.Fleet, deps.Statuses, deps.InFlight, deps.Log = store, e.board, memory.NewInFlight(), log
	deps.Admin, deps.Refresher = store, e.worker
	e.h, err = app.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *manageEnv) pass() {
	e.t.Helper()
	if err := e.worker.RunOnce(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(6 * refreshEvery)
}

// do sends a request, a JSON body when there is one, and returns the
// status and the body.
func (e *manageEnv) do(method, path, body string) (int, string) {
	e.t.Helper()
	contentType := ""
	if body != "" {
		contentType = "application/json"
	}
	return e.doAs(method, path, contentType, body)
}

// doAs sends a request whose body has the given Content-Type.
func (e *manageEnv) doAs(method, path, contentType, body string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, readAll(e.t, resp)
}

// expect sends a request, checks the status and decodes the JSON body.
func (e *manageEnv) expect(method, path, body string, want int) map[string]any {
	e.t.Helper()
	status, got := e.do(method, path, body)
	if status != want {
		e.t.Fatalf("%s %s %s: status %d, want %d; body %s", method, path, body, status, want, got)
	}
	out := map[string]any{}
	if strings.TrimSpace(got) != "" {
		if err := json.Unmarshal([]byte(got), &out); err != nil {
			e.t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, got, err)
		}
	}
	return out
}

func fieldError(t *testing.T, body map[string]any, field string) string {
	t.Helper()
	errs, _ := body["errors"].(map[string]any)
	list, _ := errs[field].([]any)
	if len(list) == 0 {
		t.Fatalf("no error for field %q in %v", field, body)
	}
	if _, ok := body["error"].(string); !ok {
		t.Fatalf("no error summary in %v", body)
	}
	return list[0].(string)
}

func TestNodeCRUD(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a)

	t.Run("ListShowsObservedStatus", func(t *testing.T) {
		list := e.expect("GET", "/api/proxy/nodes", "", 200)
		if list["count"].(float64) != 1 || list["next"] != nil || list["previous"] != nil {
			t.Fatalf("list = %v", list)
		}
		n := list["results"].([]any)[0].(map[string]any)
		st := n["status"].(map[string]any)
		if n["address"] != a.URL() || n["base_url"] != a.URL() || n["enabled"] != true || st["healthy"] != true || st["state"] != "active" {
			t.Fatalf("node = %v", n)
		}
		if models := st["models"].([]any); len(models) != 1 || models[0] != "llama3:latest" {
			t.Fatalf("models = %v", models)
		}
	})

	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"qwen:latest"}})
	var id string
	t.Run("CreateWithAddressAndPortTurnsHealthy", func(t *testing.T) {
		host, port, _ := strings.Cut(strings.TrimPrefix(b.URL(), "http://"), ":")
		n := e.expect("POST", "/api/proxy/nodes", `{"name":"gpu-b","address":"`+host+`","port":`+port+`}`, 201)
		if n["base_url"] != b.URL() || n["name"] != "gpu-b" || n["enabled"] != true {
			t.Fatalf("created = %v", n)
		}
		if p, _ := strconv.Atoi(port); n["port"].(float64) != float64(p) {
			t.Fatalf("port = %v", n["port"])
		}
		id = strconv.FormatFloat(n["id"].(float64), 'f', 0, 64)
		// The background refresh probes it: healthy without a pass.
		waitFor(t, "new node healthy", func() bool {
			n := e.expect("GET", "/api/proxy/nodes/"+id, "", 200)
			return n["status"].(map[string]any)["healthy"] == true
		})
		// And routable.
		status, body := e.do("POST", "/api/chat", `{"model":"qwen","stream":false,"messages":[]}`)
		if status != 200 {
			t.Fatalf("chat on the new node: %d %s", status, body)
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		body := e.expect("POST", "/api/proxy/nodes", `{"base_url":"`+b.URL()+`/"}`, 409)
		fieldError(t, body, "base_url")
		// Given as the upstream's address and port, the error sits by the
		// field the form filled in.
		u, _ := url.Parse(b.URL())
		body = e.expect("POST", "/api/proxy/nodes", `{"address":"`+u.Hostname()+`","port":`+u.Port()+`}`, 409)
		fieldError(t, body, "address")
	})

	t.Run("ErrValidation", func(t *testing.T) {
		for _, tt := range []struct{ body, field string }{
			{`{}`, "base_url"},
			{`{"base_url":"ftp://x"}`, "base_url"},
			{`{"address":"http://x/path"}`, "address"},
			{`{"base_url":"http://x","port":"abc"}`, "port"},
			{`{"base_url":"http://x","port":70000}`, "port"},
			{`{"base_url":"http://x","enabled":"maybe"}`, "enabled"},
			{`{"base_url":"http://x","name":7}`, "name"},
			{`{"base_url":"http://x","name":"` + strings.Repeat("n", 101) + `"}`, "name"},
			// A terminal escape, a carriage return, a NUL: names reach
			// terminals (nodes list), logs and metric labels.
			{`{"base_url":"http://x","name":"evil\u001b[2Jgpu"}`, "name"},
			{`{"base_url":"http://x","name":"a\rb"}`, "name"},
			{`{"base_url":"http://x","name":"a\u0000b"}`, "name"},
			// A misspelt field is an error, not a silent default.
			{`{"base_url":"http://x","enable":false}`, "enable"},
		} {
			fieldError(t, e.expect("POST", "/api/proxy/nodes", tt.body, 400), tt.field)
		}
		if body := e.expect("POST", "/api/proxy/nodes", `[1]`, 400); body["error"] == nil {
			t.Fatalf("body = %v", body)
		}
		// Bytes that are not UTF-8 are refused, not saved as U+FFFD.
		if body := e.expect("POST", "/api/proxy/nodes", "{\"base_url\":\"http://x\",\"name\":\"\xff\xfe\"}", 400); body["error"] != "request body must be valid UTF-8" {
			t.Fatalf("body = %v", body)
		}
	})

	t.Run("PatchDrainsAndActiveAlias", func(t *testing.T) {
		n := e.expect("PATCH", "/api/proxy/nodes/"+id, `{"enabled":false}`, 200)
		if n["enabled"] != false || n["status"].(map[string]any)["state"] != "disabled" || n["name"] != "gpu-b" {
			t.Fatalf("patched = %v", n)
		}
		time.Sleep(6 * refreshEvery)
		// Unavailable, not unknown: the ollama CLI would pull on a 404.
		if status, body := e.do("POST", "/api/chat", `{"model":"qwen","stream":false}`); status != 503 || !strings.Contains(body, "unavailable") {
			t.Fatalf("chat on a drained node's model: %d %s, want 503", status, body)
		}
		if n := e.expect("PATCH", "/api/proxy/nodes/"+id, `{"active":true}`, 200); n["enabled"] != true {
			t.Fatalf("active alias: %v", n)
		}
		// A typo changes nothing and says so.
		fieldError(t, e.expect("PATCH", "/api/proxy/nodes/"+id, `{"enable":false}`, 400), "enable")
		// What a GET returned may be sent back: its read-only fields are ignored.
		got := e.expect("GET", "/api/proxy/nodes/"+id, "", 200)
		got["name"] = "gpu-b2"
		back, _ := json.Marshal(got)
		if n := e.expect("PUT", "/api/proxy/nodes/"+id, string(back), 200); n["name"] != "gpu-b2" || n["enabled"] != true {
			t.Fatalf("round trip = %v", n)
		}
		e.expect("PATCH", "/api/proxy/nodes/"+id, `{"name":"gpu-b"}`, 200)
		// A port alone moves the node to that port of its address.
		host, _, _ := strings.Cut(strings.TrimPrefix(b.URL(), "http://"), ":")
		if n := e.expect("PATCH", "/api/proxy/nodes/"+id, `{"port":1}`, 200); n["base_url"] != "http://"+host+":1" || n["port"] != 1.0 {
			t.Fatalf("PATCH of the port alone: %v", n)
		}
		e.expect("PATCH", "/api/proxy/nodes/"+id, `{"base_url":"`+b.URL()+`"}`, 200)
	})

	t.Run("PutReplaces", func(t *testing.T) {
		n := e.expect("PUT", "/api/proxy/nodes/"+id, `{"base_url":"`+b.URL()+`"}`, 200)
		if n["name"] != strings.TrimPrefix(b.URL(), "http://") || n["enabled"] != true {
			t.Fatalf("put = %v", n)
		}
		fieldError(t, e.expect("PUT", "/api/proxy/nodes/"+id, `{"name":"x"}`, 400), "base_url")
		fieldError(t, e.expect("PUT", "/api/proxy/nodes/"+id, `{"base_url":"`+a.URL()+`"}`, 409), "base_url")
		// A drained node stays drained when a PUT leaves enabled out, as
		// the upstream's PUT kept "active".
		e.expect("PATCH", "/api/proxy/nodes/"+id, `{"enabled":false}`, 200)
		if n := e.expect("PUT", "/api/proxy/nodes/"+id, `{"base_url":"`+b.URL()+`","name":"gpu-b"}`, 200); n["enabled"] != false {
			t.Fatalf("PUT without enabled re-enabled a drained node: %v", n)
		}
		if n := e.expect("PUT", "/api/proxy/nodes/"+id, `{"base_url":"`+b.URL()+`","name":"gpu-b","enabled":true}`, 200); n["enabled"] != true {
			t.Fatalf("PUT with enabled true: %v", n)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		for _, m := range []string{"GET", "PUT", "PATCH", "DELETE"} {
			body := e.expect(m, "/api/proxy/nodes/999", `{"base_url":"http://z"}`, 404)
			if body["error"] != "node not found: 999" {
				t.Fatalf("%s: %v", m, body)
			}
		}
		e.expect("GET", "/api/proxy/nodes/abc", "", 404)
	})

	t.Run("Delete", func(t *testing.T) {
		if status, body := e.do("DELETE", "/api/proxy/nodes/"+id, ""); status != 204 || body != "" {
			t.Fatalf("delete: %d %q", status, body)
		}
		e.expect("GET", "/api/proxy/nodes/"+id, "", 404)
		if list := e.expect("GET", "/api/proxy/nodes", "", 200); list["count"].(float64) != 1 {
			t.Fatalf("list after delete = %v", list)
		}
	})
}

// TestNodeSaveProbes: saving a node probes it at once, even when nothing
// that matters to the probe changed, so that an admin who fixed a node sees
// it back without waiting for the next pass.
func TestNodeSaveProbes(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a)
	a.Stop()
	e.pass()
	n := e.expect("GET", "/api/proxy/nodes/1", "", 200)
	if st := n["status"].(map[string]any); st["healthy"] != false {
		t.Fatalf("stopped node: %v", st)
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	e.expect("PATCH", "/api/proxy/nodes/1", `{"name":"nodeA"}`, 200)
	waitFor(t, "saved node healthy without a pass", func() bool {
		n := e.expect("GET", "/api/proxy/nodes/1", "", 200)
		return n["status"].(map[string]any)["healthy"] == true
	})
}

// With the worker stopped, a node that a re-probe found down is probed
// again until it passes: nothing else would bring it back.
func TestNodeDownIsProbedAgainWithoutPasses(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"qwen:7b"}})
	e := newManageEnv(t, app.Config{StatusMaxAge: 300 * time.Millisecond}, app.Deps{}, a, b)
	time.Sleep(400 * time.Millisecond) // no pass since: the worker is "stopped"
	a.Stop()
	chat := func() int {
		status, _ := e.do("POST", "/api/chat", `{"model":"llama3","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
		return status
	}
	if status := chat(); status == 200 {
		t.Fatal("a stopped node answered")
	}
	waitFor(t, "the stopped node re-probed and found down", func() bool {
		st := e.expect("GET", "/api/proxy/nodes/1", "", 200)["status"].(map[string]any)
		return st["healthy"] == false && !strings.HasPrefix(fmt.Sprint(st["reason"]), "unreachable")
	})
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node back without a pass", func() bool { return chat() == 200 })
}

// TestNodeSaveLeavesWorkerStale: the probe a save triggers is not a health
// pass; with the worker stopped, /api/health and /metrics keep saying so.
func TestNodeSaveLeavesWorkerStale(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{StatusMaxAge: 300 * time.Millisecond}, app.Deps{}, a, b)
	worker := func() map[string]any {
		return e.expect("GET", "/api/health", "", 200)["worker"].(map[string]any)
	}
	worker()
	passEnded := time.Now()
	time.Sleep(400 * time.Millisecond) // no pass since: the worker is "stopped"
	if w := worker(); w["stale"] != true {
		t.Fatalf("worker after 400 ms without a pass: %v", w)
	}
	e.expect("PATCH", "/api/proxy/nodes/1", `{}`, 200)
	waitFor(t, "the saved node re-probed", func() bool {
		st := e.expect("GET", "/api/proxy/nodes/1", "", 200)["status"].(map[string]any)
		last, _ := time.Parse(time.RFC3339Nano, st["last_check"].(string))
		return time.Since(last) < 200*time.Millisecond
	})
	w := worker()
	if last, _ := time.Parse(time.RFC3339Nano, w["last_pass"].(string)); w["stale"] != true || !last.Before(passEnded) {
		t.Fatalf("after one node's re-probe the worker looks alive: %v (the last pass ended before %v)", w, passEnded)
	}
	_, metrics := e.do("GET", "/metrics", "")
	for _, line := range strings.Split(metrics, "\n") {
		if age, ok := strings.CutPrefix(line, "aivonx_worker_last_pass_age_seconds "); ok {
			if v, _ := strconv.ParseFloat(age, 64); v < 0.4 {
				t.Fatalf("pass age %s s after a re-probe, want the pass's own age", age)
			}
		}
	}
}

// TestModelGoneFromOneNode: a model removed on one node (ollama rm there)
// while its list, up to a minute old, still names it: no request fails
// while another node has it, and a re-probe corrects the list at once.
func TestModelGoneFromOneNode(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"nomic-embed-text:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"nomic-embed-text:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)
	req, _ := http.NewRequest("DELETE", a.URL()+"/api/delete", strings.NewReader(`{"model":"nomic-embed-text"}`))
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("delete on the node: %d", resp.StatusCode)
	}
	for i := range 10 {
		if status, body := e.do("POST", "/api/embed", `{"model":"nomic-embed-text","input":"x"}`); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	waitFor(t, "node A's list corrected", func() bool {
		n := e.expect("GET", "/api/proxy/nodes/1", "", 200)
		return len(n["status"].(map[string]any)["models"].([]any)) == 0
	})
}

// TestRecheckIsRateLimited: every 404 moves on and asks for a re-probe, but
// a node answering 404 to every request (too old for the route, say) is
// not probed once per request.
func TestRecheckIsRateLimited(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)
	before := a.Requests("/") + b.Requests("/")
	start := time.Now()
	for range 100 {
		e.do("POST", "/v1/messages", `{"model":"llama3"}`) // the fake has no such route: 404
	}
	elapsed := time.Since(start)
	probes := func() int { return a.Requests("/") + b.Requests("/") - before }
	waitFor(t, "a re-probe", func() bool { return probes() >= 1 }) // they run in the background
	// One per node at once, then at most one per node every 2 s.
	if n, most := probes(), 2*(2+int(elapsed/(2*time.Second))); n > most {
		t.Fatalf("%d probes for 100 requests answered 404 in %v; want at most %d", n, elapsed, most)
	}
}

// TestDroppedStreamRechecksNode: a node that cut one stream but is alive
// is re-probed at once and serves again, rather than staying out until the
// next pass ("no healthy nodes" in between); also when it was re-probed a
// moment before (after a load), the probe being deferred to the end of the
// rate limit rather than dropped.
func TestDroppedStreamRechecksNode(t *testing.T) {
	for name, loadFirst := range map[string]bool{"Alone": false, "AfterARecentRecheck": true} {
		t.Run(name, func(t *testing.T) {
			a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
			e := newManageEnv(t, app.Config{}, app.Deps{}, a)
			if loadFirst {
				if status, body := e.do("POST", "/api/generate", `{"model":"llama3"}`); status != 200 { // rechecks the node
					t.Fatalf("load: %d %s", status, body)
				}
			}
			a.SetDropAfter(2)
			if status, body := e.do("POST", "/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`); status != 200 || !strings.Contains(body, "failed mid-stream") {
				t.Fatalf("the cut stream: %d %s", status, body)
			}
			a.ClearFaults()
			waitFor(t, "the node serving again without a pass", func() bool {
				status, _ := e.do("POST", "/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":false}`)
				return status == 200
			})
		})
	}
}

// TestWorkerDebugLog: --log-level debug shows every probe and every pass,
// as TROUBLESHOOTING promises.
func TestWorkerDebugLog(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a)
	a.Stop()
	e.pass()
	var probed, passes int
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["level"] != "DEBUG" {
			continue
		}
		switch rec["msg"] {
		case "node probed":
			if rec["node"] != "nodeA" || rec["models"] != 1.0 {
				t.Errorf("probe line %s", line)
			}
			if rec["healthy"] == false && rec["reason"] == "" {
				t.Errorf("an unhealthy probe without a reason: %s", line)
			}
			probed++
		case "health pass done":
			if rec["nodes"] != 1.0 {
				t.Errorf("pass line %s", line)
			}
			passes++
		}
	}
	if probed != 2 || passes != 2 {
		t.Fatalf("%d probe and %d pass debug lines after two passes, want 2 and 2:\n%s", probed, passes, e.logs.String())
	}
}

func TestNodePagination(t *testing.T) {
	e := newManageEnv(t, app.Config{}, app.Deps{})
	for i := range 5 {
		e.expect("POST", "/api/proxy/nodes", `{"base_url":"http://10.0.0.`+strconv.Itoa(i+1)+`","enabled":false}`, 201)
	}
	page := e.expect("GET", "/api/proxy/nodes?limit=2&offset=2", "", 200)
	results := page["results"].([]any)
	if page["count"].(float64) != 5 || len(results) != 2 || results[0].(map[string]any)["base_url"] != "http://10.0.0.3:11434" {
		t.Fatalf("page = %v", page)
	}
	if page["next"] != "/api/proxy/nodes?limit=2&offset=4" || page["previous"] != "/api/proxy/nodes?limit=2&offset=0" {
		t.Fatalf("links = %v, %v", page["next"], page["previous"])
	}
	last := e.expect("GET", "/api/proxy/nodes?limit=2&offset=4", "", 200)
	if last["next"] != nil || len(last["results"].([]any)) != 1 {
		t.Fatalf("last page = %v", last)
	}
	// Bad values fall back to the defaults, as DRF does; the limit is capped.
	if all := e.expect("GET", "/api/proxy/nodes?limit=abc&offset=-3", "", 200); len(all["results"].([]any)) != 5 {
		t.Fatalf("defaults = %v", all)
	}
	// ?fields= trims every node to the fields named, as the upstream did;
	// an unknown name is ignored.
	page = e.expect("GET", "/api/proxy/nodes?limit=2&fields=id,+name,nope", "", 200)
	for _, n := range page["results"].([]any) {
		if got := n.(map[string]any); len(got) != 2 || got["id"] == nil || got["name"] == nil {
			t.Fatalf("fields=id,name: %v", got)
		}
	}
	one := e.expect("GET", "/api/proxy/nodes/1?fields=base_url", "", 200)
	if len(one) != 1 || one["base_url"] == nil {
		t.Fatalf("one node, fields=base_url: %v", one)
	}
	// A broken chunked body is a bad request, not a large one.
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "PATCH /api/proxy/config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 400 {
		t.Fatalf("malformed chunked body → %v %v; want 400", resp, err)
	}
	for _, offset := range []string{"50", "9223372036854775807", "9223372036854775707"} { // the last two once overflowed offset+limit
		if past := e.expect("GET", "/api/proxy/nodes?offset="+offset, "", 200); len(past["results"].([]any)) != 0 || past["next"] != nil {
			t.Fatalf("offset %s, past the end = %v", offset, past)
		}
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &dnsError{host}
}

type dnsError struct{ host string }

func (e *dnsError) Error() string { return "no such host " + e.host }

func TestNodeAllowedNetworks(t *testing.T) {
	cfg := app.Config{Manage: app.ManageConfig{
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")},
		Resolver: fakeResolver{
			"gpu.internal": {netip.MustParseAddr("10.1.2.3")},
			"metadata":     {netip.MustParseAddr("169.254.169.254")},
			"mixed":        {netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.1.1")},
		},
	}}
	e := newManageEnv(t, cfg, app.Deps{})
	e.expect("POST", "/api/proxy/nodes", `{"base_url":"http://10.9.9.9"}`, 201)
	e.expect("POST", "/api/proxy/nodes", `{"base_url":"http://gpu.internal"}`, 201)
	for _, u := range []string{"http://169.254.169.254", "http://metadata", "http://mixed", "http://nowhere", "http://[::1]"} {
		msg := fieldError(t, e.expect("POST", "/api/proxy/nodes", `{"base_url":"`+u+`"}`, 400), "base_url")
		if !strings.Contains(msg, "outside") && !strings.Contains(msg, "resolve") {
			t.Fatalf("%s: %q", u, msg)
		}
	}
	// Updates are checked too.
	fieldError(t, e.expect("PATCH", "/api/proxy/nodes/1", `{"base_url":"http://metadata"}`, 400), "base_url")
}

func TestConfig(t *testing.T) {
	e := newManageEnv(t, app.Config{}, app.Deps{})
	if c := e.expect("GET", "/api/proxy/config", "", 200); c["strategy"] != "least_active" {
		t.Fatalf("config = %v", c)
	}
	if c := e.expect("PUT", "/api/proxy/config", `{"strategy":"lowest_latency"}`, 200); c["strategy"] != "lowest_latency" {
		t.Fatalf("put = %v", c)
	}
	// PUT without strategy changes nothing, as upstream; the fields of
	// the upstream's answer may be sent back.
	if c := e.expect("PUT", "/api/proxy/config", `{"id":1,"updated_at":"2026-01-01T00:00:00Z"}`, 200); c["strategy"] != "lowest_latency" {
		t.Fatalf("empty put = %v", c)
	}
	fieldError(t, e.expect("PATCH", "/api/proxy/config", `{"strat":"least_active"}`, 400), "strat")
	if msg := fieldError(t, e.expect("PATCH", "/api/proxy/config", `{"strategy":"random"}`, 400), "strategy"); !strings.Contains(msg, "not a valid choice") {
		t.Fatalf("msg = %q", msg)
	}
	fieldError(t, e.expect("PATCH", "/api/proxy/config", `{"strategy":3}`, 400), "strategy")
	e.expect("PATCH", "/api/proxy/config", `nope`, 400)
	if c := e.expect("GET", "/api/proxy/config", "", 200); c["strategy"] != "lowest_latency" {
		t.Fatalf("config after bad writes = %v", c)
	}
	// The proxy routes by the saved strategy (visible in /api/proxy/state).
	time.Sleep(6 * refreshEvery)
	if st := e.expect("GET", "/api/proxy/state", "", 200); st["strategy"] != "lowest_latency" {
		t.Fatalf("state strategy = %v", st["strategy"])
	}
}

// TestManageBodyTypes: curl -d labels a JSON body as a form; it is read as
// JSON on every management write (it was read as a form, which dropped
// every field: a drain or a strategy change answered 200 and did nothing).
// A real form, as the upstream's HTML pages posted, still works.
func TestManageBodyTypes(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{})
	const curlForm = "application/x-www-form-urlencoded" // curl -d
	send := func(method, path, contentType, body string, want int) map[string]any {
		t.Helper()
		status, body := e.doAs(method, path, contentType, body)
		out := map[string]any{}
		if status != want || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("status %d, want %d; body %s", status, want, body)
		}
		return out
	}

	n := send("POST", "/api/proxy/nodes", curlForm, `{"name":"gpu-a","base_url":"`+a.URL()+`"}`, 201)
	id := strconv.FormatFloat(n["id"].(float64), 'f', 0, 64)
	if n["name"] != "gpu-a" {
		t.Fatalf("created = %v", n)
	}
	if n := send("PATCH", "/api/proxy/nodes/"+id, curlForm, ` {"enabled":false}`, 200); n["enabled"] != false {
		t.Fatalf("drain through curl -d = %v", n)
	}
	if c := send("PATCH", "/api/proxy/config", curlForm, `{"strategy":"lowest_latency"}`, 200); c["strategy"] != "lowest_latency" {
		t.Fatalf("config through curl -d = %v", c)
	}
	fieldError(t, send("PATCH", "/api/proxy/config", curlForm, `{"strategy":"bogus"}`, 400), "strategy")
	// The node is drained: the pull names it and finds no enabled node of that id.
	if body := send("POST", "/api/proxy/pull", curlForm, `{"model":"llama3","node_id":`+id+`}`, 404); body["error"] != "node not found: "+id {
		t.Fatalf("pull through curl -d = %v", body)
	}

	// Forms, urlencoded and multipart.
	if n := send("PATCH", "/api/proxy/nodes/"+id, curlForm, "enabled=true&name=gpu-a2", 200); n["enabled"] != true || n["name"] != "gpu-a2" {
		t.Fatalf("form patch = %v", n)
	}
	var mp strings.Builder
	mw := multipart.NewWriter(&mp)
	mw.WriteField("strategy", "least_active")
	mw.Close()
	if c := send("PUT", "/api/proxy/config", mw.FormDataContentType(), mp.String(), 200); c["strategy"] != "least_active" {
		t.Fatalf("multipart put = %v", c)
	}
	fieldError(t, send("PATCH", "/api/proxy/nodes/"+id, curlForm, "enable=false", 400), "enable")
	send("PATCH", "/api/proxy/nodes/"+id, curlForm, "a=%zz", 400)
}

func TestManageWithoutAdminStore(t *testing.T) {
	store := &staticStore{settings: fleet.DefaultSettings()}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h, err := app.New(app.Config{}, app.Deps{Fleet: store, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tt := range []struct{ method, path string }{{"POST", "/api/proxy/nodes"}, {"PATCH", "/api/proxy/config"}, {"DELETE", "/api/proxy/nodes/1"}} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(`{}`))
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 501 || !strings.Contains(body, "error") {
			t.Fatalf("%s %s: %d %s", tt.method, tt.path, resp.StatusCode, body)
		}
	}
	resp, err := testClient.Get(srv.URL + "/api/proxy/nodes")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"count":0`) {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
}
