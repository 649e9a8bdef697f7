package worker

import (
	"context"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule runs a pass now, before it returns (so that a server starts with
// a fleet), and then every interval on a robfig/cron schedule until stop is
// called or ctx ends. A pass still running when the next one is due is
// skipped rather than stacked. Errors are logged; the schedule goes on.
//
// The lock is kept between the passes, renewed, and let go by stop: among
// workers on one schedule one passes, the others stand by, and one of them
// takes over when the holder dies and its lock lapses. (Released after
// each pass, every worker would pass in turn, each node probed once per
// worker and interval, and rise and fall counted that much faster.)
func (w *Worker) Schedule(ctx context.Context, every time.Duration) (stop func()) {
	pass := func() {
		if ctx.Err() != nil {
			return
		}
		if err := w.pass(ctx, nil, true); err != nil && ctx.Err() == nil {
			w.log.Error("health pass", "err", err.Error())
		}
	}
	pass()
	c := cron.New(cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	c.Schedule(cron.Every(every), cron.FuncJob(pass))
	c.Start()
	return func() {
		<-c.Stop().Done()
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.release != nil {
			w.release()
			w.release = nil
		}
	}
}
