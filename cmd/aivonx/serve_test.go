package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
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
