// Package e2e runs the real aivonx binary (built once in TestMain) against
// fake Ollama nodes, real Postgres and Redis, and checks what the shared-state
// and proof issues promise end to end: replicas agree through Redis, killed
// processes leak nothing, faults lose no request a healthy node could have
// served, and bad input gets a clear error in the route's own shape.
//
// Set AIVONX_E2E_BIN to a prebuilt binary to skip the build.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
)

// bin is the aivonx binary under test.
var bin string

// adminPassword is given to every serve process (AIVONX_ADMIN_PASSWORD), so
// that the admin routes can be read once they require a login.
const adminPassword = "e2e-Admin-pass-1234"

// model is the model every fake node serves.
const model = "llama3"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	bin = os.Getenv("AIVONX_E2E_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "aivonx-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "aivonx")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", bin, "../../cmd/aivonx")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build aivonx:", err)
			return 1
		}
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", bin, time.Since(start).Round(time.Millisecond))
		}
	}
	return testenv.Main(m)
}

// ---- processes ----

// proc is one aivonx process. Its stdout and stderr go to one log file; the
// test fails if the log mentions a panic. Cleanup kills it if still running.
type proc struct {
	t       testing.TB
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	exitErr error
}

var logSeq struct {
	sync.Mutex
	n int
}

// baseEnv is the test's environment without anything that would switch the
// binary's mode or settings behind the test's back.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AIVONX_") || strings.HasPrefix(k, "DATABASE_URL") ||
			strings.HasPrefix(k, "REDIS_URL") || k == "AWS_LAMBDA_RUNTIME_API" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startProc starts the binary with args and the extra environment.
func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	logSeq.Lock()
	logSeq.n++
	n := logSeq.n
	logSeq.Unlock()
	p := &proc{t: t, name: name, args: args, done: make(chan struct{}),
		logPath: filepath.Join(t.TempDir(), fmt.Sprintf("%02d-%s.log", n, name))}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(baseEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// Its own process group, so a Ctrl-C on the test does not reach it first.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	f.Close()
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		out := p.Output()
		if strings.Contains(out, "panic") {
			t.Errorf("%s: its output mentions a panic:\n%s", p.name, tail(out, 60))
		}
		if t.Failed() {
			t.Logf("---- %s %s: last lines of output ----\n%s", p.name, strings.Join(p.args, " "), tail(out, 25))
		}
	})
	return p
}

// Output is everything the process wrote so far.
func (p *proc) Output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits for the exit. It does nothing once exited.
func (p *proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process.
func (p *proc) Signal(sig os.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the exit and returns the exit code (-1 for a
// signal); ok is false on timeout.
func (p *proc) Wait(d time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
	case <-time.After(d):
		return 0, false
	}
	if p.exitErr == nil {
		return 0, true
	}
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode(), true
	}
	return -1, true
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCLI runs a short command (migrate, nodes, config) and returns its
// combined output and error.
func runCLI(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(baseEnv(), env...)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "panic") {
		t.Errorf("aivonx %s: output mentions a panic:\n%s", strings.Join(args, " "), out)
	}
	return string(out), err
}

// mustCLI is runCLI that fails the test on error.
func mustCLI(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, err := runCLI(t, env, args...)
	if err != nil {
		t.Fatalf("aivonx %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is a running `aivonx serve`.
type server struct {
	*proc
	addr string // 127.0.0.1:port
	URL  string // http://127.0.0.1:port

	mu    sync.Mutex
	token string // admin access token, once logged in
}

// serveOpts configure startServe.
type serveOpts struct {
	name  string
	env   []string // e.g. DATABASE_URL=…, REDIS_URL=…
	nodes []*fakeollama.Server
	args  []string // more flags
	port  int      // 0: a free one
	// dataDir for the embedded mode; "" makes a temp dir (ignored in the
	// shared mode, which has DATABASE_URL in env).
	dataDir string
}

// startServe starts `aivonx serve` and waits until /api/health answers.
func startServe(t testing.TB, o serveOpts) *server {
	t.Helper()
	if o.name == "" {
		o.name = "serve"
	}
	for attempt := 0; ; attempt++ {
		port := o.port
		if port == 0 {
			port = freePort(t)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"serve", "--addr", addr, "--log-level", "info"}
		shared := false
		for _, kv := range o.env {
			if strings.HasPrefix(kv, "DATABASE_URL=") {
				shared = true
			}
		}
		if !shared {
			if o.dataDir == "" {
				o.dataDir = t.TempDir()
			}
			args = append(args, "--data-dir", o.dataDir)
		}
		for _, n := range o.nodes {
			args = append(args, "--node", n.URL())
		}
		args = append(args, o.args...)
		env := append([]string{"AIVONX_ADMIN_PASSWORD=" + adminPassword}, o.env...)
		p := startProc(t, o.name, env, args...)
		s := &server{proc: p, addr: addr, URL: "http://" + addr}
		err := s.waitReady(20 * time.Second)
		if err == nil {
			return s
		}
		if attempt < 3 && o.port == 0 && strings.Contains(p.Output(), "address already in use") {
			continue
		}
		t.Fatalf("%s did not become ready: %v\n%s", o.name, err, tail(p.Output(), 30))
	}
}

// waitReady polls /api/health until it answers 200.
func (s *server) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get(s.URL + "/api/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /api/health: %s", resp.Status)
		}
		if s.Exited() {
			code, _ := s.Wait(0)
			return fmt.Errorf("exited with code %d", code)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminGet GETs an admin route and decodes its JSON answer; anything but
// 200 fails the test.
func (s *server) adminGet(t testing.TB, path string, into any) {
	t.Helper()
	status, body := s.adminDo(t, http.MethodGet, path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// adminDo sends a request to an admin route with a JSON body (nil: none)
// and returns the status and body. It logs in as the admin
// (AIVONX_ADMIN_PASSWORD) when the route answers 401.
func (s *server) adminDo(t testing.TB, method, path string, payload any) (int, []byte) {
	t.Helper()
	var raw []byte
	if payload != nil {
		raw, _ = json.Marshal(payload)
	}
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(raw))
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		s.mu.Lock()
		if s.token != "" {
			req.Header.Set("Authorization", "Bearer "+s.token)
		}
		s.mu.Unlock()
		resp, err := quickClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			s.login(t)
			continue
		}
		return resp.StatusCode, body
	}
}

func (s *server) login(t testing.TB) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": "admin", "password": adminPassword})
	resp, err := quickClient.Post(s.URL+"/api/account/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Access string `json:"access"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.Access == "" {
		t.Fatalf("login as admin: %s %s", resp.Status, body)
	}
	s.mu.Lock()
	s.token = out.Access
	s.mu.Unlock()
}

// activeByAddr reads /api/proxy/active-requests: node address → count.
func (s *server) activeByAddr(t testing.TB) map[string]int {
	t.Helper()
	var out struct {
		Nodes []struct {
			Address        string `json:"address"`
			ActiveRequests int    `json:"active_requests"`
		} `json:"nodes"`
	}
	s.adminGet(t, "/api/proxy/active-requests", &out)
	m := map[string]int{}
	for _, n := range out.Nodes {
		m[n.Address] = n.ActiveRequests
	}
	return m
}

// health reads /api/health.
func (s *server) health(t testing.TB) healthDoc {
	t.Helper()
	resp, err := quickClient.Get(s.URL + "/api/health")
	if err != nil {
		t.Fatalf("GET /api/health: %v", err)
	}
	defer resp.Body.Close()
	var h healthDoc
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("GET /api/health: %v", err)
	}
	return h
}

type healthDoc struct {
	Status       string                       `json:"status"`
	Mode         string                       `json:"mode"`
	Dependencies map[string]map[string]string `json:"dependencies"`
	Worker       struct {
		AgeSeconds *float64 `json:"age_seconds"`
		Stale      bool     `json:"stale"`
	} `json:"worker"`
}

// ---- shared mode ----

// shared is one shared-mode deployment: a Postgres schema and a Redis
// prefix.
type shared struct {
	dbURL, redisURL, prefix string
	rdb                     *goredis.Client
}

// env is the environment that puts the binary in the shared mode. Every
// replica signs logins with the same secret key.
func (s *shared) env() []string {
	return []string{"DATABASE_URL=" + s.dbURL, "REDIS_URL=" + s.redisURL, "AIVONX_REDIS_PREFIX=" + s.prefix,
		"AIVONX_SECRET_KEY=e2e-secret-key-0123456789abcdef0123456789"}
}

// newShared migrates the schema and opens a Redis client for assertions.
func newShared(t testing.TB, dbURL, redisURL, prefix string) *shared {
	t.Helper()
	s := &shared{dbURL: dbURL, redisURL: redisURL, prefix: prefix}
	mustCLI(t, s.env(), "migrate", "up")
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	s.rdb = goredis.NewClient(opts)
	t.Cleanup(func() { s.rdb.Close() })
	return s
}

// addNode adds a node through the CLI and returns its ID.
func (s *shared) addNode(t testing.TB, url string) int64 {
	t.Helper()
	out := mustCLI(t, s.env(), "nodes", "add", url)
	// "added node 3 (127.0.0.1:4000) http://127.0.0.1:4000"
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "added" {
		t.Fatalf("nodes add: unexpected output %q", out)
	}
	id, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatalf("nodes add: unexpected output %q", out)
	}
	return id
}

// startWorker starts `aivonx worker` with a one-second interval.
func (s *shared) startWorker(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, s.env(), append([]string{"worker", "--health-interval", "1s", "--log-level", "info"}, args...)...)
}

// waitPass waits until a worker pass is stored in Redis and returns its
// time.
func (s *shared) waitPass(t testing.TB, after time.Time, d time.Duration) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, d, "a worker pass in Redis after "+after.Format(time.StampMilli), func() bool {
		at = s.lastPass()
		return at.After(after)
	})
	return at
}

// lastPass is the time of the last pass in Redis (<prefix>fleet:pass), or
// zero.
func (s *shared) lastPass() time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ms, err := s.rdb.Get(ctx, s.prefix+"fleet:pass").Int64()
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// leases returns the number of members of every <prefix>inflight:* set, by
// node ID (ZCARD: expired members count until something removes them or
// the set expires).
func (s *shared) leases(t testing.TB) (map[string]int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := s.rdb.Keys(ctx, s.prefix+"inflight:*").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, k := range keys {
		n, err := s.rdb.ZCard(ctx, k).Result()
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out[strings.TrimPrefix(k, s.prefix+"inflight:")] = n
		}
	}
	return out, nil
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// ---- polling ----

// waitFor polls cond every 25 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---- requests ----

// quickClient is for short requests; every request has a deadline.
var quickClient = &http.Client{Timeout: 10 * time.Second}

// reply is the outcome of one proxied request.
type reply struct {
	status int
	node   string // X-Aivonx-Node
	body   []byte
	err    error
}

func (r reply) ok() bool { return r.err == nil && r.status == http.StatusOK }

func (r reply) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return fmt.Sprintf("%d from %q: %s", r.status, r.node, bytes.TrimSpace(r.body))
}

func chatBody(stream bool) []byte { return chatBodyFor(model, stream) }

func chatBodyFor(m string, stream bool) []byte {
	b, _ := json.Marshal(map[string]any{
		"model":    m,
		"messages": []map[string]string{{"role": "user", "content": "hello"}},
		"stream":   stream,
	})
	return b
}

// chat sends one non-streamed /api/chat and reads the whole answer.
func chat(ctx context.Context, c *http.Client, base string) reply {
	if c == nil {
		c = quickClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", bytes.NewReader(chatBody(false)))
	if err != nil {
		return reply{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, node: resp.Header.Get("X-Aivonx-Node"), body: body, err: err}
	if r.ok() {
		var msg struct {
			Done  bool   `json:"done"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &msg); err != nil || !msg.Done || msg.Error != "" {
			r.err = fmt.Errorf("incomplete answer: %s", body)
		}
	}
	return r
}

// stream is one streamed /api/chat held open by the test.
type stream struct {
	resp   *http.Response
	rd     *bufio.Reader
	node   string
	cancel context.CancelFunc
}

// openStream starts a streamed chat of model and reads its first line.
func openStream(t testing.TB, base string) *stream { return openStreamFor(t, base, model) }

// openStreamFor starts a streamed chat of m and reads its first line.
func openStreamFor(t testing.TB, base, m string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", bytes.NewReader(chatBodyFor(m, true)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("open stream: %s %s", resp.Status, b)
	}
	s := &stream{resp: resp, rd: bufio.NewReader(resp.Body), node: resp.Header.Get("X-Aivonx-Node"), cancel: cancel}
	t.Cleanup(s.Close)
	if _, err := s.rd.ReadBytes('\n'); err != nil {
		t.Fatalf("stream's first line: %v", err)
	}
	return s
}

// Close abandons the stream.
func (s *stream) Close() {
	s.cancel()
	s.resp.Body.Close()
}

// finish reads the rest of the stream: whether it ended with done:true, the
// error line if one came, and the read error if the body was cut.
func (s *stream) finish() (done bool, errLine string, readErr error) {
	for {
		line, err := s.rd.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var msg struct {
				Done  bool   `json:"done"`
				Error string `json:"error"`
			}
			if jerr := json.Unmarshal(line, &msg); jerr != nil {
				return done, errLine, fmt.Errorf("bad line %q: %v", line, jerr)
			}
			if msg.Error != "" {
				errLine = msg.Error
			}
			if msg.Done {
				done = true
			}
		}
		if err == io.EOF {
			return done, errLine, nil
		}
		if err != nil {
			return done, errLine, err
		}
	}
}

// load runs workers goroutines that each send requests with send until
// stop is closed, and returns every reply with the time it was sent.
type loadResult struct {
	replies []reply
	sent    []time.Time
}

func (l loadResult) failures() []string {
	var out []string
	for i, r := range l.replies {
		if !r.ok() {
			out = append(out, l.sent[i].Format("15:04:05.000")+" "+r.String())
		}
	}
	return out
}

func (l loadResult) byNode() map[string]int {
	m := map[string]int{}
	for _, r := range l.replies {
		if r.ok() {
			m[r.node]++
		}
	}
	return m
}

// checkOutage fails t unless every request succeeded and enough of them
// were sent while what was down (between from and to), which is what the
// test is about.
func (l loadResult) checkOutage(t *testing.T, what string, from, to time.Time) {
	t.Helper()
	var during int
	for _, at := range l.sent {
		if at.After(from) && at.Before(to) {
			during++
		}
	}
	t.Logf("%d requests, %d sent while %s was down, by node %v", len(l.replies), during, what, l.byNode())
	if f := l.failures(); len(f) > 0 {
		t.Errorf("%d of %d requests failed with %s stopped and restarted; first: %s", len(f), len(l.replies), what, strings.Join(f[:min(5, len(f))], "\n"))
	}
	if during < 20 {
		t.Errorf("only %d requests while %s was down; the test needs more", during, what)
	}
}

func runLoad(workers int, d time.Duration, send func(ctx context.Context, worker int) reply) loadResult {
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	return runLoadUntil(workers, stop, send)
}

// runLoadUntil is runLoad until stop is closed.
func runLoadUntil(workers int, stop <-chan struct{}, send func(ctx context.Context, worker int) reply) loadResult {
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				// Each request gets its own deadline, independent of the
				// end of the run, so a request is never cut by the test.
				rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
				r := send(rctx, w)
				rcancel()
				mu.Lock()
				res.replies = append(res.replies, r)
				res.sent = append(res.sent, at)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// nodeName is the name the proxy gives a node added by URL (host:port),
// which X-Aivonx-Node carries.
func nodeName(f *fakeollama.Server) string { return f.Addr() }

// startFakes starts n fake nodes serving model.
func startFakes(t testing.TB, n int, opts fakeollama.Options) []*fakeollama.Server {
	t.Helper()
	if opts.Models == nil {
		opts.Models = []string{model}
	}
	out := make([]*fakeollama.Server, n)
	for i := range out {
		out[i] = fakeollama.Start(t, opts)
	}
	return out
}

// flagAvailable reports whether `aivonx <cmd> --help` lists --flag.
func flagAvailable(t testing.TB, cmd, flag string) bool {
	t.Helper()
	out, _ := runCLI(t, nil, cmd, "--help")
	return strings.Contains(out, "--"+flag+" ")
}
