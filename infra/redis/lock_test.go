package redis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

func TestWorkerLock(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, prefix := newClient(t)
	const ttl = 600 * time.Millisecond
	w1 := redis.NewWorkerLock(c, prefix, ttl)
	w2 := redis.NewWorkerLock(c, prefix, ttl)

	t.Run("Exclusive", func(t *testing.T) {
		unlock, ok, err := w1.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("first TryLock = %v, %v", ok, err)
		}
		if _, ok, err := w2.TryLock(ctx); ok || err != nil {
			t.Fatalf("second TryLock while held = %v, %v; want false, nil", ok, err)
		}
		// Renewed while held: still exclusive after twice the TTL.
		time.Sleep(2 * ttl)
		if _, ok, err := w2.TryLock(ctx); ok || err != nil {
			t.Fatalf("TryLock after 2 TTLs of a renewed lock = %v, %v; want false", ok, err)
		}
		assertTTLs(t, c, prefix)
		unlock()
		unlock() // harmless
		unlock2, ok, err := w2.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock after unlock = %v, %v; want the lock", ok, err)
		}
		unlock2()
	})

	t.Run("KeptAcrossPasses", func(t *testing.T) {
		// A worker that keeps its lock between passes takes it again at
		// each: one hold, renewed once, let go by any of its unlocks.
		u1, ok, err := w1.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock = %v, %v", ok, err)
		}
		u2, ok, err := w1.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock by the holder = %v, %v; want the lock kept", ok, err)
		}
		time.Sleep(2 * ttl)
		if _, ok, _ := w2.TryLock(ctx); ok {
			t.Fatal("another worker took a kept lock")
		}
		u2()
		// Its other unlock belongs to the hold that ended: it must not end
		// the worker's next one.
		u3, ok, err := w1.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock after letting go = %v, %v", ok, err)
		}
		u1()
		if _, ok, _ := w2.TryLock(ctx); ok {
			t.Fatal("an unlock of an ended hold released the next one")
		}
		u3()
		u4, ok, err := w2.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock after the holder let go = %v, %v", ok, err)
		}
		u4()
	})
	t.Run("TakeoverAfterHolderDied", func(t *testing.T) {
		dead := redis.NewWorkerLock(c, prefix, ttl)
		redis.StopRenewingLock(dead)
		deadUnlock, ok, err := dead.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock = %v, %v", ok, err)
		}
		start := time.Now()
		if _, ok, _ := w1.TryLock(ctx); ok {
			t.Fatal("took a lock that is held")
		}
		var unlock func()
		eventually(t, ttl+500*time.Millisecond, "another worker takes over", func() bool {
			u, ok, err := w1.TryLock(ctx)
			unlock = u
			return ok && err == nil
		})
		if d := time.Since(start); d < ttl-100*time.Millisecond {
			t.Errorf("took over after %v, before the TTL of %v", d, ttl)
		}
		// The late unlock of the old holder must not free the new one's lock.
		deadUnlock()
		if _, ok, _ := w2.TryLock(ctx); ok {
			t.Fatal("the old holder's unlock released its successor's lock")
		}
		unlock()
	})

	t.Run("ALostAnswerLeavesTheLockOurs", func(t *testing.T) {
		// A Redis that hung ran the worker's SET after the client had given
		// up on it: the lock holds the worker's token, unrenewed. The worker
		// must take it at its next pass rather than skip until it lapses.
		if err := c.Set(ctx, prefix+"worker", redis.LockToken(w1), 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		unlock, ok, err := w1.TryLock(ctx)
		if err != nil || !ok {
			t.Fatalf("TryLock over its own lost lock = %v, %v; want it", ok, err)
		}
		if _, ok, _ := w2.TryLock(ctx); ok {
			t.Fatal("another worker took the lock meanwhile")
		}
		unlock()
		if n, err := c.Exists(ctx, prefix+"worker").Result(); err != nil || n != 0 {
			t.Fatalf("the lock after unlock: %d, %v; want it gone", n, err)
		}
	})
}

func TestWorkerLock_ErrUnavailable(t *testing.T) {
	t.Parallel()
	c, err := redis.NewClient(fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unlock, ok, err := redis.NewWorkerLock(c, "", 0).TryLock(testCtx(t))
	if ok || !errors.Is(err, fleet.ErrUnavailable) || unlock == nil {
		t.Fatalf("TryLock with Redis down = %v, %v; want ErrUnavailable", ok, err)
	}
}
