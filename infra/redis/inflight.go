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
// throughout, so replicas with skewed clocks agree. It first removes the
// caller's released leases whose removal may not have landed yet, so that
// a replica's own releases count in its next choice at once.
//
// KEYS: the candidates' lease sets. ARGV: lease ID, lease TTL (ms), random
// non-negative integer, then pairs of (1-based key index, released lease
// ID). Returns the 0-based index of the chosen key.
var acquireScript = goredis.NewScript(`
for i = 4, #ARGV, 2 do
  redis.call('ZREM', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
end
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

// renewScript moves the expiry of leases of one set to now + TTL, adding
// those that were lost (Redis restarted, or the lease was taken while Redis
// was down). Every lease of the set expires within the TTL, so the set's
// own TTL can be reset to it. KEYS[1]: the lease set. ARGV: lease TTL (ms),
// then the lease IDs.
var renewScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// countScript counts the live leases of each key, by Redis's clock, after
// removing the caller's released leases as acquireScript does. ARGV: pairs
// of (1-based key index, released lease ID).
var countScript = goredis.NewScript(`
for i = 1, #ARGV, 2 do
  redis.call('ZREM', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
end
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
// Lua script, one round trip), so that replicas never pile onto the same
// idle node. Everything else happens off the request path, in one
// background goroutine that runs while leases are held: released leases are
// removed from Redis in batches as soon as it can (a request does not wait
// for its removal, and concurrent releases share one round trip), and held
// leases are renewed together every TTL/3, so that long streams keep them.
// A process that dies without releasing leaks nothing beyond the lease TTL.
//
// Between a release and its removal, which takes a round trip, the lease
// still counts for other replicas; this replica's next Acquire or Counts
// removes it first, in the same call, so its own releases count at once.
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
	inline   bool          // see ReleaseInline

	mu       sync.Mutex
	local    map[int64]int       // this process's leases per node, in Redis or not
	held     map[*lease]struct{} // leases to renew
	gone     []*lease            // released leases to remove from Redis
	unremoved map[*lease]struct{} // released leases in Redis until their removal lands
	upkeep   bool                // the upkeep goroutine runs
	removeMu sync.Mutex          // one removal at a time, so Flush waits for one in progress
	wake     chan struct{}       // tells upkeep that gone is not empty
	down     bool                // Redis failed and has not answered since
	retryAt  time.Time           // while down: when to try Redis again
	probing  bool                // while down: one call is trying Redis
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
		held:     make(map[*lease]struct{}),
		unremoved: make(map[*lease]struct{}),
		wake:     make(chan struct{}, 1),
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
	l := &lease{id: leaseID()}
	chosen = -1
	if try, probe := f.useRedis(); try {
		keys := make([]string, len(nodeIDs))
		for i, id := range nodeIDs {
			keys[i] = f.key(id)
		}
		args := append(make([]any, 0, 8), l.id, f.leaseTTL.Milliseconds(), mrand.Int32())
		args = f.appendUnremoved(args, nodeIDs)
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		i, err := acquireScript.Run(cctx, f.client, keys, args...).Int()
		cancel()
		switch {
		case err == nil && i >= 0 && i < len(nodeIDs):
			f.succeeded()
			chosen, l.inRedis = i, true
		case ctx.Err() != nil:
			f.abandoned(probe)
			// The script may have run: remove the lease from every
			// candidate.
			l.maybe, l.done = keys, true
			f.mu.Lock()
			f.removeLocked(l)
			f.mu.Unlock()
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
	defer f.mu.Unlock()
	if chosen < 0 {
		chosen = fleet.PickLeast(len(nodeIDs), func(i int) int { return f.local[nodeIDs[i]] }, mrand.IntN)
	}
	f.local[nodeIDs[chosen]]++
	l.node, l.key = nodeIDs[chosen], f.key(nodeIDs[chosen])
	if !f.noRenew {
		f.held[l] = struct{}{}
		f.startUpkeepLocked()
	}
	return chosen, func() { f.release(l) }, nil
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
		ns, err := countScript.Run(cctx, f.client, keys, f.appendUnremoved(nil, nodeIDs)...).Int64Slice()
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

// lease is one request's slot on one node. Its fields after Acquire are
// guarded by InFlight.mu.
type lease struct {
	id      string
	node    int64
	key     string
	maybe   []string // keys the acquire script may have written to
	inRedis bool     // known to be in Redis
	done    bool     // released
	queued  bool     // in gone, or removed
}

// ReleaseInline makes release wait until the lease is removed from Redis,
// as AWS Lambda needs: it freezes the process between invocations, so a
// removal left to the background would wait for the next invocation, or
// for the lease TTL. Call it before the first Acquire.
func (f *InFlight) ReleaseInline() { f.inline = true }

// release ends a lease: at once in this process's counts, and in Redis by
// the upkeep goroutine. Later calls do nothing.
func (f *InFlight) release(l *lease) {
	f.mu.Lock()
	if l.done {
		f.mu.Unlock()
		return
	}
	l.done = true
	delete(f.held, l)
	if f.local[l.node]--; f.local[l.node] <= 0 {
		delete(f.local, l.node)
	}
	queued := l.inRedis || l.maybe != nil
	if queued {
		f.removeLocked(l)
	}
	f.mu.Unlock()
	if queued && f.inline {
		f.removeGone()
	}
}

// removeLocked queues a released lease for removal from Redis. f.mu must
// be held.
func (f *InFlight) removeLocked(l *lease) {
	if l.queued {
		return
	}
	l.queued = true
	if l.inRedis && l.maybe == nil {
		f.unremoved[l] = struct{}{}
	}
	f.gone = append(f.gone, l)
	f.startUpkeepLocked()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// startUpkeepLocked starts the upkeep goroutine unless it runs. f.mu must
// be held.
func (f *InFlight) startUpkeepLocked() {
	if !f.upkeep {
		f.upkeep = true
		go f.runUpkeep()
	}
}

// runUpkeep removes released leases as soon as there are any, and renews
// the held ones every TTL/3. Both happen here only, one after the other, so
// a renewal can never re-add a lease after its removal. It returns once a
// renewal finds nothing held and nothing to remove.
func (f *InFlight) runUpkeep() {
	tick := time.NewTicker(f.leaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-f.wake:
			f.removeGone()
		case <-tick.C:
			f.renewHeld()
			f.removeGone()
			f.mu.Lock()
			if len(f.held) == 0 && len(f.gone) == 0 {
				f.upkeep = false
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
		}
	}
}

// removeGone removes the released leases from Redis, in one round trip.
// While Redis is down they are left to expire by themselves.
func (f *InFlight) removeGone() {
	f.removeMu.Lock()
	defer f.removeMu.Unlock()
	f.mu.Lock()
	batch := f.gone
	f.gone = nil
	f.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	defer func() {
		f.mu.Lock()
		for _, l := range batch {
			delete(f.unremoved, l)
		}
		f.mu.Unlock()
	}()
	if try, _ := f.useRedis(); !try {
		return
	}
	ids := make(map[string][]any)
	for _, l := range batch {
		keys := l.maybe
		if keys == nil {
			keys = []string{l.key}
		}
		for _, k := range keys {
			ids[k] = append(ids[k], l.id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	_, err := f.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for k, members := range ids {
			p.ZRem(ctx, k, members...)
		}
		return nil
	})
	if err != nil {
		f.failed("release", err)
	} else {
		f.succeeded()
	}
}

// maxPiggyback bounds the released leases one acquire removes.
const maxPiggyback = 64

// appendUnremoved adds to an acquire's arguments the released leases on
// nodeIDs whose removal has not landed yet, as (key index, lease ID).
func (f *InFlight) appendUnremoved(args []any, nodeIDs []int64) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for l := range f.unremoved {
		for i, id := range nodeIDs {
			if l.node == id && n < maxPiggyback {
				args = append(args, i+1, l.id)
				n++
			}
		}
	}
	return args
}

// renewBatch bounds the lease IDs sent in one renewal call.
const renewBatch = 1000

// renewHeld moves the expiry of every held lease, one call per node (and
// per thousand leases). A lease taken while Redis was down is added back,
// so that it is shared once Redis is.
func (f *InFlight) renewHeld() {
	f.mu.Lock()
	byKey := make(map[string][]*lease)
	for l := range f.held {
		byKey[l.key] = append(byKey[l.key], l)
	}
	f.mu.Unlock()
	if len(byKey) == 0 {
		return
	}
	if try, _ := f.useRedis(); !try {
		return
	}
	var renewed []*lease
	var err error
	for key, ls := range byKey {
		for len(ls) > 0 && err == nil {
			n := min(len(ls), renewBatch)
			args := make([]any, 0, n+1)
			args = append(args, f.leaseTTL.Milliseconds())
			for _, l := range ls[:n] {
				args = append(args, l.id)
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			err = renewScript.Run(ctx, f.client, []string{key}, args...).Err()
			cancel()
			if err == nil {
				renewed = append(renewed, ls[:n]...)
			}
			ls = ls[n:]
		}
	}
	if err != nil {
		f.failed("renew", err)
	} else {
		f.succeeded()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range renewed {
		l.inRedis = true
		if l.done && !l.queued {
			// Released while it was being renewed, which may have added
			// it again: remove it.
			f.removeLocked(l)
		}
	}
}

// Flush removes from Redis the leases released so far, waiting for the
// removal. A replica that shuts down calls it after its last response, so
// that other replicas stop counting its leases at once rather than after
// the lease TTL.
func (f *InFlight) Flush() { f.removeGone() }

// leaseID returns a random lease ID, unique across replicas.
func leaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
