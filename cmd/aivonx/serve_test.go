package main

import (
	"io"
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
