package redis_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(holdLease())
	}
	goredis.SetLogger(redis.DriverLogger{}) // the tests stop Redis on purpose
	os.Exit(testenv.Main(m))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client of the shared test Redis and a key prefix of
// this test's own.
func newClient(t testing.TB) (*goredis.Client, string) {
	t.Helper()
	url, prefix := testenv.Redis(t)
	return open(t, url), prefix
}

func open(t testing.TB, url string) *goredis.Client {
	t.Helper()
	c, err := redis.Open(testCtx(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// assertTTLs checks that every key under prefix expires by itself.
func assertTTLs(t *testing.T, c *goredis.Client, prefix string) {
	t.Helper()
	ctx := testCtx(t)
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl == -2 {
			continue // gone since KEYS (a lease removed in the background)
		}
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The helper process: takes one lease and holds it (renewing) until it is
// killed. See TestInFlight_KilledProcessLeaksNothing.
const helperEnv = "AIVONX_TEST_INFLIGHT_HELPER"

func holdLease() int {
	f := strings.Fields(os.Getenv(helperEnv)) // url prefix ttl node
	ttl, _ := time.ParseDuration(f[2])
	node, _ := strconv.ParseInt(f[3], 10, 64)
	c, err := redis.Open(context.Background(), f[0])
	if err != nil {
		fmt.Println(err)
		return 1
	}
	inflight := redis.NewInFlight(c, f[1], ttl, nil)
	if _, _, err := inflight.Acquire(context.Background(), []int64{node}); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("acquired")
	select {}
}
