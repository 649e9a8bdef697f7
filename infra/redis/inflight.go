package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/app/fleet"
)

// DefaultLeaseTTL is the lease TTL used when none is given.
const DefaultLeaseTTL = 30 * time.Second

const (
	// redisTimeout bounds each Redis call on the request path, so that a
	// Redis that hangs costs a request at most this much once per cooldown.
	redisTimeout = 200 * time.Millisecond
	// redisCooldown is how long Redis is skipped after a failure before one
	// request tries it again.
	redisCooldown = 1500 * time.Millisecond
)

// acquireScript drops the expired leases of every candidate, picks the one
// with the fewest live leases (ties broken by ARGV[3], a random number from
// the caller, since scripts have no good randomness of their own) and adds
// the new lease to it, scored by its expiry. Redis's own clock is used
// throughout, so replicas with skewed clocks agree.
//
// KEYS: the candidates' lease sets. ARGV: lease ID, lease TTL (ms), random
// non-negative integer. Returns the 0-based index of the chosen key.
var acquireScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local least, ties = nil, {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local n = redis.call('ZCARD', key)
  if least == nil or n < least then
    least, ties = n, {i}
  elseif n == least then
    ties[#ties + 1] = i
  end
end
local pick = ties[(tonumber(ARGV[3]) % #ties) + 1]
redis.call('ZADD', KEYS[pick], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[pick], ttl)
return pick - 1
`)

// renewScript moves a lease's expiry to now + TTL, adding it again if it
// was lost (Redis restarted, or the lease was taken while Redis was down).
// Every lease of the set expires within the TTL, so the set's own TTL can be
// reset to it. KEYS[1]: the lease set. ARGV: lease ID, lease TTL (ms).
var renewScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// countScript counts the live leases of each key, by Redis's clock.
var countScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return out
`)

// InFlight counts the requests in flight on each node across every replica,
// as leases in Redis: a per-node sorted set of lease IDs scored by expiry.
// A lease is taken atomically with the choice of the least loaded node (one
// Lua script, one round trip), renewed every TTL/3 while it is held, so that
// long streams keep it, and removed on release. A process that dies without
// releasing leaks nothing beyond the lease TTL.
//
// When Redis cannot be reached InFlight degrades instead of failing: it
// chooses by this process's own counts (which it always keeps), logs one
// warning, skips Redis for a second or two, then tries again and logs once
// when Redis is back. Leases taken meanwhile are added to Redis by their
// next renewal. It satisfies app.InFlight. Safe for concurrent use.
type InFlight struct {
	client   *goredis.Client
	prefix   string
	leaseTTL time.Duration
	log      *slog.Logger

	timeout  time.Duration // see redisTimeout
	cooldown time.Duration // see redisCooldown
	noRenew  bool          // test hook: behave like a process killed with SIGKILL

	mu      sync.Mutex
	local   map[int64]int // this process's leases per node, in Redis or not
	down    bool          // Redis failed and has not answered since
	retryAt time.Time     // while down: when to try Redis again
	probing bool          // while down: one call is trying Redis
}

// NewInFlight returns an InFlight whose keys start with prefix (empty means
// [DefaultPrefix]). leaseTTL bounds how long the lease of a process that
// died counts; zero means [DefaultLeaseTTL]. A nil log discards.
func NewInFlight(client *goredis.Client, prefix string, leaseTTL time.Duration, log *slog.Logger) *InFlight {
	if leaseTTL <= 0 {
		leaseTTL = DefaultLeaseTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &InFlight{
		client:   client,
		prefix:   orDefault(prefix),
		leaseTTL: leaseTTL,
		log:      log,
		timeout:  redisTimeout,
		cooldown: redisCooldown,
		local:    make(map[int64]int),
	}
}

func (f *InFlight) key(nodeID int64) string {
	return f.prefix + "inflight:" + strconv.FormatInt(nodeID, 10)
}

// Acquire takes a lease on the least loaded of nodeIDs, ties broken at
// random, and returns the index of the chosen node in nodeIDs. release
// removes the lease; call it exactly once (later calls do nothing). It
// returns fleet.ErrNoCandidate when nodeIDs is empty, and an error only when
// ctx ends first: a Redis failure makes it choose by local counts instead.
func (f *InFlight) Acquire(ctx context.Context, nodeIDs []int64) (chosen int, release func(), err error) {
	if len(nodeIDs) == 0 {
		return -1, func() {}, fleet.ErrNoCandidate
	}
	l := &lease{f: f, id: leaseID()}
	chosen = -1
	if try, probe := f.useRedis(); try {
		keys := make([]string, len(nodeIDs))
		for i, id := range nodeIDs {
			keys[i] = f.key(id)
		}
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		i, err := acquireScript.Run(cctx, f.client, keys, l.id, f.leaseTTL.Milliseconds(), mrand.Int32()).Int()
		cancel()
		switch {
		case err == nil && i >= 0 && i < len(nodeIDs):
			f.succeeded()
			chosen, l.inRedis = i, true
		case ctx.Err() != nil:
			f.abandoned(probe)
			f.cleanup(keys, l.id) // the script may have run
			return -1, func() {}, ctx.Err()
		default:
			if err == nil {
				err = errors.New("acquire script returned an index out of range")
			}
			f.failed("acquire", err)
			// The script may have run before the deadline: remove the lease
			// from every candidate on release.
			l.maybe = keys
		}
	}
	f.mu.Lock()
	if chosen < 0 {
		chosen = fleet.PickLeast(len(nodeIDs), func(i int) int { return f.local[nodeIDs[i]] }, mrand.IntN)
	}
	f.local[nodeIDs[chosen]]++
	f.mu.Unlock()
	l.node, l.key = nodeIDs[chosen], f.key(nodeIDs[chosen])
	if !f.noRenew {
		l.mu.Lock() // the timer's first run must see l.timer
		l.timer = time.AfterFunc(f.leaseTTL/3, l.renew)
		l.mu.Unlock()
	}
	return chosen, l.release, nil
}

// Counts returns the number of live leases on each of nodeIDs, every
// replica's, in one round trip. While Redis cannot be reached it returns
// this process's own counts instead, without error.
func (f *InFlight) Counts(ctx context.Context, nodeIDs []int64) (map[int64]int, error) {
	out := make(map[int64]int, len(nodeIDs))
	if len(nodeIDs) == 0 {
		return out, nil
	}
	if try, probe := f.useRedis(); try {
		keys := make([]string, len(nodeIDs))
		for i, id := range nodeIDs {
			keys[i] = f.key(id)
		}
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		ns, err := countScript.Run(cctx, f.client, keys).Int64Slice()
		cancel()
		switch {
		case err == nil && len(ns) == len(nodeIDs):
			f.succeeded()
			for i, id := range nodeIDs {
				out[id] = int(ns[i])
			}
			return out, nil
		case ctx.Err() != nil:
			f.abandoned(probe)
			return nil, ctx.Err()
		default:
			if err == nil {
				err = errors.New("count script returned a short list")
			}
			f.failed("count", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range nodeIDs {
		out[id] = f.local[id]
	}
	return out, nil
}

// useRedis reports whether to call Redis now: always while it works; after
// a failure, once the cooldown has passed, for one caller at a time (the
// probe).
func (f *InFlight) useRedis() (try, probe bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.down {
		return true, false
	}
	if f.probing || time.Now().Before(f.retryAt) {
		return false, false
	}
	f.probing = true
	return true, true
}

func (f *InFlight) succeeded() {
	f.mu.Lock()
	was := f.down
	f.down, f.probing = false, false
	f.mu.Unlock()
	if was {
		f.log.Info("redis reachable again: in-flight counts are shared across replicas again")
	}
}

func (f *InFlight) failed(op string, err error) {
	f.mu.Lock()
	was := f.down
	f.down, f.probing = true, false
	f.retryAt = time.Now().Add(f.cooldown)
	f.mu.Unlock()
	if !was {
		f.log.Warn("redis unreachable: in-flight counts are local to this process until it is back",
			"op", op, "err", translate(op, err).Error())
	}
}

// abandoned ends a probe whose caller gave up, without judging Redis.
func (f *InFlight) abandoned(probe bool) {
	if probe {
		f.mu.Lock()
		f.probing = false
		f.mu.Unlock()
	}
}

// cleanup removes a lease that may or may not have been added to keys, in
// the background.
func (f *InFlight) cleanup(keys []string, id string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		_, _ = f.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, k := range keys {
				p.ZRem(ctx, k, id)
			}
			return nil
		})
	}()
}

// lease is one request's slot on one node.
type lease struct {
	f       *InFlight
	id      string
	node    int64
	key     string
	maybe   []string // keys the acquire script may have written to
	inRedis bool     // known to be in Redis; guarded by mu after Acquire

	mu    sync.Mutex // held during a renewal, so release waits for it
	timer *time.Timer
	done  bool
}

// renew runs every TTL/3 until release. It re-adds the lease if it is
// missing, so leases taken while Redis was down become shared once it is
// back.
func (l *lease) renew() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	f := l.f
	if try, _ := f.useRedis(); try {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		err := renewScript.Run(ctx, f.client, []string{l.key}, l.id, f.leaseTTL.Milliseconds()).Err()
		cancel()
		if err != nil {
			f.failed("renew", err)
		} else {
			f.succeeded()
			l.inRedis = true
		}
	}
	l.timer.Reset(f.leaseTTL / 3)
}

func (l *lease) release() {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return
	}
	l.done = true
	if l.timer != nil {
		l.timer.Stop()
	}
	inRedis, maybe := l.inRedis, l.maybe
	l.mu.Unlock()

	f := l.f
	f.mu.Lock()
	if f.local[l.node]--; f.local[l.node] <= 0 {
		delete(f.local, l.node)
	}
	f.mu.Unlock()

	if !inRedis && maybe == nil {
		return
	}
	// While Redis is down the lease is left to expire by itself: waiting
	// for a dead server would delay the end of the response.
	if try, _ := f.useRedis(); !try {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	var err error
	if maybe == nil {
		err = f.client.ZRem(ctx, l.key, l.id).Err()
	} else {
		_, err = f.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, k := range maybe {
				p.ZRem(ctx, k, l.id)
			}
			return nil
		})
	}
	if err != nil {
		f.failed("release", err)
	} else {
		f.succeeded()
	}
}

// leaseID returns a random lease ID, unique across replicas.
func leaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
