package redis_test

import (
	"errors"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

var _ app.RateLimiter = (*redis.RateLimiter)(nil)

// Two replicas spend one budget: a burst, then one request per interval.
func TestRateLimiter(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	r1, r2 := redis.NewRateLimiter(c, prefix), redis.NewRateLimiter(c, prefix)
	ctx := testCtx(t)
	take := func(l *redis.RateLimiter, name string) time.Duration {
		t.Helper()
		wait, err := l.Take(ctx, name, 120, 3) // one every 500 ms after a burst of 3
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	for i, l := range []*redis.RateLimiter{r1, r2, r1} {
		if wait := take(l, "key:1"); wait != 0 {
			t.Fatalf("request %d of the burst waits %v", i+1, wait)
		}
	}
	wait := take(r2, "key:1")
	if wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("the fourth request across replicas waits %v, want (0, 500ms]", wait)
	}
	if again := take(r1, "key:1"); again <= 0 {
		t.Fatalf("a refused request was counted: the next one waits %v", again)
	}
	// A refund gives back what a Take spent, on any replica, and no more:
	// refunds beyond the budget do not raise it.
	if w := take(r2, "key:4"); w != 0 {
		t.Fatalf("a fresh budget waits %v", w)
	}
	for range 3 {
		if err := r1.Refund(ctx, "key:4", 120, 3); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if w := take(r2, "key:4"); w != 0 {
			t.Fatalf("request %d after refunds waits %v", i+1, w)
		}
	}
	if w := take(r1, "key:4"); w <= 0 {
		t.Fatal("refunds raised the budget above its burst")
	}
	if err := r2.Refund(ctx, "key:4", 120, 3); err != nil {
		t.Fatal(err)
	}
	if w := take(r1, "key:4"); w != 0 {
		t.Fatalf("after a refund of a spent budget the request waits %v", w)
	}
	if w := take(r1, "key:2"); w != 0 {
		t.Fatalf("another budget waits %v", w)
	}
	time.Sleep(wait + 20*time.Millisecond)
	if w := take(r2, "key:1"); w != 0 {
		t.Fatalf("after the wait the request still waits %v", w)
	}
	if w, err := r1.Take(ctx, "key:3", 0, 0); w != 0 || err != nil {
		t.Fatalf("no limit: %v, %v", w, err)
	}
	assertTTLs(t, c, prefix)
}

func TestRateLimiter_RedisDown(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	l := redis.NewRateLimiter(open(t, srv.URL()), "aivonx:")
	srv.Stop()
	if _, err := l.Take(testCtx(t), "key:1", 60, 1); !errors.Is(err, fleet.ErrUnavailable) {
		t.Fatalf("Take with Redis down = %v, want ErrUnavailable", err)
	}
}
