package clienttest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// nodeTokens is the answer length for the Node.js scripts: long enough that
// an abort after two tokens, at the 50 ms token delay the abort tests set,
// lands well before the answer would end by itself.
const nodeTokens = 20

// TestNodeClients runs the real npm clients (ollama, openai,
// @langchain/ollama; pinned in package.json) against `aivonx serve`, one
// `node --test` per script, each with its own proxy and fake nodes so the
// faults one script switches on cannot reach another.
func TestNodeClients(t *testing.T) {
	node, npm := requireTool(t, "node"), requireTool(t, "npm")
	ensureNodeModules(t, npm)

	for _, script := range []string{"ollama.test.mjs", "openai.test.mjs", "langchain.test.mjs"} {
		t.Run(strings.TrimSuffix(script, ".test.mjs"), func(t *testing.T) {
			t.Parallel()
			st := startStack(t, defaultNodes(func(o *fakeollama.Options) {
				o.Tokens = nodeTokens
				o.Control = true
			}))
			runNodeTest(t, node, script, st)
		})
	}
}

// requireTool finds a command, skipping the test when it is missing, except
// under CI=true, where a missing tool is a failure.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed, and CI=true: the real-client tests must run in CI (install Node.js 20+ with npm)", name)
	}
	t.Skipf("%s is not installed: skipping the Node.js client tests (install Node.js 20+ with npm; under CI=true this is a failure)", name)
	return ""
}

// ensureNodeModules runs `npm ci` unless node_modules was installed from the
// current package-lock.json (its hash is kept in node_modules/.lock-hash).
func ensureNodeModules(t *testing.T, npm string) {
	t.Helper()
	lock, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatalf("reading package-lock.json: %v", err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join("node_modules", ".lock-hash")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in internal/clienttest: %v\n%s", err, out)
	}
	if err := os.WriteFile(stamp, []byte(want+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("npm ci took %v", time.Since(start).Round(time.Millisecond))
}

// runNodeTest runs one script with `node --test`, streaming its report into
// the test log, and fails the test if node exits non-zero.
func runNodeTest(t *testing.T, node, script string, st *stack) {
	t.Helper()
	var fakes []string
	for _, n := range st.Nodes {
		fakes = append(fakes, n.URL())
	}
	toks := make([]string, nodeTokens)
	for i := range toks {
		toks[i] = fakeollama.Token(i)
	}
	env := map[string]any{
		"AIVONX_URL":   st.URL,
		"FAKE_NODES":   strings.Join(fakes, ","),
		"FAKE_TOKENS":  toks,
		"FAKE_VERSION": "0.17.4",
		"CHAT_MODEL":   chatModel,
		"EMBED_MODEL":  embedModel,
		"MODELS":       []string{"llama3:latest", "nomic-embed-text:latest", onlyModelB},
		"LOADED":       []string{"llama3:latest", onlyModelB},
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", script)
	cmd.Env = os.Environ()
	for k, v := range env {
		s, ok := v.(string)
		if !ok {
			b, _ := json.Marshal(v)
			s = string(b)
		}
		cmd.Env = append(cmd.Env, k+"="+s)
	}
	cmd.Env = append(cmd.Env, "NO_COLOR=1")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		t.Fatalf("starting node: %v", err)
	}
	pw.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
	}()
	err = cmd.Wait()
	wg.Wait()
	elapsed := time.Since(start).Round(time.Millisecond)
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node --test %s timed out after %v", script, elapsed)
	case errors.As(err, &exitErr):
		t.Fatalf("node --test %s failed (exit %d) in %v: see the report above", script, exitErr.ExitCode(), elapsed)
	case err != nil:
		t.Fatalf("node --test %s: %v", script, err)
	}
	t.Logf("node --test %s passed in %v", script, elapsed)
}
