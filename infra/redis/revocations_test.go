package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

var _ app.KeyRevocations = (*redis.KeyRevocations)(nil)

// A revocation announced by one replica reaches every listening one.
func TestKeyRevocations(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	got := make(chan int64, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		redis.NewKeyRevocations(c, prefix).Listen(ctx, func(id int64) { got <- id })
	}()
	other := redis.NewKeyRevocations(c, prefix)
	// The subscription starts asynchronously: announce until it hears.
	deadline := time.After(5 * time.Second)
	for heard := false; !heard; {
		if err := other.Revoked(ctx, 42); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != 42 {
				t.Fatalf("heard key %d, want 42", id)
			}
			heard = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("the revocation never arrived")
		}
	}
	// Another deployment's prefix is not heard.
	if err := redis.NewKeyRevocations(c, prefix+"other:").Revoked(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if err := other.Revoked(ctx, 43); err != nil {
		t.Fatal(err)
	}
	for id := range got {
		if id == 7 {
			t.Fatal("heard another prefix's revocation")
		}
		if id == 43 {
			break
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return when its context ended")
	}
}

// ListeningSince says whether a revocation sent now would be heard, and
// since when without a break: not before the subscription, not while Redis
// hangs or is down, and from a new start after either.
func TestKeyRevocationsListening(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	c, err := redis.NewClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := redis.NewKeyRevocations(c, "t:")
	listening := func() bool { _, ok := k.ListeningSince(); return ok }
	if listening() {
		t.Fatal("listening before Listen")
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan struct{})
	go func() { defer close(done); k.Listen(ctx, func(int64) {}) }()
	defer func() { cancel(); <-done }()
	eventually(t, 5*time.Second, "the subscription answers", listening)
	first, _ := k.ListeningSince()

	paused := time.Now()
	srv.Pause()
	eventually(t, 10*time.Second, "a hung Redis is noticed", func() bool { return !listening() })
	srv.Resume()
	eventually(t, 10*time.Second, "listening again once Redis answers", listening)
	if since, _ := k.ListeningSince(); !since.After(paused) {
		t.Fatalf("after the hang, listening since %v (first %v); want a new start after %v", since, first, paused)
	}

	stopped := time.Now()
	srv.Stop()
	srv.Start()
	eventually(t, 10*time.Second, "listening since a new subscription", func() bool {
		since, ok := k.ListeningSince()
		return ok && since.After(stopped)
	})
}
