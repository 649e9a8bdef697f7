package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/worker"
)

const stackChildEnv = "AIVONX_TEST_STACK_CHILD"

// A goroutine's stack starts small and doubles whenever a call needs more
// than it has; a stream's goroutine keeps the doubled stack for as long as
// the stream lasts. At thousands of streams, 8 KiB more per stream is a
// fifth of the proxy's memory, so the whole path of a stream (reading the
// request, dialing the node, writing the response head, relaying tokens)
// must fit in 8 KiB. The test streams in a child process whose stacks are
// capped at 8 KiB: a path that needs more crashes the child, and the crash
// names the path.
func TestStreamFitsInitialStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation deepens every call; make test runs this test without it")
	}
	if os.Getenv(stackChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStreamFitsInitialStack$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), stackChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("a stream needed more than 8 KiB of stack (%v):\n%s", err, out)
		}
		if !strings.Contains(string(out), "streams served") {
			t.Fatalf("the child did not stream:\n%s", out)
		}
		return
	}

	ctx := context.Background()
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5, TokenDelay: 5 * time.Millisecond})
	// The embedded mode's wiring on a proxied route: an accounts store (so
	// the API key check is on the path) and the access log, at a level
	// that keeps the line itself out (it is written after the stream).
	accounts, err := sqlite.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer accounts.Close()
	fs := &staticStore{settings: fleet.DefaultSettings(),
		nodes: []fleet.Node{{ID: 1, Name: "nodeA", BaseURL: node.URL(), Enabled: true}}}
	board := memory.NewStatusBoard()
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, fs, board, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := app.New(app.Config{RefreshEvery: time.Hour, Auth: app.AuthConfig{SecretKey: testSecret}},
		app.Deps{Fleet: fs, Statuses: board, InFlight: memory.NewInFlight(), Log: log, Accounts: accounts})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	chat := func(c *http.Client) {
		resp, err := c.Post(srv.URL+"/api/chat", "application/json",
			strings.NewReader(`{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"done":true`) {
			t.Errorf("status %d: %s", resp.StatusCode, b)
		}
	}
	chat(http.DefaultClient) // loads the fleet view, which is not on a stream's path

	// From here on every goroutine is capped. Concurrent streams on new
	// client connections make the proxy dial new node connections too.
	debug.SetMaxStack(8 << 10)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { chat(client) })
	}
	wg.Wait()
	debug.SetMaxStack(1 << 30)
	if !t.Failed() {
		t.Log("streams served")
	}
}
