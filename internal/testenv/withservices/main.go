// Command withservices runs a command with a PostgreSQL and a Redis server for
// its tests:
//
//	go run ./internal/testenv/withservices -- go test -race -count=1 ./...
//
// For each of AIVONX_TEST_DATABASE_URL and AIVONX_TEST_REDIS_URL that is not
// set, it starts one throwaway server (PostgreSQL with a database aivonx_test)
// and sets the variable for the command, so all test packages share one
// instance through package testenv instead of each starting its own. The
// command gets this process's stdin, stdout and stderr; SIGINT and SIGTERM are
// forwarded to it. The servers are stopped when it ends, and withservices exits
// with its exit code.
//
// When a server's binaries are not installed, the command runs without it (its
// tests skip), except under CI=true, where withservices fails.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aivonx/aivonx/internal/testenv"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withservices [--] command [args...]")
		return 2
	}

	// Catch signals from the start, so that an early Ctrl-C still stops the servers.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	start := time.Now()
	env := os.Environ()
	var notes []string
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	missing := func(what string, err error) int {
		if errors.Is(err, testenv.ErrNotInstalled) && !testenv.InCI() {
			notes = append(notes, fmt.Sprintf("no %s (%v; install with: %s)", what, err, testenv.InstallHint))
			return 0
		}
		fmt.Fprintf(os.Stderr, "withservices: %s: %v\n", what, err)
		return 1
	}

	if v := os.Getenv(testenv.EnvDatabaseURL); v != "" {
		notes = append(notes, "PostgreSQL from "+testenv.EnvDatabaseURL)
	} else if pg, err := testenv.LaunchPostgres(); err != nil {
		if code := missing("PostgreSQL", err); code != 0 {
			return code
		}
	} else {
		closers = append(closers, pg.Close)
		env = append(env, testenv.EnvDatabaseURL+"="+pg.URL())
		notes = append(notes, fmt.Sprintf("PostgreSQL %s at %s", pg.Version, pg.URL()))
	}
	if v := os.Getenv(testenv.EnvRedisURL); v != "" {
		notes = append(notes, "Redis from "+testenv.EnvRedisURL)
	} else if rs, err := testenv.LaunchRedis(); err != nil {
		if code := missing("Redis", err); code != 0 {
			return code
		}
	} else {
		closers = append(closers, rs.Close)
		env = append(env, testenv.EnvRedisURL+"="+rs.URL())
		notes = append(notes, fmt.Sprintf("Redis %s at %s", rs.Version, rs.URL()))
	}
	fmt.Fprintf(os.Stderr, "withservices: %s (%.1fs)\n", strings.Join(notes, "; "), time.Since(start).Seconds())

	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "withservices: %v before the command started\n", s)
		return 130
	default:
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "withservices: %v\n", err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "withservices: %v\n", err)
	return 1
}
