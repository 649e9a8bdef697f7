package redis

import (
	"context"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultLockTTL is the worker lock's TTL used when none is given.
const DefaultLockTTL = 30 * time.Second

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

// WorkerLock lets one worker among many run a pass at a time. The holder
// renews the lock every TTL/3 until it unlocks; if it dies, the lock lapses
// after the TTL and another worker takes over. It satisfies worker.Lock.
// Safe for concurrent use.
type WorkerLock struct {
	client  *goredis.Client
	key     string
	ttl     time.Duration
	noRenew bool // test hook: behave like a holder that died
}

// NewWorkerLock returns a lock stored under <prefix>worker (an empty prefix
// means [DefaultPrefix]). ttl is how long a dead holder blocks the others;
// zero means [DefaultLockTTL].
func NewWorkerLock(client *goredis.Client, prefix string, ttl time.Duration) *WorkerLock {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	return &WorkerLock{client: client, key: orDefault(prefix) + "worker", ttl: ttl}
}

// TryLock takes the lock if nobody holds it. It returns ok=false and a nil
// error when another worker holds it, and an error wrapping
// fleet.ErrUnavailable when Redis cannot be reached. unlock (never nil)
// stops the renewal and releases the lock if it is still ours; later calls
// do nothing.
func (w *WorkerLock) TryLock(ctx context.Context) (unlock func(), ok bool, err error) {
	token := leaseID()
	ok, err = w.client.SetNX(ctx, w.key, token, w.ttl).Result()
	if err != nil {
		return func() {}, false, translate("take worker lock", err)
	}
	if !ok {
		return func() {}, false, nil
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	if w.noRenew {
		close(stopped)
	} else {
		go w.renew(token, stop, stopped)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			close(stop)
			<-stopped
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			// On failure the lock lapses by itself after the TTL.
			_ = unlockScript.Run(ctx, w.client, []string{w.key}, token).Err()
		})
	}
	return unlock, true, nil
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
