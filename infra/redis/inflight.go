package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// acquireScript takes the leases of a batch of acquires in one call. It
// first removes the caller's released leases whose removal may not have
// landed yet, so that a replica's own releases count in its choices at
// once, and drops the expired leases of every set. Then, for each acquire
// in turn, it picks the candidate with the fewest live leases (ties broken
// by a random number from the caller, since scripts have no good
// randomness of their own) and adds the lease to it, scored by its expiry,
// so that later acquires of the batch see it. Redis's own clock is used
// throughout, so replicas with skewed clocks agree.
//
// KEYS: every lease set the batch names. ARGV: lease TTL (ms); the number
// of released leases R, then R pairs (1-based key index, lease ID); then
// for each acquire: lease ID, random non-negative integer, candidate count
// N, then N key indexes. Returns, for each acquire, the 0-based index of
// its choice among its candidates.
var acquireScript = goredis.NewScript(`
local ttl = tonumber(ARGV[1])
local a = 3
for _ = 1, tonumber(ARGV[2]) do
  redis.call('ZREM', KEYS[tonumber(ARGV[a])], ARGV[a + 1])
  a = a + 2
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  count[i] = redis.call('ZCARD', key)
end
local picks, touched = {}, {}
while a <= #ARGV do
  local id, rnd, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local least, ties = nil, {}
  for j = 1, n do
    local c = count[tonumber(ARGV[a + j - 1])]
    if least == nil or c < least then
      least, ties = c, {j}
    elseif c == least then
      ties[#ties + 1] = j
    end
  end
  local pick = ties[(rnd % #ties) + 1]
  local k = tonumber(ARGV[a + pick - 1])
  redis.call('ZADD', KEYS[k], now + ttl, id)
  count[k] = count[k] + 1
  touched[k] = true
  picks[#picks + 1] = pick - 1
  a = a + n
end
for k in pairs(touched) do
  redis.call('PEXPIRE', KEYS[k], ttl)
end
return picks
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
// When a request has a single candidate there is nothing to choose, so
// Acquire does not wait for Redis at all: the lease is written by the
// background goroutine a couple of milliseconds later, together with the
// others taken meanwhile, and a lease released before that is never
// written. Other replicas then count such a lease from a few milliseconds
// after it starts, and never count one shorter than that: their choices
// miss only the requests of the last few milliseconds on that node, while
// the long streams that load a node most are counted for nearly all their
// life. In return the most common fleet, every model on one node, pays no
// Redis round trip per request.
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
	delay    time.Duration // see writeDelay
	noRenew  bool          // test hook: behave like a process killed with SIGKILL
	inline   bool          // see ReleaseInline

	// Acquires that arrive while one is in Redis wait and go together in
	// the next call: one round trip for all of them (see acquireShared).
	amu       sync.Mutex
	acquiring bool           // a batch is in Redis
	queue     []*acquisition // the next batch

	mu        sync.Mutex
	local     map[int64]int       // this process's leases per node, in Redis or not
	held      map[*lease]struct{} // leases to renew
	unsent    []*lease            // leases of single-candidate acquires, not yet written
	gone      []*lease            // released leases to remove from Redis
	unremoved map[*lease]struct{} // released leases in Redis until their removal lands
	upkeep    bool                // the upkeep goroutine runs
	writeMu   sync.Mutex          // one write to Redis of the upkeep's at a time, so Flush waits for one in progress; Counts holds it too
	wake      chan struct{}       // tells upkeep that unsent or gone is not empty
	down      bool                // Redis failed and has not answered since
	retryAt   time.Time           // while down: when to try Redis again
	probing   bool                // while down: one call is trying Redis
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
		client:    client,
		prefix:    orDefault(prefix),
		leaseTTL:  leaseTTL,
		log:       log,
		timeout:   redisTimeout,
		cooldown:  redisCooldown,
		delay:     writeDelay,
		local:     make(map[int64]int),
		held:      make(map[*lease]struct{}),
		unremoved: make(map[*lease]struct{}),
		wake:      make(chan struct{}, 1),
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
// With a single candidate it does not call Redis (see InFlight).
func (f *InFlight) Acquire(ctx context.Context, nodeIDs []int64) (chosen int, release func(), err error) {
	if len(nodeIDs) == 0 {
		return -1, func() {}, fleet.ErrNoCandidate
	}
	if err := ctx.Err(); err != nil {
		return -1, func() {}, err
	}
	l := &lease{id: leaseID()}
	chosen = -1
	single := len(nodeIDs) == 1
	if single {
		chosen = 0
	} else if try, _ := f.useRedis(); try {
		a := &acquisition{nodeIDs: nodeIDs, id: l.id, done: make(chan struct{})}
		f.acquireShared(a)
		switch {
		case a.err == nil && ctx.Err() != nil:
			// Taken for a client that left meanwhile: give it back.
			f.succeeded()
			l.node, l.key, l.inRedis, l.done = nodeIDs[a.pick], f.key(nodeIDs[a.pick]), true, true
			f.mu.Lock()
			f.removeLocked(l)
			f.mu.Unlock()
			return -1, func() {}, ctx.Err()
		case a.err == nil:
			f.succeeded()
			chosen, l.inRedis = a.pick, true
		default:
			f.failed("acquire", a.err)
			// The script may have run before the deadline: remove the lease
			// from every candidate on release.
			l.maybe = make([]string, len(nodeIDs))
			for i, id := range nodeIDs {
				l.maybe[i] = f.key(id)
			}
			if ctx.Err() != nil {
				l.done = true
				f.mu.Lock()
				f.removeLocked(l)
				f.mu.Unlock()
				return -1, func() {}, ctx.Err()
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if chosen < 0 {
		chosen = fleet.PickLeast(len(nodeIDs), func(i int) int { return f.local[nodeIDs[i]] }, mrand.IntN)
	}
	f.local[nodeIDs[chosen]]++
	l.node, l.key = nodeIDs[chosen], f.key(nodeIDs[chosen])
	if single {
		l.taken = time.Now()
		f.unsent = append(f.unsent, l)
		f.wakeUpkeepLocked()
	}
	if !f.noRenew {
		f.held[l] = struct{}{}
		f.startUpkeepLocked()
	}
	return chosen, func() { f.release(l) }, nil
}

// acquisition is one Acquire's part in a batch.
type acquisition struct {
	nodeIDs []int64
	id      string
	pick    int   // set by the batch: the index of the chosen node
	err     error // set by the batch
	done    chan struct{}
	batch   []*acquisition // set when this acquire is to run the batch
}

// maxBatch bounds the acquires of one script call.
const maxBatch = 256

// acquireShared takes a's lease in Redis. When no acquire is in Redis it
// goes at once, alone. Otherwise it waits, with every acquire that arrives
// meanwhile, for the one in Redis to end; the first of them then sends them
// all in one call. Under load that is one round trip for many requests;
// alone, a request pays one round trip as before.
func (f *InFlight) acquireShared(a *acquisition) {
	f.amu.Lock()
	if f.acquiring {
		f.queue = append(f.queue, a)
		f.amu.Unlock()
		<-a.done
		if a.batch == nil {
			return // another acquire's call took this lease
		}
	} else {
		f.acquiring = true
		f.amu.Unlock()
		a.batch = []*acquisition{a}
	}
	batch := a.batch
	f.runBatch(batch)

	f.amu.Lock()
	n := min(len(f.queue), maxBatch)
	next := append([]*acquisition(nil), f.queue[:n]...)
	f.queue = f.queue[n:]
	if n == 0 {
		f.acquiring = false
	}
	f.amu.Unlock()
	if n > 0 {
		next[0].batch = next
		close(next[0].done) // it runs the next batch
	}
	for _, b := range batch[1:] {
		close(b.done)
	}
}

// runBatch takes the leases of batch in one script call. It is bounded by
// the Redis timeout, not by any request's context: one client leaving must
// not fail the others.
func (f *InFlight) runBatch(batch []*acquisition) {
	var keys []string
	index := make(map[int64]int) // node ID -> 1-based index in keys
	keyOf := func(id int64) int {
		if i, ok := index[id]; ok {
			return i
		}
		keys = append(keys, f.key(id))
		index[id] = len(keys)
		return len(keys)
	}
	var leases []any
	for _, a := range batch {
		leases = append(leases, a.id, mrand.Int32(), len(a.nodeIDs))
		for _, id := range a.nodeIDs {
			leases = append(leases, keyOf(id))
		}
	}
	args := append(make([]any, 0, 2+len(leases)+8), f.leaseTTL.Milliseconds(), 0)
	args, removed := f.appendUnremoved(args, func(id int64) (int, bool) { i, ok := index[id]; return i, ok })
	args[1] = len(removed)
	args = append(args, leases...)

	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	picks, err := acquireScript.Run(ctx, f.client, keys, args...).Int64Slice()
	cancel()
	if err == nil {
		f.landed(removed)
	}
	if err == nil && len(picks) != len(batch) {
		err = fmt.Errorf("acquire script returned %d choices for %d acquires", len(picks), len(batch))
	}
	for i, a := range batch {
		switch {
		case err != nil:
			a.err = err
		case picks[i] < 0 || int(picks[i]) >= len(a.nodeIDs):
			a.err = errors.New("acquire script returned an index out of range")
		default:
			a.pick = int(picks[i])
		}
	}
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
		// Not while leases move from unsent to Redis: they would be in
		// neither when counted. Counts serves views (state, metrics),
		// not routing, so it may wait for a write.
		f.writeMu.Lock()
		defer f.writeMu.Unlock()
		keys := make([]string, len(nodeIDs))
		for i, id := range nodeIDs {
			keys[i] = f.key(id)
		}
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		args, removed := f.appendUnremoved(nil, positionIn(nodeIDs))
		ns, err := countScript.Run(cctx, f.client, keys, args...).Int64Slice()
		cancel()
		if err == nil {
			f.landed(removed)
		}
		switch {
		case err == nil && len(ns) == len(nodeIDs):
			f.succeeded()
			for i, id := range nodeIDs {
				out[id] = int(ns[i])
			}
			f.addUnsent(out)
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

// addUnsent adds to counts this process's live leases that are not written
// to Redis yet, on the nodes counts holds.
func (f *InFlight) addUnsent(counts map[int64]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.unsent {
		if _, ok := counts[l.node]; ok && !l.done {
			counts[l.node]++
		}
	}
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
	maybe   []string  // keys the acquire script may have written to
	taken   time.Time // when Acquire took it (single candidates only)
	inRedis bool      // known to be in Redis
	done    bool      // released
	queued  bool      // in gone, or removed
	removed bool      // removed by an acquire or count script
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
	if l.inRedis || l.maybe != nil {
		f.removeLocked(l)
	}
	f.mu.Unlock()
	if f.inline {
		// Also waits for a write of this lease in progress, and removes
		// the lease after it.
		f.Flush()
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
	f.wakeUpkeepLocked()
}

// wakeUpkeepLocked has the upkeep goroutine write unsent leases and remove
// released ones soon, starting it unless it runs. f.mu must be held.
func (f *InFlight) wakeUpkeepLocked() {
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

// runUpkeep writes unsent leases once they are due, removes released ones
// soon after their release, and renews the held ones every TTL/3. Its
// writes take turns with Flush's (writeMu), and a removal is queued only
// after the write it undoes has landed, so a lease is never added back
// after its removal. It returns once a renewal finds nothing held, unsent
// or to remove.
func (f *InFlight) runUpkeep() {
	tick := time.NewTicker(f.leaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-f.wake:
			// A moment's wait gathers more leases into one call, lets the
			// next acquire remove released leases for free, and lets short
			// single-candidate requests end before their lease is due.
			time.Sleep(f.delay)
			if f.writeUnsent(false) {
				// Leases too young to write yet: come back for them.
				select {
				case f.wake <- struct{}{}:
				default:
				}
			}
			f.removeGone()
		case <-tick.C:
			f.renewHeld()
			f.removeGone()
			f.mu.Lock()
			if len(f.held) == 0 && len(f.gone) == 0 && len(f.unsent) == 0 {
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
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.mu.Lock()
	batch := take(&f.gone, func(l *lease) bool { return !l.removed })
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

// writeDelay is how long released leases wait for an acquire to remove
// them before the upkeep goroutine does, and how long a single-candidate
// lease lives before it is written (between one and two delays).
const writeDelay = 2 * time.Millisecond

// maxPiggyback bounds the released leases one acquire removes.
const maxPiggyback = 64

// appendUnremoved adds to a script's arguments the released leases, on the
// nodes keyIndex knows, whose removal has not landed yet: pairs of (1-based
// key index, lease ID). It returns those leases too.
func (f *InFlight) appendUnremoved(args []any, keyIndex func(nodeID int64) (int, bool)) ([]any, []*lease) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ls []*lease
	for l := range f.unremoved {
		if i, ok := keyIndex(l.node); ok && len(ls) < maxPiggyback {
			args = append(args, i, l.id)
			ls = append(ls, l)
		}
	}
	return args, ls
}

// landed records that a script removed ls, which the upkeep goroutine then
// skips.
func (f *InFlight) landed(ls []*lease) {
	if len(ls) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range ls {
		l.removed = true
		delete(f.unremoved, l)
	}
}

// positionIn returns a key index function for a script whose KEYS are the
// lease sets of nodeIDs, in order.
func positionIn(nodeIDs []int64) func(int64) (int, bool) {
	return func(id int64) (int, bool) {
		for i, n := range nodeIDs {
			if n == id {
				return i + 1, true
			}
		}
		return 0, false
	}
}

// renewBatch bounds the lease IDs sent in one renewal call.
const renewBatch = 1000

// renewHeld moves the expiry of every held lease. A lease taken while
// Redis was down is added back, so that it is shared once Redis is.
func (f *InFlight) renewHeld() {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.mu.Lock()
	ls := make([]*lease, 0, len(f.held))
	for l := range f.held {
		ls = append(ls, l)
	}
	// The held ones among the unsent are written now: Counts must not
	// count them twice.
	f.unsent = take(&f.unsent, func(l *lease) bool { _, held := f.held[l]; return !held && !l.done })
	f.mu.Unlock()
	f.writeLeases("renew", ls)
}

// writeUnsent writes the single-candidate leases that have lived for the
// write delay, or all of them, and drops those already released: they are
// over, and never counted. It reports whether younger ones are left.
func (f *InFlight) writeUnsent(all bool) (left bool) {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.mu.Lock()
	due := time.Now().Add(-f.delay)
	var ls, young []*lease
	for _, l := range f.unsent {
		switch {
		case l.done:
		case all || !l.taken.After(due):
			ls = append(ls, l)
		default:
			young = append(young, l)
		}
	}
	f.unsent = young
	f.mu.Unlock()
	f.writeLeases("acquire", ls)
	return len(young) > 0
}

// take empties the queue *q and returns those of its leases that keep
// accepts. f.mu must be held.
func take(q *[]*lease, keep func(*lease) bool) []*lease {
	var out []*lease
	for _, l := range *q {
		if keep(l) {
			out = append(out, l)
		}
	}
	*q = nil
	return out
}

// writeLeases adds ls to Redis or moves their expiry to now + TTL, one call
// per node (and per thousand leases). f.writeMu must be held. While Redis
// is down it does nothing: the leases still held are written by the first
// renewal after it is back.
func (f *InFlight) writeLeases(op string, ls []*lease) {
	if len(ls) == 0 {
		return
	}
	if try, _ := f.useRedis(); !try {
		return
	}
	byKey := make(map[string][]*lease)
	for _, l := range ls {
		byKey[l.key] = append(byKey[l.key], l)
	}
	var written []*lease
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
				written = append(written, ls[:n]...)
			}
			ls = ls[n:]
		}
	}
	if err != nil {
		f.failed(op, err)
	} else {
		f.succeeded()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range written {
		l.inRedis = true
		if l.done && !l.queued {
			// Released while it was being written, which may have added
			// it again: remove it.
			f.removeLocked(l)
		}
	}
}

// Flush writes to Redis the leases taken and released so far, waiting for
// the writes. A replica that shuts down calls it after its last response,
// so that other replicas stop counting its leases at once rather than
// after the lease TTL.
func (f *InFlight) Flush() {
	f.writeUnsent(true)
	f.removeGone()
}

// leaseID returns a random lease ID, unique across replicas.
func leaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
