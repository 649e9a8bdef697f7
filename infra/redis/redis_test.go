package redis_test

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

// Flush deletes this deployment's keys and nothing else, even when the
// prefix contains glob characters.
func TestFlush(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, base := newClient(t)
	prefix := base + "x*?"
	sibling := base + "xyz" // matched by the pattern "x*?*" if the prefix were not escaped
	outside := base + "other"

	sc := redis.NewStatusCache(c, prefix, time.Minute, nil)
	if err := sc.WriteStatuses(ctx, []fleet.Status{{NodeID: 1, Healthy: true, CheckedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := sc.MarkUnreachable(ctx, 1, "x"); err != nil {
		t.Fatal(err)
	}
	f := redis.NewInFlight(c, prefix, time.Minute, nil)
	_, release, err := f.Acquire(ctx, []int64{1})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for i := range 2500 { // more than one SCAN batch
		c.Set(ctx, prefix+"bulk:"+strconv.Itoa(i), 1, time.Minute)
	}
	c.Set(ctx, sibling, 1, time.Minute)
	c.Set(ctx, outside, 1, time.Minute)

	n, err := redis.Flush(ctx, c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2500+4 { // bulk, fleet, fleet:pass, unreachable, inflight:1
		t.Errorf("Flush deleted %d keys, want %d", n, 2500+4)
	}
	if left := c.Keys(ctx, base+"*").Val(); len(left) != 2 {
		t.Errorf("keys left = %v, want only %s and %s", left, sibling, outside)
	}
	if _, err := redis.Flush(ctx, c, ""); err == nil {
		t.Error("Flush with an empty prefix: want an error")
	}
}

func TestDriverLogger(t *testing.T) {
	var buf testenv.Buffer
	l := redis.DriverLogger{Log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Printf(testCtx(t), "redis: connection pool: failed to dial after %d attempts", 1)
	if got := buf.String(); !strings.Contains(got, `level=DEBUG msg="connection pool: failed to dial after 1 attempts" component=go-redis`) {
		t.Fatalf("logged %q", got)
	}
	redis.DriverLogger{}.Printf(testCtx(t), "discarded")
}
