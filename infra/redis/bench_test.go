package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/aivonx/aivonx/infra/redis"
)

// BenchmarkAcquireRelease is one request's lease, taken and released, with
// one candidate (nothing to choose: the lease is written in the background,
// and never when released within the write delay) and with two (chosen and
// taken by the acquire script, one round trip). Redis commands per request
// are reported as cmds/op; the background removals are counted too.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, bc := range []struct {
		name  string
		nodes []int64
	}{
		{"single", []int64{1}},
		{"two", []int64{1, 2}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, prefix := newClient(b)
			calls := &commandCounter{}
			c.AddHook(calls)
			f := redis.NewInFlight(c, prefix, 10*time.Second, nil)
			ctx := context.Background()
			for b.Loop() {
				_, release, err := f.Acquire(ctx, bc.nodes)
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
			f.Flush()
			b.ReportMetric(float64(calls.load())/float64(b.N), "cmds/op")
		})
	}
}
