package redis

import (
	"context"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultLockTTL is the worker lock's TTL used when none is given.
const DefaultLockTTL = 30 * time.Second

// takeLockScript takes the lock if it is free, or keeps it if it already
// holds our token: a SET whose answer was lost (a Redis that hung past the
// client's timeout, then ran it) left the lock ours with nobody renewing
// it, and a plain SET NX would skip every pass until it lapsed.
var takeLockScript = goredis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// extendScript extends the lock only if it still holds our token.
var extendScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// unlockScript deletes the lock only if it still holds our token, so a
// worker whose lock lapsed never deletes its successor's.
var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// WorkerLock lets one worker among many run the passes. The holder renews
// the lock every TTL/3 until it unlocks; if it dies, the lock lapses after
// the TTL and another worker takes over. It satisfies worker.Lock. Safe for
// concurrent use.
type WorkerLock struct {
	client *goredis.Client
	key    string
	ttl    time.Duration
	// token is this lock's for its life: a worker runs one pass at a time,
	// and a token of its own found in Redis is a lock it took.
	token   string
	noRenew bool // test hook: behave like a holder that died

	mu      sync.Mutex
	renewal *renewal // of the lock while this worker holds it
}

// renewal is the goroutine that keeps a held lock alive. stopped is closed
// when it ends: unlocked, or the lock found to be another worker's.
type renewal struct {
	stop, stopped chan struct{}
	once          sync.Once
}

// NewWorkerLock returns a lock stored under <prefix>worker (an empty prefix
// means [DefaultPrefix]). ttl is how long a dead holder blocks the others;
// zero means [DefaultLockTTL].
func NewWorkerLock(client *goredis.Client, prefix string, ttl time.Duration) *WorkerLock {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	return &WorkerLock{client: client, key: orDefault(prefix) + "worker", ttl: ttl, token: leaseID()}
}

// TryLock takes the lock if nobody holds it, or keeps it (extended) if
// this worker does. It returns ok=false and a nil error when another
// worker holds it, and an error wrapping fleet.ErrUnavailable when Redis
// cannot be reached. unlock (never nil) stops the renewal and releases the
// lock if it is still ours; later calls, and those of the unlocks of
// earlier TryLocks of the same hold, do nothing.
func (w *WorkerLock) TryLock(ctx context.Context) (unlock func(), ok bool, err error) {
	token := w.token
	taken, err := takeLockScript.Run(ctx, w.client, []string{w.key}, token, w.ttl.Milliseconds()).Int()
	if err != nil {
		return func() {}, false, translate("take worker lock", err)
	}
	if taken == 0 {
		return func() {}, false, nil
	}
	w.mu.Lock()
	r := w.renewal
	if r == nil || r.ended() { // one renewal per hold
		r = &renewal{stop: make(chan struct{}), stopped: make(chan struct{})}
		w.renewal = r
		if w.noRenew {
			close(r.stopped)
		} else {
			go w.renew(token, r.stop, r.stopped)
		}
	}
	w.mu.Unlock()
	unlock = func() {
		r.once.Do(func() {
			close(r.stop)
			<-r.stopped
			w.mu.Lock()
			if w.renewal == r {
				w.renewal = nil
			}
			w.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			// On failure the lock lapses by itself after the TTL.
			_ = unlockScript.Run(ctx, w.client, []string{w.key}, token).Err()
		})
	}
	return unlock, true, nil
}

func (r *renewal) ended() bool {
	select {
	case <-r.stopped:
		return true
	default:
		return false
	}
}

// renew extends the lock every TTL/3 until stop is closed or the lock is
// found to belong to someone else.
func (w *WorkerLock) renew(token string, stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(w.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.ttl/3)
		n, err := extendScript.Run(ctx, w.client, []string{w.key}, token, w.ttl.Milliseconds()).Int()
		cancel()
		if err == nil && n == 0 {
			return // lost: it lapsed and another worker took it
		}
		// On an error, try again at the next tick while the lock may still
		// be ours.
	}
}
