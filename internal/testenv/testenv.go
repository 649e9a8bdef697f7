// Package testenv gives tests real PostgreSQL and Redis servers.
//
// Shared servers (cheap, isolated per test):
//
//   - [Postgres] returns a DSN whose connections all use a fresh schema that
//     only this test sees; the schema is dropped when the test ends.
//   - [Redis] returns a URL and a unique key prefix; keys with that prefix are
//     deleted when the test ends.
//
// Both use the server named by AIVONX_TEST_DATABASE_URL / AIVONX_TEST_REDIS_URL
// when set (this is what `make test` does through the withservices command, so
// that all test packages share one instance). Otherwise the first call in a test
// process starts a throwaway server from the installed binaries and every later
// call reuses it. If the binaries are missing the test is skipped, except when
// CI=true, where it fails: a missing service must never pass silently in CI.
//
// Dedicated servers, for fault tests that stop and restart the service:
// [StartPostgres] and [StartRedis].
//
// Packages that use Postgres or Redis should stop the throwaway servers when
// their tests are done:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// Without it the servers are still killed when the test binary exits (they are
// started with a parent-death signal) but their temporary directories are left
// behind until the next run of testenv removes them.
//
// Install the binaries on Debian with: apt-get install -y postgresql redis-server
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Environment variables naming external servers to use instead of throwaway ones.
const (
	EnvDatabaseURL = "AIVONX_TEST_DATABASE_URL"
	EnvRedisURL    = "AIVONX_TEST_REDIS_URL"
)

// InstallHint is the command that installs the server binaries on Debian.
const InstallHint = "apt-get install -y postgresql redis-server"

// ErrNotInstalled is returned (wrapped) when the server binaries are missing.
var ErrNotInstalled = errors.New("not installed")

// Main runs the tests and then stops the throwaway servers that the process
// started. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// StopShared stops the process-wide throwaway servers started by [Postgres] and
// [Redis], if any. [Main] calls it; later calls to Postgres or Redis fail.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	sharedStopped = true
	if sharedPG.srv != nil {
		_ = sharedPG.srv.Close()
	}
	if sharedRedis.srv != nil {
		_ = sharedRedis.srv.Close()
	}
}

var (
	sharedMu      sync.Mutex
	sharedStopped bool
	sharedPG      sharedServer[*PostgresServer]
	sharedRedis   sharedServer[*RedisServer]
)

// sharedServer is a throwaway server that the whole test process shares,
// launched by the first test that needs it and stopped by [StopShared].
type sharedServer[S interface {
	comparable
	URL() string
	Close() error
}] struct {
	once sync.Once
	srv  S
	err  error
}

// url launches the server on first use and returns its URL; a server that
// cannot be launched makes the test skip, or fail in CI (see unavailable).
func (s *sharedServer[S]) url(tb testing.TB, what string, launch func() (S, error)) string {
	tb.Helper()
	s.once.Do(func() {
		srv, err := launch()
		sharedMu.Lock()
		defer sharedMu.Unlock()
		if err == nil && sharedStopped {
			_ = srv.Close()
			err = fmt.Errorf("shared servers already stopped")
		}
		s.srv, s.err = srv, err
	})
	if s.err != nil {
		unavailable(tb, fmt.Errorf("throwaway %s: %w", what, s.err))
	}
	return s.srv.URL()
}

// InCI reports whether the CI environment variable says we run in CI.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// unavailable skips the test, or fails it in CI, because a service is missing.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrNotInstalled) && !InCI() {
		tb.Skipf("testenv: %v (install with: %s)", err, InstallHint)
	}
	tb.Fatalf("testenv: %v", err)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatalf("testenv: free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// randomHex returns 2n random lowercase hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// The kernel sends a child's parent-death signal when the *thread* that forked
// it exits, not the process. Go may retire threads, so all service processes
// are forked from one goroutine locked to a thread that never exits: they are
// then killed exactly when the test process dies, however it dies.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startChild starts cmd in its own process group (so a terminal's Ctrl-C goes
// to the test binary, which then stops the services in order) with SIGKILL as
// its parent-death signal.
func startChild(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReq {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReq <- spawnRequest{cmd, done}
	return <-done
}
