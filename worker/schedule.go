package worker

import (
	"context"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule runs RunOnce every interval on a robfig/cron schedule until stop
// is called or ctx ends. A pass still running when the next one is due is
// skipped rather than stacked. Errors are logged; the schedule goes on.
func (w *Worker) Schedule(ctx context.Context, every time.Duration) (stop func()) {
	c := cron.New(cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	c.Schedule(cron.Every(every), cron.FuncJob(func() {
		if ctx.Err() != nil {
			return
		}
		if err := w.RunOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("health pass", "err", err.Error())
		}
	}))
	c.Start()
	return func() { <-c.Stop().Done() }
}
