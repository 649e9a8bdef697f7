package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/internal/fakeollama"
)

func runDoctorCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cliApp := newCLI()
	cliApp.Writer = &out
	cliApp.ExitErrHandler = func(*cli.Context, error) {}
	err := cliApp.Run(append([]string{"aivonx", "doctor"}, args...))
	return out.String(), err
}

func TestDoctor(t *testing.T) {
	for _, env := range []string{"DATABASE_URL", "AIVONX_DATABASE_URL", "REDIS_URL", "AIVONX_REDIS_URL", "AIVONX_SECRET_KEY"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	store, err := sqlite.Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateNode(context.Background(), fleet.Node{Name: "gpu-1", BaseURL: node.URL(), Enabled: true}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	// A running serve, as far as /api/health goes.
	lastPass := time.Now().Add(-3 * time.Second)
	serve := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"worker": map[string]any{"last_pass": lastPass}})
	}))
	defer serve.Close()

	// What serve refuses at start, doctor (run with serve's flags) fails.
	t.Run("FlagsServeRefuses", func(t *testing.T) {
		for _, args := range [][]string{
			{"--log-level", "verbose"},
			{"--log-file", t.TempDir()},
			{"--request-log-days", "-1"},
			{"--node-allow-cidr", "10.0.0.0/33"},
			{"--trusted-proxy", "nope"},
			{"--strategy", "round_robin_please"},
			{"--node", "ftp://gpu-1"},
		} {
			out, err := runDoctorCLI(t, append([]string{"--data-dir", dir, "--url", serve.URL}, args...)...)
			if err == nil || !strings.Contains(out, "✗ configuration") || !strings.Contains(out, "serve would refuse to start") {
				t.Errorf("doctor %v: err = %v\n%s", args, err, out)
			}
		}
	})

	t.Run("OK", func(t *testing.T) {
		out, err := runDoctorCLI(t, "--data-dir", dir, "--url", serve.URL)
		if err != nil {
			t.Fatalf("err = %v\n%s", err, out)
		}
		for _, want := range []string{"✓ configuration", "mode=embedded", "✓ store", "1 node(s)", "✓ node gpu-1", "Ollama 0.17.4", "llama3:latest", "✓ worker", "all checks passed"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("FindsServeByItsAddr", func(t *testing.T) {
		// "Run it with the same flags and environment as serve": serve's
		// address says where to ask, an unspecified host meaning this machine.
		_, port, _ := strings.Cut(strings.TrimPrefix(serve.URL, "http://"), ":")
		t.Setenv("AIVONX_DOCTOR_URL", "")
		t.Setenv("AIVONX_ADDR", ":"+port)
		out, err := runDoctorCLI(t, "--data-dir", dir)
		if err != nil || !strings.Contains(out, "✓ worker") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		t.Setenv("AIVONX_ADDR", "")
		out, err = runDoctorCLI(t, "--data-dir", dir, "--addr", "0.0.0.0:"+port)
		if err != nil || !strings.Contains(out, "✓ worker") {
			t.Fatalf("--addr: err = %v\n%s", err, out)
		}
	})

	t.Run("ShortSecretFails", func(t *testing.T) {
		// serve refuses it, so doctor must not pass it.
		out, err := runDoctorCLI(t, "--data-dir", dir, "--url", serve.URL, "--secret-key", "short")
		if err == nil || !strings.Contains(out, "✗ secret") || strings.Contains(out, "short ") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})

	t.Run("NodeDownAndStalePass", func(t *testing.T) {
		node.Stop()
		defer node.Restart()
		lastPass = time.Now().Add(-time.Hour)
		out, err := runDoctorCLI(t, "--data-dir", dir, "--url", serve.URL, "--timeout", "1s")
		if err == nil {
			t.Fatalf("doctor passed with a dead node:\n%s", out)
		}
		for _, want := range []string{"✗ node gpu-1", "connection refused", "fix: check that Ollama runs", "✗ worker", "fix:"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("SharedModeMasksSecrets", func(t *testing.T) {
		out, err := runDoctorCLI(t, "--database-url", "postgres://app:hunter2@127.0.0.1:1/db?sslmode=disable&password=x",
			"--redis-url", "redis://:s3cret@127.0.0.1:1/0", "--timeout", "1s")
		if err == nil {
			t.Fatalf("doctor passed without a database:\n%s", out)
		}
		if strings.Contains(out, "hunter2") || strings.Contains(out, "s3cret") || !strings.Contains(out, "app:***@") {
			t.Fatalf("secrets not masked:\n%s", out)
		}
		for _, want := range []string{"✗ database", "✗ redis", "✗ secret", "AIVONX_SECRET_KEY"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		// The nodes were never read: that is not an empty fleet.
		if strings.Contains(out, "no node configured") {
			t.Errorf("an unreachable database reported as no nodes:\n%s", out)
		}
	})
}

func TestMaskURL(t *testing.T) {
	for raw, want := range map[string]string{
		"postgres://app:hunter2@db:5432/aivonx?sslmode=disable&password=x": "postgres://app:***@db:5432/aivonx?password=***&sslmode=disable",
		"redis://:s3cret@cache:6379/0":                                     "redis://:***@cache:6379/0",
		"postgres://db/aivonx":                                             "postgres://db/aivonx",
		"host=db user=app password=SuperSecret123 dbname=aivonx":           "host=db user=app password=*** dbname=aivonx",
		"host=db password = 'with \\' quote and space' sslpassword=k":      "host=db password = *** sslpassword=***",
		"admin:hunter2@10.0.0.5:11434":                                     "admin:***@10.0.0.5:11434",
		"":                                                                 "(unset)",
	} {
		if got := maskURL(raw); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
