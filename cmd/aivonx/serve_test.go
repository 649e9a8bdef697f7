package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/infra/sqlite"
)

// TestServeRefusesNodeWithoutEchoingItsPassword: startup errors end up in
// journals and container logs.
func TestServeRefusesNodeWithoutEchoingItsPassword(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_NODES"} {
		t.Setenv(env, "")
	}
	cliApp := newCLI()
	cliApp.Writer, cliApp.ErrWriter = io.Discard, io.Discard
	cliApp.ExitErrHandler = func(*cli.Context, error) {}
	err := cliApp.Run([]string{"aivonx", "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--node", "http://ops:nodepw123@127.0.0.1:11434"})
	if err == nil {
		t.Fatal("serve accepted a node URL with credentials")
	}
	if msg := err.Error(); strings.Contains(msg, "nodepw123") || !strings.Contains(msg, "credentials") {
		t.Fatalf("error %q: want the refusal without the password", msg)
	}
}

func TestNegativeDurationNamesTheFlag(t *testing.T) {
	cliApp := newCLI()
	cliApp.Writer, cliApp.ErrWriter = io.Discard, io.Discard
	cliApp.ExitErrHandler = func(*cli.Context, error) {}
	err := cliApp.Run([]string{"aivonx", "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--health-interval", "-5s"})
	if err == nil || !strings.Contains(err.Error(), "--health-interval must not be negative") {
		t.Fatalf("err = %v, want the flag named", err)
	}
}

// TestWorkerNeedsSharedState: the worker refuses the embedded mode before
// opening anything, and takes --log-file like serve, so that its health
// events can be kept in a file of its own.
func TestWorkerNeedsSharedState(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_LOG_FILE"} {
		t.Setenv(env, "")
	}
	t.Chdir(t.TempDir())
	if _, err := runCLI(t, "", "worker", "--once"); err == nil || !strings.Contains(err.Error(), "writes shared state") {
		t.Fatalf("worker without a database: %v", err)
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Fatalf("the refused worker created %v", entries)
	}
	log := filepath.Join(t.TempDir(), "worker.log")
	_, err := runCLI(t, "", "worker", "--once", "--log-file", log, "--database-url", "postgres://127.0.0.1:1/x?connect_timeout=1", "--redis-url", "redis://127.0.0.1:1")
	if err == nil || strings.Contains(err.Error(), "flag provided but not defined") {
		t.Fatalf("worker --log-file with an unreachable database: %v", err)
	}
}

// TestOneServePerDataDir: a second serve on the same embedded store is
// refused (it would route with its own in-flight counts); the lock goes
// when the first one starts shutting down, so a restart can overlap the
// drain.
func TestOneServePerDataDir(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_NODES"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		a := newCLI()
		a.Writer, a.ErrWriter = io.Discard, io.Discard
		a.ExitErrHandler = func(*cli.Context, error) {}
		first <- a.RunContext(ctx, []string{"aivonx", "serve", "--addr", addr, "--data-dir", dir, "--node", "http://127.0.0.1:1", "--log-level", "error"})
	}()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/api/health"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the first serve did not start")
		}
	}
	second := func() error {
		a := newCLI()
		a.Writer, a.ErrWriter = io.Discard, io.Discard
		a.ExitErrHandler = func(*cli.Context, error) {}
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		return a.RunContext(sctx, []string{"aivonx", "serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"})
	}
	if err := second(); err == nil || !strings.Contains(err.Error(), "another aivonx serve is using") {
		t.Fatalf("second serve on one data dir: %v; want it refused", err)
	}
	cancel()
	if err := <-first; err != nil {
		t.Fatalf("first serve: %v", err)
	}
	if err := second(); err != nil {
		t.Fatalf("serve after the first stopped: %v", err)
	}
}

// TestNoUpgradeUnderARunningServe: a store older than this binary's schema
// that a serve holds (an older version, then) is migrated neither by a CLI
// command nor by a second serve, which is refused before it touches the
// store; once no serve holds it, the CLI may upgrade it.
func TestNoUpgradeUnderARunningServe(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_NODES"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	store, err := sqlite.Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	version := func() int {
		var v int
		if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	current := version()
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, current-1)); err != nil {
		t.Fatal(err)
	}

	unlock, err := lockDataDir(dir) // the older serve
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	a := newCLI()
	a.Writer, a.ErrWriter = io.Discard, io.Discard
	a.ExitErrHandler = func(*cli.Context, error) {}
	err = a.Run([]string{"aivonx", "nodes", "list", "--data-dir", dir})
	if err == nil || !strings.Contains(err.Error(), "stop that serve") {
		t.Fatalf("nodes list under a running older serve: %v; want a refusal to upgrade", err)
	}
	err = a.Run([]string{"aivonx", "serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"})
	if err == nil || !strings.Contains(err.Error(), "another aivonx serve is using") {
		t.Fatalf("second serve: %v; want it refused", err)
	}
	if v := version(); v != current-1 {
		t.Fatalf("the store was migrated to %d under the running serve", v)
	}

	unlock()
	if err := upgradeUnlessServed(dir)(current-1, current); err != nil {
		t.Fatalf("with no serve running: %v; want the upgrade allowed", err)
	}
}

// TestLogFileMustBeAWritableFile: a --log-file that names a directory is
// refused, not renamed away by the log rotation; one that cannot be
// written is refused at start, not dropped line by line.
func TestLogFileMustBeAWritableFile(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_NODES", "AIVONX_LOG_FILE"} {
		t.Setenv(env, "")
	}
	root := t.TempDir()
	logs := filepath.Join(root, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(logs, "other-app.log")
	if err := os.WriteFile(other, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newCLI()
	a.Writer, a.ErrWriter = io.Discard, io.Discard
	a.ExitErrHandler = func(*cli.Context, error) {}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // a serve that starts stops
	defer cancel()
	err := a.RunContext(ctx, []string{"aivonx", "serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(root, "data"), "--log-file", logs})
	if err == nil || !strings.Contains(err.Error(), "--log-file") || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("serve --log-file naming a directory: %v; want it refused", err)
	}
	if b, err := os.ReadFile(other); err != nil || string(b) != "precious\n" {
		t.Fatalf("the directory's file after the refusal: %q, %v", b, err)
	}
	// /proc refuses a new file to root too.
	if err := checkLogFile("/proc/self/aivonx.log"); err == nil {
		t.Fatal("an unwritable log file was accepted")
	}
	if err := checkLogFile(filepath.Join(root, "new", "aivonx.log")); err != nil {
		t.Fatalf("a log file in a new directory: %v", err)
	}
}
