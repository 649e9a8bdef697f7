package main

// End-to-end tests of the Lambda mode: the real binary, built with
// -tags lambda.norpc, runs as a subprocess against a fake Lambda Runtime API
// served by the test (the runtime emulator buffers responses, so it cannot
// show streaming; see reference/serverless.md §3.2). The fake hands out
// events on /next and records each /response as it arrives, chunk by chunk,
// with its trailers.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
)

func TestLambdaArgs(t *testing.T) {
	cases := []struct {
		name    string
		runtime string
		role    string
		args    []string
		want    []string
	}{
		{"NotLambda", "", "worker", []string{"aivonx"}, []string{"aivonx"}},
		{"NotLambdaKeepsCommand", "", "worker", []string{"aivonx", "serve", "--addr", ":1"}, []string{"aivonx", "serve", "--addr", ":1"}},
		{"BareBootstrapServes", "127.0.0.1:9001", "", []string{"/var/task/bootstrap"}, []string{"/var/task/bootstrap", "serve"}},
		{"ImageCommandKept", "127.0.0.1:9001", "", []string{"/aivonx", "worker"}, []string{"/aivonx", "worker"}},
		{"RoleServe", "127.0.0.1:9001", "serve", []string{"/var/task/bootstrap"}, []string{"/var/task/bootstrap", "serve"}},
		{"RoleWorker", "127.0.0.1:9001", "worker", []string{"/var/task/bootstrap"}, []string{"/var/task/bootstrap", "worker"}},
		{"RoleMigrate", "127.0.0.1:9001", "migrate", []string{"/var/task/bootstrap"}, []string{"/var/task/bootstrap", "migrate", "up"}},
		{"RoleOverridesImageCMD", "127.0.0.1:9001", "worker", []string{"/aivonx", "serve"}, []string{"/aivonx", "worker"}},
		{"UnknownRoleReachesCLI", "127.0.0.1:9001", "wrker", []string{"/var/task/bootstrap"}, []string{"/var/task/bootstrap", "wrker"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(envRuntimeAPI, c.runtime)
			t.Setenv(envLambdaRole, c.role)
			if got := lambdaArgs(c.args); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("lambdaArgs(%q) = %q, want %q", c.args, got, c.want)
			}
		})
	}
	for role, args := range lambdaRoles {
		if newCLI().Command(args[0]) == nil {
			t.Errorf("role %s runs %q, which the CLI does not have", role, args)
		}
	}
}

func TestStartLambdaRejectsUnknownFront(t *testing.T) {
	err := startLambda(t.Context(), http.NotFoundHandler(), "api-gateway-v1")
	if err == nil || !strings.Contains(err.Error(), "api-gateway-v1") {
		t.Fatalf("err = %v", err)
	}
}

func TestLambdaE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts Postgres and Redis")
	}
	bin := buildLambdaBinary(t)
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	gate := make(chan struct{})
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5, Gate: gate})

	env := []string{
		"DATABASE_URL=" + dbURL,
		"REDIS_URL=" + redisURL,
		"AIVONX_REDIS_PREFIX=" + prefix,
		"AIVONX_NODES=" + node.URL(),
		"AIVONX_DATA_DIR=" + t.TempDir(), // unused in the shared mode; keeps ./data out of the tree
		"AIVONX_LOG_LEVEL=debug",
		"AIVONX_SECRET_KEY=lambda-e2e-test-signing-secret-0123456789", // required in the shared mode
	}
	if out, err := runBinary(t, bin, env, "migrate", "up"); err != nil {
		t.Fatalf("aivonx migrate up: %v\n%s", err, out)
	}

	// The proxy first: its cold start adds AIVONX_NODES to the store.
	proxy := startFunction(t, bin, "serve", append(env, "AIVONX_LAMBDA_FRONT=function-url"))
	worker := startFunction(t, bin, "worker", env)

	t.Run("ScheduledWorker", func(t *testing.T) {
		res := worker.rt.invoke(t, scheduledEvent()).wait(t)
		if res.errorBody != nil {
			t.Fatalf("worker invocation failed: %s %s", res.errorType, res.errorBody)
		}
		if res.status != http.StatusAccepted || strings.TrimSpace(string(res.body)) != "null" {
			t.Fatalf("worker response: status %d body %q", res.status, res.body)
		}
		if e := res.trailer.Get("Lambda-Runtime-Function-Error-Type"); e != "" {
			t.Fatalf("error trailer %q", e)
		}
	})
	if t.Failed() {
		t.FailNow() // the proxy has no healthy node without the pass
	}

	rdb, err := redis.Open(context.Background(), redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })

	t.Run("FunctionURLStream", func(t *testing.T) {
		body := `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":true}`
		inv := proxy.rt.invoke(t, functionURLEvent(http.MethodPost, "/api/chat", body))
		s := streamReader{chunks: inv.live}

		// Each token must reach the Runtime API before the node produces
		// the next one: the node waits on the gate for every token.
		var got strings.Builder
		var arrivals []time.Duration
		start := time.Now()
		for i := range 5 {
			select {
			case gate <- struct{}{}:
			case <-time.After(10 * time.Second):
				t.Fatalf("the node is not waiting for token %d", i+1)
			}
			if i == 0 {
				pre := s.prelude(t)
				if pre.StatusCode != http.StatusOK || pre.Headers["Content-Type"] != "application/x-ndjson" {
					t.Fatalf("prelude %+v", pre)
				}
			}
			if i == 1 {
				// The node's only candidate: its lease is written in the
				// background while the stream runs, for other containers.
				deadline := time.Now().Add(5 * time.Second)
				for leaseCount(t, rdb, prefix) != 1 {
					if time.Now().After(deadline) {
						t.Fatalf("%d leases in Redis during the stream, want 1", leaseCount(t, rdb, prefix))
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			line := s.line(t)
			arrivals = append(arrivals, time.Since(start))
			var m struct {
				Message struct{ Content string } `json:"message"`
				Done    bool                     `json:"done"`
			}
			if err := json.Unmarshal(line, &m); err != nil || m.Done || m.Message.Content != fakeollama.Token(i) {
				t.Fatalf("line %d = %s (%v), want token %q", i+1, line, err, fakeollama.Token(i))
			}
			got.WriteString(m.Message.Content)
		}
		final := s.line(t)
		var done struct {
			Done       bool   `json:"done"`
			DoneReason string `json:"done_reason"`
		}
		if err := json.Unmarshal(final, &done); err != nil || !done.Done {
			t.Fatalf("last line %s: %v", final, err)
		}
		if got.String() != fakeollama.Answer(5) {
			t.Fatalf("answer %q, want %q", got.String(), fakeollama.Answer(5))
		}
		res := inv.wait(t)
		if rest := s.rest(t); len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("after the last line: %q", rest)
		}
		// Released inline: the container may be frozen from here on.
		if n := leaseCount(t, rdb, prefix); n != 0 {
			t.Fatalf("%d leases in Redis after the invocation ended, want 0", n)
		}
		if res.contentType != "application/vnd.awslambda.http-integration-response" {
			t.Fatalf("response content type %q", res.contentType)
		}
		if !res.chunked {
			t.Fatal("the runtime did not stream the response (no chunked encoding)")
		}
		if e := res.trailer.Get("Lambda-Runtime-Function-Error-Type"); e != "" {
			t.Fatalf("error trailer %q: %s", e, decodeErrorBody(res.trailer.Get("Lambda-Runtime-Function-Error-Body")))
		}
		t.Logf("token arrivals after the gate opened: %v; %d chunks", arrivals, len(res.chunks))
	})

	t.Run("HTTPAPI", func(t *testing.T) {
		api := startFunction(t, bin, "serve", append(env, "AIVONX_LAMBDA_FRONT=http-api"))
		res := api.rt.invoke(t, httpAPIEvent(http.MethodGet, "/api/tags")).wait(t)
		if res.errorBody != nil {
			t.Fatalf("invocation failed: %s %s", res.errorType, res.errorBody)
		}
		var resp events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(res.body, &resp); err != nil {
			t.Fatalf("response %q: %v", res.body, err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Headers["Content-Type"], "application/json") {
			t.Fatalf("response %+v", resp)
		}
		body := resp.Body
		if resp.IsBase64Encoded {
			b, _ := base64.StdEncoding.DecodeString(body)
			body = string(b)
		}
		var tags struct {
			Models []struct{ Name string } `json:"models"`
		}
		if err := json.Unmarshal([]byte(body), &tags); err != nil || len(tags.Models) != 1 || tags.Models[0].Name != "llama3:latest" {
			t.Fatalf("tags %s: %v", body, err)
		}
	})

	// A node that dies mid-answer: the client sees the tokens so far and
	// then an error line, as through the server (last: the node is then
	// marked down).
	t.Run("FunctionURLNodeDropsMidStream", func(t *testing.T) {
		node.SetDropAfter(2)
		defer node.ClearFaults()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case gate <- struct{}{}:
				case <-stop:
					return
				}
			}
		}()
		body := `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`
		inv := proxy.rt.invoke(t, functionURLEvent(http.MethodPost, "/api/chat", body))
		s := streamReader{chunks: inv.live}
		if pre := s.prelude(t); pre.StatusCode != http.StatusOK {
			t.Fatalf("prelude %+v", pre)
		}
		for i := range 2 {
			if line := s.line(t); !bytes.Contains(line, []byte(fakeollama.Token(i))) {
				t.Fatalf("line %d = %s", i+1, line)
			}
		}
		var e struct {
			Error string `json:"error"`
		}
		if line := s.line(t); json.Unmarshal(line, &e) != nil || e.Error == "" {
			t.Fatalf("after the cut: %s, want an error line", line)
		}
		res := inv.wait(t)
		if rest := s.rest(t); len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("after the error line: %q", rest)
		}
		if res.errorBody != nil {
			t.Fatalf("invocation failed: %s", res.errorBody)
		}
	})

	// SIGTERM (which Lambda sends before it stops a container) ends the
	// runtime loop cleanly: pools close and the process exits 0. What the
	// container still held is written first: the last invocation's
	// request log record (batched for about a second, and a frozen
	// container's timer never fires).
	t.Run("SIGTERM", func(t *testing.T) {
		res := proxy.rt.invoke(t, functionURLEvent(http.MethodGet, "/api/version", "")).wait(t)
		if res.errorBody != nil {
			t.Fatalf("invocation failed: %s", res.errorBody)
		}
		for _, f := range []*lambdaFunction{proxy, worker} {
			if err := f.stop(5 * time.Second); err != nil {
				t.Errorf("%s: %v\n%s", f.role, err, f.out)
			}
		}
		db, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(context.Background())
		var n int
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM request_log WHERE path = '/api/version'`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d request log records of the last invocation (%v), want 1", n, err)
		}
	})
}

// TestLambdaHandlerPanics runs startLambda in a child process (this test
// binary, re-executed) with a handler that panics, against the fake Runtime
// API: a panic before the response answers 500, a panic mid-stream ends the
// stream with the runtime's error trailers, and the process keeps serving.
func TestLambdaHandlerPanics(t *testing.T) {
	if os.Getenv("AIVONX_TEST_LAMBDA_CHILD") == "panics" {
		lambdaChild()
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	f := startFunction(t, os.Args[0], "serve", []string{
		"AIVONX_TEST_LAMBDA_CHILD=panics",
		"GOCOVERDIR=" + t.TempDir(),
	}, "-test.run=^TestLambdaHandlerPanics$")

	t.Run("MidStream", func(t *testing.T) {
		inv := f.rt.invoke(t, functionURLEvent(http.MethodGet, "/panic-mid", ""))
		s := streamReader{chunks: inv.live}
		if pre := s.prelude(t); pre.StatusCode != http.StatusOK {
			t.Fatalf("prelude %+v", pre)
		}
		if line := s.line(t); string(line) != `{"done":false}` {
			t.Fatalf("line %q", line)
		}
		res := inv.wait(t)
		if typ := res.trailer.Get("Lambda-Runtime-Function-Error-Type"); typ == "" {
			t.Fatalf("no error trailer; trailers %v", res.trailer)
		}
		if b := decodeErrorBody(res.trailer.Get("Lambda-Runtime-Function-Error-Body")); !strings.Contains(b, "handler panic: boom mid-stream") {
			t.Fatalf("error body %q", b)
		}
	})
	t.Run("BeforeWrite", func(t *testing.T) {
		inv := f.rt.invoke(t, functionURLEvent(http.MethodGet, "/panic-early", ""))
		s := streamReader{chunks: inv.live}
		if pre := s.prelude(t); pre.StatusCode != http.StatusInternalServerError {
			t.Fatalf("prelude %+v", pre)
		}
		if line := s.line(t); string(line) != `{"error":"internal error"}` {
			t.Fatalf("body %q", line)
		}
		if res := inv.wait(t); res.trailer.Get("Lambda-Runtime-Function-Error-Type") != "" {
			t.Fatalf("error trailer on a complete 500: %v", res.trailer)
		}
	})
	t.Run("StillServing", func(t *testing.T) {
		inv := f.rt.invoke(t, functionURLEvent(http.MethodGet, "/ok", ""))
		s := streamReader{chunks: inv.live}
		if pre := s.prelude(t); pre.StatusCode != http.StatusOK {
			t.Fatalf("prelude %+v", pre)
		}
		if line := s.line(t); string(line) != "ok" {
			t.Fatalf("body %q", line)
		}
		inv.wait(t)
	})
	if !strings.Contains(f.out.String(), "panic serving request") {
		t.Errorf("the panics were not logged:\n%s", f.out)
	}
	if err := f.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// lambdaChild is the child of TestLambdaHandlerPanics.
func lambdaChild() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic-mid":
			io.WriteString(w, `{"done":false}`+"\n")
			http.NewResponseController(w).Flush()
			panic("boom mid-stream")
		case "/panic-early":
			panic("boom")
		default:
			io.WriteString(w, "ok\n")
		}
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := startLambda(ctx, h, "function-url"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// buildLambdaBinary builds ./cmd/aivonx as the Makefile's Lambda targets do
// (static, lambda.norpc) and reports its size.
func buildLambdaBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aivonx")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "lambda.norpc", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if fi, err := os.Stat(bin); err == nil {
		t.Logf("binary: %.1f MB (host platform, static, stripped, -tags lambda.norpc)", float64(fi.Size())/1e6)
	}
	return bin
}

// baseEnv is the environment of a child process: nothing from the test's
// own environment but what a process needs to run.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func runBinary(t *testing.T, bin string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(baseEnv(), env...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
	}()
	return cmd.CombinedOutput()
}

// lambdaFunction is the binary running as one Lambda function.
type lambdaFunction struct {
	role string
	rt   *fakeRuntime
	cmd  *exec.Cmd
	out  *testenv.Buffer
	exit chan error
}

// startFunction starts the binary as a zip function's bootstrap (no
// arguments, the role in AIVONX_LAMBDA_ROLE) and waits until it asks the
// Runtime API for its first event, which ends its cold start.
func startFunction(t *testing.T, bin, role string, env []string, args ...string) *lambdaFunction {
	t.Helper()
	rt := newFakeRuntime(t)
	f := &lambdaFunction{role: role, rt: rt, out: &testenv.Buffer{}, exit: make(chan error, 1)}
	f.cmd = exec.Command(bin, args...)
	f.cmd.Env = append(baseEnv(), env...)
	f.cmd.Env = append(f.cmd.Env,
		"AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(rt.srv.URL, "http://"),
		"AIVONX_LAMBDA_ROLE="+role,
		"AWS_LAMBDA_FUNCTION_NAME=aivonx-"+role,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512",
		"AWS_REGION=eu-west-1",
	)
	f.cmd.Stdout, f.cmd.Stderr = f.out, f.out
	start := time.Now()
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.exit <- f.cmd.Wait() }()
	t.Cleanup(func() {
		f.stop(2 * time.Second)
		if t.Failed() {
			t.Logf("%s output:\n%s", role, f.out)
		}
	})
	select {
	case at := <-rt.firstNext:
		t.Logf("%s: cold start (process start to first /next): %v", role, at.Sub(start).Round(time.Millisecond))
	case err := <-f.exit:
		f.exit <- err
		t.Fatalf("%s exited during init: %v\n%s", role, err, f.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no /next after 30s\n%s", role, f.out)
	}
	return f
}

// stop sends SIGTERM and waits for a clean exit; it kills the process at
// the timeout. It may be called more than once.
func (f *lambdaFunction) stop(timeout time.Duration) error {
	if f.cmd.ProcessState != nil {
		return nil
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-f.exit:
		f.exit <- err
		if err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", err)
		}
		return nil
	case <-time.After(timeout):
		f.cmd.Process.Kill()
		return fmt.Errorf("still running %v after SIGTERM", timeout)
	}
}

// fakeRuntime is the Lambda Runtime API of one function: the invocation
// endpoints that aws-lambda-go uses, and the extension endpoints behind
// lambda.WithEnableSIGTERM.
type fakeRuntime struct {
	srv       *httptest.Server
	events    chan *invocation
	firstNext chan time.Time
	nextOnce  sync.Once
	seq       atomic.Int64
	mu        sync.Mutex
	inflight  map[string]*invocation
	stopped   chan struct{}
}

// invocation is one event and what the function answered.
type invocation struct {
	id    string
	event []byte
	live  chan []byte // body chunks as they arrive
	done  chan *invocationResult
}

type invocationResult struct {
	status      int // what the fake answered the runtime
	contentType string
	chunked     bool
	body        []byte
	chunks      []timedChunk
	trailer     http.Header
	errorType   string // set by /error
	errorBody   []byte
}

type timedChunk struct {
	at   time.Time
	size int
}

func newFakeRuntime(t *testing.T) *fakeRuntime {
	rt := &fakeRuntime{
		events:    make(chan *invocation),
		firstNext: make(chan time.Time, 1),
		inflight:  map[string]*invocation{},
		stopped:   make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", rt.handleNext)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", rt.handleResponse)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", rt.handleError)
	mux.HandleFunc("POST /2020-01-01/extension/register", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Lambda-Extension-Identifier", "ext-"+r.Header.Get("Lambda-Extension-Name"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"functionName":"aivonx","functionVersion":"$LATEST","handler":"bootstrap"}`)
	})
	mux.HandleFunc("GET /2020-01-01/extension/event/next", func(w http.ResponseWriter, r *http.Request) {
		select { // an extension with no events waits forever
		case <-r.Context().Done():
		case <-rt.stopped:
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("fake runtime: unexpected %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	})
	rt.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(rt.stopped)
		rt.srv.CloseClientConnections()
		rt.srv.Close()
	})
	return rt
}

// invoke queues event for the function's next /next.
func (rt *fakeRuntime) invoke(t *testing.T, event any) *invocation {
	t.Helper()
	b, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	inv := &invocation{
		id:    "req-" + strconv.FormatInt(rt.seq.Add(1), 10),
		event: b,
		live:  make(chan []byte, 1024),
		done:  make(chan *invocationResult, 1),
	}
	select {
	case rt.events <- inv:
	case <-time.After(10 * time.Second):
		t.Fatal("the function does not ask for an event")
	}
	return inv
}

func (inv *invocation) wait(t *testing.T) *invocationResult {
	t.Helper()
	select {
	case res := <-inv.done:
		return res
	case <-time.After(30 * time.Second):
		t.Fatalf("invocation %s: no response after 30s", inv.id)
		return nil
	}
}

func (rt *fakeRuntime) handleNext(w http.ResponseWriter, r *http.Request) {
	rt.nextOnce.Do(func() { rt.firstNext <- time.Now() })
	select {
	case inv := <-rt.events:
		rt.mu.Lock()
		rt.inflight[inv.id] = inv
		rt.mu.Unlock()
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:aivonx")
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
		h.Set("Content-Type", "application/json")
		w.Write(inv.event)
	case <-r.Context().Done():
	case <-rt.stopped:
		// Past the last event a real Runtime API blocks; an error here
		// would make lambda.Start exit the process.
	}
}

func (rt *fakeRuntime) take(id string) *invocation {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	inv := rt.inflight[id]
	delete(rt.inflight, id)
	return inv
}

// handleResponse reads the streamed response as it comes, one chunk per
// read, then its trailers.
func (rt *fakeRuntime) handleResponse(w http.ResponseWriter, r *http.Request) {
	inv := rt.take(r.PathValue("id"))
	if inv == nil {
		http.Error(w, "unknown request id", http.StatusBadRequest)
		return
	}
	res := &invocationResult{
		status:      http.StatusAccepted,
		contentType: r.Header.Get("Content-Type"),
		chunked:     len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked",
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			c := append([]byte(nil), buf[:n]...)
			res.body = append(res.body, c...)
			res.chunks = append(res.chunks, timedChunk{time.Now(), n})
			inv.live <- c
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.errorType, res.errorBody = "read", []byte(err.Error())
			break
		}
	}
	res.trailer = r.Trailer
	close(inv.live)
	w.WriteHeader(http.StatusAccepted)
	inv.done <- res
}

func (rt *fakeRuntime) handleError(w http.ResponseWriter, r *http.Request) {
	inv := rt.take(r.PathValue("id"))
	if inv == nil {
		http.Error(w, "unknown request id", http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var e struct {
		ErrorType string `json:"errorType"`
	}
	json.Unmarshal(b, &e)
	close(inv.live)
	w.WriteHeader(http.StatusAccepted)
	inv.done <- &invocationResult{status: http.StatusAccepted, errorType: cmp.Or(e.ErrorType, "unknown"), errorBody: b}
}

func decodeErrorBody(s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return s
	}
	return string(b)
}

// streamReader reads a streamed Function URL response from the chunks the
// fake received: the JSON prelude, 8 NULs, then NDJSON lines.
type streamReader struct {
	chunks <-chan []byte
	buf    []byte
}

type urlPrelude struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Cookies    []string          `json:"cookies"`
}

// fill waits for the next chunk; it fails the test at the end of the
// stream or after 10 seconds.
func (s *streamReader) fill(t *testing.T) {
	t.Helper()
	select {
	case c, ok := <-s.chunks:
		if !ok {
			t.Fatalf("stream ended; unread %q", s.buf)
		}
		s.buf = append(s.buf, c...)
	case <-time.After(10 * time.Second):
		t.Fatalf("no chunk for 10s; unread %q", s.buf)
	}
}

func (s *streamReader) prelude(t *testing.T) urlPrelude {
	t.Helper()
	sep := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	for !bytes.Contains(s.buf, sep) {
		s.fill(t)
	}
	head, rest, _ := bytes.Cut(s.buf, sep)
	s.buf = rest
	var p urlPrelude
	if err := json.Unmarshal(head, &p); err != nil {
		t.Fatalf("prelude %q: %v", head, err)
	}
	return p
}

func (s *streamReader) line(t *testing.T) []byte {
	t.Helper()
	for !bytes.Contains(s.buf, []byte{'\n'}) {
		s.fill(t)
	}
	line, rest, _ := bytes.Cut(s.buf, []byte{'\n'})
	s.buf = rest
	return line
}

// rest returns what is left once the stream has ended.
func (s *streamReader) rest(t *testing.T) []byte {
	t.Helper()
	for c := range s.chunks {
		s.buf = append(s.buf, c...)
	}
	return s.buf
}

func scheduledEvent() events.EventBridgeEvent {
	return events.EventBridgeEvent{
		Version:    "0",
		ID:         "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
		DetailType: "Scheduled Event",
		Source:     "aws.events",
		AccountID:  "123456789012",
		Time:       time.Now().UTC().Truncate(time.Second),
		Region:     "eu-west-1",
		Resources:  []string{"arn:aws:events:eu-west-1:123456789012:rule/aivonx-WorkerFunctionHealthCheck"},
		Detail:     json.RawMessage(`{}`),
	}
}

func functionURLEvent(method, path, body string) events.LambdaFunctionURLRequest {
	const domain = "abcdefghij.lambda-url.eu-west-1.on.aws"
	e := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: path,
		Headers: map[string]string{
			"host": domain, "content-type": "application/json", "accept": "application/x-ndjson",
			"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7",
		},
		Body: base64.StdEncoding.EncodeToString([]byte(body)), IsBase64Encoded: true,
	}
	e.RequestContext.DomainName = domain
	e.RequestContext.RequestID = "e2e-1"
	e.RequestContext.HTTP.Method = method
	e.RequestContext.HTTP.Path = path
	e.RequestContext.HTTP.Protocol = "HTTP/1.1"
	e.RequestContext.HTTP.SourceIP = "203.0.113.7"
	return e
}

func httpAPIEvent(method, path string) events.APIGatewayV2HTTPRequest {
	const domain = "aaaaaaaaaa.execute-api.eu-west-1.amazonaws.com"
	e := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "$default", RawPath: path,
		Headers: map[string]string{"host": domain, "accept": "application/json", "x-forwarded-proto": "https"},
	}
	e.RequestContext.DomainName = domain
	e.RequestContext.Stage = "$default"
	e.RequestContext.HTTP.Method = method
	e.RequestContext.HTTP.Path = path
	e.RequestContext.HTTP.Protocol = "HTTP/1.1"
	e.RequestContext.HTTP.SourceIP = "198.51.100.4"
	return e
}

// leaseCount returns the number of in-flight leases in Redis under prefix,
// expired or not.
func leaseCount(t *testing.T, rdb *goredis.Client, prefix string) int {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+"inflight:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		n += int(rdb.ZCard(ctx, k).Val())
	}
	return n
}
