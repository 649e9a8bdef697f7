package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis returns a Redis URL and a key prefix unique to this test, such as
// "aivonxtest:1f2e3d4c5b6a7988:". The test must only use keys starting with
// the prefix; they are deleted (SCAN + UNLINK) when the test ends.
//
// The server is AIVONX_TEST_REDIS_URL when set, otherwise a throwaway server
// shared by the whole test process (see the package documentation).
func Redis(tb testing.TB) (url string, prefix string) {
	tb.Helper()
	url = os.Getenv(EnvRedisURL)
	if url == "" {
		url = sharedRedis.url(tb, "Redis", LaunchRedis)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvRedisURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(opts)
	err = c.Ping(ctx).Err()
	_ = c.Close()
	if err != nil {
		tb.Fatalf("testenv: redis %s: %v", url, err)
	}

	prefix = "aivonxtest:" + randomHex(8) + ":"
	tb.Cleanup(func() {
		if err := deletePrefix(opts, prefix); err != nil {
			tb.Logf("testenv: delete redis keys %s*: %v", prefix, err)
		}
	})
	return url, prefix
}

func deletePrefix(opts *redis.Options, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := redis.NewClient(opts)
	defer c.Close()
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := c.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// RedisServer is a redis-server owned by one test (or by one process, for the
// shared throwaway server). It has no persistence: a restart empties it, but
// it keeps its port, so the URL stays valid.
type RedisServer struct {
	process
	bin     string
	Version string // e.g. "7.0.15"
}

// StartRedis starts a redis-server dedicated to this test; it is stopped when
// the test ends. Use it for tests that stop and restart Redis; others should
// use [Redis]. Skipped (failed under CI=true) when redis-server is not installed.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	s, err := LaunchRedis()
	if err != nil {
		unavailable(tb, fmt.Errorf("Redis: %w", err))
	}
	s.ownedBy(tb)
	return s
}

// LaunchRedis starts a throwaway redis-server outside of a test (the
// withservices command uses it). The caller must Close it. Errors wrap
// [ErrNotInstalled] when redis-server is not found.
func LaunchRedis() (*RedisServer, error) {
	sweepStale()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("no redis-server on PATH and %s not set: %w", EnvRedisURL, ErrNotInstalled)
		}
	}
	s := &RedisServer{process: process{name: "redis-server", stopSig: syscall.SIGTERM}, bin: bin}
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if v, ok := strings.CutPrefix(f, "v="); ok {
				s.Version = v
			}
		}
	}
	if s.root, err = makeRoot("redis", nil); err != nil {
		return nil, err
	}
	s.logPath = filepath.Join(s.root, "redis.log")
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			break
		}
		err = s.start()
		if err == nil || attempt >= 4 || !strings.Contains(err.Error(), "already in use") {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(s.root)
		return nil, err
	}
	return s, nil
}

// URL returns the server's URL, database 0.
func (s *RedisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }

// Start starts the server again after Stop, on the same port (empty: Redis
// here keeps no data). It does nothing if the server is running. Like t.Fatal,
// call it from the test's goroutine.
func (s *RedisServer) Start() {
	if err := s.start(); err != nil {
		s.fatal(err)
	}
}

func (s *RedisServer) start() error {
	return s.launch(func(log *os.File) *exec.Cmd {
		cmd := exec.Command(s.bin,
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--daemonize", "no",
			"--dir", s.root,
		)
		cmd.Dir = s.root
		cmd.Stdout, cmd.Stderr = log, log
		return cmd
	}, func(context.Context) error { return pingRedis(s.port) }, 30*time.Second, 10*time.Millisecond)
}

// pingRedis sends a raw PING, avoiding a client's retries and pools.
func pingRedis(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}
