// Package uitest drives the web UI in headless Chromium against the real
// binary and fake Ollama nodes. The browser side is browser.mjs (Node with
// playwright-core); this file builds and starts everything, talks to the
// script over stdin/stdout, and uses the API key the script created.
package uitest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
)

const chromiumPath = "/usr/bin/chromium"

// missing skips the test on a developer machine and fails it in CI, where
// the packages are installed (see .ci/run).
func missing(t *testing.T, what, hint string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI installs it: %s)", what, hint)
	}
	t.Skipf("%s is missing; to run the browser test: %s", what, hint)
}

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing(t, chromiumPath, "apt-get install -y chromium")
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node", "apt-get install -y nodejs npm")
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(here, "..", "..")
	artifacts := filepath.Join(root, "test-artifacts", "ui")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(artifacts, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	installNodeModules(t, ctx, here)
	bin := buildBinary(t, ctx, root)

	// Three fake nodes: the first is configured at start, the second is added
	// in the UI, the third backs the node with a hostile name.
	opts := fakeollama.Options{Models: []string{"llama3:latest"}, TokenDelay: 100 * time.Millisecond}
	fake1, fake2, fake3 := fakeollama.Start(t, opts), fakeollama.Start(t, opts), fakeollama.Start(t, opts)

	password := randomHex(t, 12)
	base := startServer(t, ctx, bin, artifacts, fake1.URL(), password)

	cmd := exec.CommandContext(ctx, nodeBin, "browser.mjs")
	cmd.Dir = here
	cmd.Env = append(os.Environ(),
		"AIVONX_URL="+base,
		"AIVONX_USER=admin",
		"AIVONX_PASSWORD="+password,
		"NODE2_URL="+fake2.URL(),
		"NODE3_URL="+fake3.URL(),
		"ARTIFACTS="+artifacts,
		"CHROMIUM="+chromiumPath,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// The script reports one JSON line per step, and one with the API key it
	// read from the page, which we use like any client would.
	var passed, failed []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var ev struct {
			Step  string `json:"step"`
			OK    bool   `json:"ok"`
			MS    int    `json:"ms"`
			Error string `json:"error"`
			Key   string `json:"key"`
			Note  string `json:"note"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Logf("browser: %s", sc.Text())
			continue
		}
		switch {
		case ev.Key != "":
			result := useAPIKey(t, base, ev.Key)
			fmt.Fprintln(stdin, result)
		case ev.Note != "":
			t.Logf("browser note: %s", ev.Note)
		case ev.OK:
			passed = append(passed, ev.Step)
			t.Logf("PASS %-18s %5d ms", ev.Step, ev.MS)
		default:
			failed = append(failed, ev.Step)
			t.Errorf("FAIL %-18s %s", ev.Step, ev.Error)
		}
	}
	stdin.Close()
	err = cmd.Wait()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("browser stderr:\n%s", s)
	}
	if err != nil && len(failed) == 0 {
		t.Errorf("browser script: %v", err)
	}
	t.Logf("browser steps: %d passed, %d failed (%s); screenshots in %s",
		len(passed), len(failed), strings.Join(failed, ", "), artifacts)
}

// useAPIKey calls /api/chat with the key the UI showed, as curl would, and
// answers the script with "ok" or the reason it failed.
func useAPIKey(t *testing.T, base, key string) string {
	t.Helper()
	body := `{"model":"llama3:latest","messages":[{"role":"user","content":"Say hi"}],"stream":false}`
	req, _ := http.NewRequest(http.MethodPost, base+"/api/chat", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("FAIL api-key-chat       %v", err)
		return "error " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var chat struct {
		Message struct{ Content string } `json:"message"`
		Done    bool                     `json:"done"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &chat) != nil || !chat.Done || chat.Message.Content == "" {
		t.Errorf("FAIL api-key-chat       /api/chat with the UI's key = %d %s", resp.StatusCode, bytes.TrimSpace(b))
		return fmt.Sprintf("error status %d", resp.StatusCode)
	}
	t.Logf("PASS api-key-chat       /api/chat with the key from the page answered %q", chat.Message.Content)
	return "ok"
}

func installNodeModules(t *testing.T, ctx context.Context, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		missing(t, "npm", "apt-get install -y npm")
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
}

func buildBinary(t *testing.T, ctx context.Context, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aivonx")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/aivonx")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startServer runs `aivonx serve` in the embedded mode with fast health
// checks, waits until it answers, and stops it when the test ends. Its log
// goes to server.log next to the screenshots.
func startServer(t *testing.T, ctx context.Context, bin, artifacts, node, password string) string {
	t.Helper()
	addr := freeAddr(t)
	logFile, err := os.Create(filepath.Join(artifacts, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	args := []string{"serve", "--addr", addr, "--data-dir", dataDir, "--node", node,
		"--health-interval", "1s", "--rise", "1", "--log-level", "debug"}
	// The logs page reads the log file, when this build can write one.
	if help, _ := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput(); bytes.Contains(help, []byte("--log-file")) {
		args = append(args, "--log-file", filepath.Join(dataDir, "aivonx.log"))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "AIVONX_ADMIN_PASSWORD="+password)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logFile.Close()
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/api/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("aivonx serve did not answer on %s (see %s/server.log)", addr, artifacts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
