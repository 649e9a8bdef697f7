package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// limitScript is GCRA, the generic cell rate algorithm: one number per
// bucket, the theoretical arrival time of the next request, kept by Redis's
// own clock so that replicas with skewed clocks agree. A bucket allows
// burst requests at once, then one every 60s/perMinute. KEYS[1]: the
// bucket. ARGV: requests per minute, burst, and 1 to spend a request or -1
// to give one back. Returns 0 when the request is allowed (and counted),
// else the milliseconds to wait (not counted); a refund returns 0.
var limitScript = goredis.NewScript(`
local interval = 60000 / tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
if ARGV[3] == '-1' then
  tat = tat - interval
  if tat <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
  end
  return 0
end
local allowed_at = tat + interval - burst * interval
if allowed_at > now then
  return math.ceil(allowed_at - now)
end
tat = tat + interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
return 0
`)

// RateLimiter keeps rate limits in Redis, so that every replica spends one
// budget: a limit of 60 requests a minute is 60 across the deployment, not
// 60 per replica. It satisfies app.RateLimiter; the caller falls back to
// per-replica limits when it returns an error. Safe for concurrent use.
type RateLimiter struct {
	client  *goredis.Client
	prefix  string
	timeout time.Duration
}

// NewRateLimiter returns a RateLimiter whose keys start with prefix (empty
// means [DefaultPrefix]).
func NewRateLimiter(client *goredis.Client, prefix string) *RateLimiter {
	return &RateLimiter{client: client, prefix: orDefault(prefix), timeout: redisTimeout}
}

// Take spends one request of the named budget (perMinute requests a
// minute, burst at once), or returns how long to wait before one is
// available, without spending it.
func (l *RateLimiter) Take(ctx context.Context, name string, perMinute, burst int) (time.Duration, error) {
	return l.run(ctx, name, perMinute, burst, 1)
}

// Refund gives back one request that Take spent, as if it had not been
// made (a login that turned out to succeed).
func (l *RateLimiter) Refund(ctx context.Context, name string, perMinute, burst int) error {
	_, err := l.run(ctx, name, perMinute, burst, -1)
	return err
}

func (l *RateLimiter) run(ctx context.Context, name string, perMinute, burst, spend int) (time.Duration, error) {
	if perMinute <= 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	ms, err := limitScript.Run(ctx, l.client, []string{l.prefix + "ratelimit:" + name}, perMinute, max(burst, 1), spend).Int64()
	if err != nil {
		return 0, translate("rate limit", fmt.Errorf("%s: %w", name, err))
	}
	return time.Duration(ms) * time.Millisecond, nil
}
