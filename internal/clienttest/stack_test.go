package clienttest

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
)

// aivonxBin is the `aivonx` binary built once by TestMain.
var aivonxBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// A prebuilt binary (e.g. from an earlier CI step, or a patched build
	// to check that these tests catch a proxy bug) can be given instead.
	if bin := os.Getenv("CLIENTTEST_AIVONX_BIN"); bin != "" {
		aivonxBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "aivonx-clienttest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "clienttest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	aivonxBin = filepath.Join(dir, "aivonx")
	start := time.Now()
	// A plain build (no -race): the binary is the thing under test, and a
	// race build of it would cost a minute on a cold cache.
	cmd := exec.Command("go", "build", "-o", aivonxBin, "github.com/aivonx/aivonx/cmd/aivonx")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "clienttest: building cmd/aivonx: %v\n%s", err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "clienttest: built cmd/aivonx in %v\n", time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// Models every fake node of a stack serves (the second node adds one), and
// what the tests ask for.
const (
	chatModel  = "llama3"
	embedModel = "nomic-embed-text"
	onlyModelB = "qwen2:0.5b"
	tokens     = 5
)

// defaultNodes are the two fake nodes of most tests: both serve llama3 and
// the embedding model; node B also has qwen2 and reports a newer version, so
// unions and the "lowest version" rule are visible.
func defaultNodes(mod func(*fakeollama.Options)) []fakeollama.Options {
	a := fakeollama.Options{
		Models:    []string{"llama3:latest", "nomic-embed-text:latest"},
		Loaded:    []string{"llama3:latest"},
		Tokens:    tokens,
		CheckHost: true,
	}
	b := a
	b.Models = []string{"llama3:latest", "nomic-embed-text:latest", onlyModelB}
	b.Loaded = []string{onlyModelB}
	b.Version = "0.17.5"
	out := []fakeollama.Options{a, b}
	if mod != nil {
		for i := range out {
			mod(&out[i])
		}
	}
	return out
}

// stack is `aivonx serve` (a subprocess) in front of in-process fake nodes.
type stack struct {
	URL   string
	Nodes []*fakeollama.Server
	log   *testenv.Buffer
}

// startStack starts the fake nodes and the proxy, and waits until the proxy
// answers HEAD / with 200 (it probes the nodes once before listening). All
// of it stops when the test ends; the proxy's log is printed if it failed.
func startStack(t testing.TB, nodes []fakeollama.Options) *stack {
	t.Helper()
	s := &stack{log: &testenv.Buffer{}}
	args := []string{"serve",
		"--data-dir", t.TempDir(),
		"--rise", "1",
		"--health-interval", "1s",
		"--shutdown-timeout", "2s",
		"--log-level", "info",
	}
	for _, o := range nodes {
		n := fakeollama.Start(t, o)
		s.Nodes = append(s.Nodes, n)
		args = append(args, "--node", n.URL())
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // the free port may be taken in between
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.URL = "http://127.0.0.1:" + port
		if lastErr = s.startProxy(t, append(args, "--addr", "127.0.0.1:"+port)); lastErr == nil {
			return s
		}
	}
	t.Fatalf("aivonx serve did not become ready: %v\n--- proxy log ---\n%s", lastErr, s.log.Tail(60))
	return nil
}

func (s *stack) startProxy(t testing.TB, args []string) error {
	cmd := exec.Command(aivonxBin, args...)
	cmd.Env = proxyEnv()
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("aivonx serve exited early: %v", waitErr)
		default:
		}
		if code, err := headRoot(s.URL); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("HEAD %s/ did not answer 200 within 20s", s.URL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("--- aivonx serve log (last lines) ---\n%s", s.log.Tail(80))
		}
	})
	return nil
}

// proxyEnv is the test's environment without anything that would switch the
// proxy to the shared mode or change its settings behind the test's back.
func proxyEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AIVONX_") || strings.HasPrefix(k, "DATABASE_URL") || strings.HasPrefix(k, "REDIS_URL") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func headRoot(base string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, base+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitReady waits until HEAD / answers 200 again (after faults made the
// proxy take every node out).
func (s *stack) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, err := headRoot(s.URL); err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not become ready again within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// Sums over a stack's nodes.

func (s *stack) requests(path string) int {
	n := 0
	for _, f := range s.Nodes {
		n += f.Requests(path)
	}
	return n
}

func (s *stack) active() int {
	n := 0
	for _, f := range s.Nodes {
		n += f.Active()
	}
	return n
}

func (s *stack) cancelled() int {
	n := 0
	for _, f := range s.Nodes {
		n += f.Cancelled()
	}
	return n
}

func (s *stack) each(fn func(*fakeollama.Server)) {
	for _, f := range s.Nodes {
		fn(f)
	}
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
