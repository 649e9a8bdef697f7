package redis_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

func counts(t *testing.T, f *redis.InFlight, ids ...int64) map[int64]int {
	t.Helper()
	m, err := f.Counts(testCtx(t), ids)
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return m
}

func acquire(t *testing.T, f *redis.InFlight, ids ...int64) (int64, func()) {
	t.Helper()
	i, release, err := f.Acquire(testCtx(t), ids)
	if err != nil {
		t.Fatalf("Acquire(%v): %v", ids, err)
	}
	return ids[i], release
}

func TestInFlight(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	// Two replicas sharing one Redis.
	r1 := redis.NewInFlight(c, prefix, 10*time.Second, nil)
	r2 := redis.NewInFlight(c, prefix, 10*time.Second, nil)

	t.Run("ErrNoCandidate", func(t *testing.T) {
		_, release, err := r1.Acquire(testCtx(t), nil)
		if !errors.Is(err, fleet.ErrNoCandidate) || release == nil {
			t.Fatalf("Acquire(no nodes) = %v, want ErrNoCandidate and a callable release", err)
		}
	})

	t.Run("TiesSpread", func(t *testing.T) {
		picked := map[int64]int{}
		for range 200 {
			id, release := acquire(t, r1, 1, 2, 3)
			picked[id]++
			release()
		}
		for _, id := range []int64{1, 2, 3} {
			if picked[id] < 30 { // expected ~67 each
				t.Errorf("with equal load node %d was picked %d times of 200: %v", id, picked[id], picked)
			}
		}
	})

	t.Run("LeastLoadedWins", func(t *testing.T) {
		var releases []func()
		hold := func(f *redis.InFlight, id int64) {
			_, release := acquire(t, f, id)
			releases = append(releases, release)
			f.Flush() // a single candidate's lease is written in the background
		}
		hold(r1, 1)
		hold(r2, 1)
		hold(r1, 2)
		// Node 3 is free, whichever replica asks.
		for range 10 {
			if id, release := acquire(t, r2, 1, 2, 3); id != 3 {
				t.Fatalf("picked node %d, want the idle node 3", id)
			} else {
				release()
			}
		}
		hold(r2, 3)
		hold(r1, 3)
		// Now 1: 2, 2: 1, 3: 2.
		if got := counts(t, r1, 1, 2, 3); got[1] != 2 || got[2] != 1 || got[3] != 2 {
			t.Fatalf("Counts = %v, want 1:2 2:1 3:2", got)
		}
		id, release := acquire(t, r1, 1, 2, 3)
		if id != 2 {
			t.Fatalf("picked node %d, want node 2 (least loaded across replicas)", id)
		}
		release()
		for _, r := range releases {
			r()
		}
		// Removal lands in the background; Flush waits for it.
		r1.Flush()
		r2.Flush()
		if got := counts(t, r2, 1, 2, 3); got[1]+got[2]+got[3] != 0 {
			t.Fatalf("Counts after every release = %v, want zeros", got)
		}
	})

	t.Run("ReleaseTwiceIsHarmless", func(t *testing.T) {
		_, release := acquire(t, r1, 4)
		_, other := acquire(t, r2, 4)
		r2.Flush()
		release()
		release()
		if got := counts(t, r1, 4)[4]; got != 1 {
			t.Fatalf("count after a double release = %d, want 1 (the other lease)", got)
		}
		other()
	})

	t.Run("ReleaseInline", func(t *testing.T) {
		// Under Lambda a release must land before the invocation ends.
		inline := redis.NewInFlight(c, prefix, 10*time.Second, nil)
		inline.ReleaseInline()
		check := func(what string) {
			t.Helper()
			if got := counts(t, r2, 6, 7); got[6]+got[7] != 0 {
				t.Fatalf("another replica counts %v right after an inline release of %s, want zeros", got, what)
			}
		}
		for range 20 {
			_, release := acquire(t, inline, 6, 7) // written by Acquire
			release()
			check("a chosen lease")
			_, release = acquire(t, inline, 6)
			inline.Flush() // written, as the upkeep does after a moment
			if got := counts(t, r2, 6)[6]; got != 1 {
				t.Fatalf("another replica counts %d leases on node 6 after Flush, want 1", got)
			}
			release()
			check("a single candidate's lease")
		}
	})

	t.Run("ContextDone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := r1.Acquire(ctx, []int64{5}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire with a done context = %v", err)
		}
	})

	assertTTLs(t, c, prefix)
}

// A lease that is never released (its process was killed) stops counting
// after the TTL; one that is renewed outlives it.
func TestInFlight_LeaseTTL(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	const ttl = 600 * time.Millisecond
	live := redis.NewInFlight(c, prefix, ttl, nil)
	dead := redis.NewInFlight(c, prefix, ttl, nil)
	redis.StopRenewing(dead)

	_, release := acquire(t, live, 1)
	acquire(t, dead, 2) // never released, never renewed
	dead.Flush()
	start := time.Now()
	if got := counts(t, live, 1, 2); got[1] != 1 || got[2] != 1 {
		t.Fatalf("Counts = %v, want 1:1 2:1", got)
	}
	eventually(t, ttl+500*time.Millisecond, "the dead lease expires", func() bool {
		return counts(t, live, 2)[2] == 0
	})
	if d := time.Since(start); d < ttl-100*time.Millisecond {
		t.Errorf("the dead lease expired after %v, before its TTL of %v", d, ttl)
	}
	time.Sleep(time.Until(start.Add(2 * ttl)))
	if got := counts(t, live, 1)[1]; got != 1 {
		t.Fatalf("a renewed lease stopped counting after %v (TTL %v)", time.Since(start), ttl)
	}
	// The expired lease is dropped from its set by the next acquire.
	if id, release := acquire(t, live, 2); id != 2 {
		t.Fatal(id)
	} else {
		release()
	}
	live.Flush()
	if n := c.ZCard(testCtx(t), prefix+"inflight:2").Val(); n != 0 {
		t.Errorf("the lease set of node 2 still holds %d leases", n)
	}
	release()
	if got := counts(t, live, 1)[1]; got != 0 {
		t.Fatalf("count after release = %d, want 0", got)
	}
	assertTTLs(t, c, prefix)
}

// A process holding a lease is killed with SIGKILL: its lease counts while
// it renews it, and nothing is left once the TTL has passed.
func TestInFlight_KilledProcessLeaksNothing(t *testing.T) {
	t.Parallel()
	url, prefix := testenv.Redis(t)
	c := open(t, url)
	const ttl = 600 * time.Millisecond
	f := redis.NewInFlight(c, prefix, ttl, nil)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", helperEnv, url, prefix, ttl, 7))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "acquired" {
		t.Fatalf("helper: %q", line)
	}
	time.Sleep(ttl * 3 / 2)
	if got := counts(t, f, 7)[7]; got != 1 {
		t.Fatalf("count of the helper's lease after 1.5 TTL = %d, want 1 (renewed)", got)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	eventually(t, ttl+500*time.Millisecond, "the killed process's lease expires", func() bool {
		return counts(t, f, 7)[7] == 0
	})
	t.Logf("lease gone %v after SIGKILL (TTL %v)", time.Since(killed).Round(time.Millisecond), ttl)
	eventually(t, ttl+500*time.Millisecond, "the lease set itself expires", func() bool {
		return c.Exists(testCtx(t), prefix+"inflight:7").Val() == 0
	})
}

// Redis stops while requests are in flight: Acquire keeps working from this
// process's own counts, warns once, and goes back to shared leases by itself
// once Redis is back, re-adding the leases taken meanwhile.
func TestInFlight_RedisDown(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	c := open(t, srv.URL())
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const ttl = 900 * time.Millisecond
	f := redis.NewInFlight(c, "aivonx:", ttl, log)
	redis.SetCooldown(f, 200*time.Millisecond)
	ctx := testCtx(t)

	_, releaseShared := acquire(t, f, 1)
	f.Flush()
	if n := c.ZCard(ctx, "aivonx:inflight:1").Val(); n != 1 {
		t.Fatalf("lease set of node 1 holds %d leases, want 1", n)
	}

	srv.Stop()
	start := time.Now()
	var releases []func()
	picked := map[int64]int{}
	for range 40 {
		id, release := acquire(t, f, 1, 2, 3, 4)
		picked[id]++
		releases = append(releases, release)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("40 acquires with Redis down took %v", d)
	}
	_, releaseSingle := acquire(t, f, 9) // its background write finds Redis down
	// Least loaded by local counts (node 1 already had one): 41 leases
	// end up 10 or 11 per node.
	got := counts(t, f, 1, 2, 3, 4)
	for id := int64(1); id <= 4; id++ {
		if got[id] != 10 && got[id] != 11 || got[1]+got[2]+got[3]+got[4] != 41 {
			t.Fatalf("Counts with Redis down = %v (picks %v), want the local counts, balanced", got, picked)
		}
	}
	releaseShared() // must not block or fail
	for _, r := range releases[:20] {
		r()
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings with Redis down, want exactly 1:\n%s", n, logs.String())
	}

	srv.Start() // empty: it keeps no data
	other := redis.NewInFlight(c, "aivonx:", ttl, nil)
	// The leases still held are re-added by their renewal, so another
	// replica sees them.
	eventually(t, 3*time.Second, "held leases become shared again", func() bool {
		got, err := other.Counts(ctx, []int64{1, 2, 3, 4, 9})
		return err == nil && got[1]+got[2]+got[3]+got[4] == 20 && got[9] == 1
	})
	// The recovery line follows the write that re-added them, which the
	// other replica may see first.
	eventually(t, 3*time.Second, "the recovery is logged", func() bool {
		return strings.Contains(logs.String(), "level=INFO")
	})
	// New leases are shared again.
	id, release := acquire(t, f, 5)
	f.Flush()
	if n := c.ZCard(ctx, "aivonx:inflight:5").Val(); id != 5 || n != 1 {
		t.Fatalf("lease set of node 5 holds %d leases after Redis came back, want 1", n)
	}
	release()
	for _, r := range releases[20:] {
		r()
	}
	releaseSingle()
	f.Flush()
	if got, err := other.Counts(ctx, []int64{1, 2, 3, 4, 5, 9}); err != nil || got[1]+got[2]+got[3]+got[4]+got[5]+got[9] != 0 {
		t.Fatalf("Counts after every release = %v, %v", got, err)
	}
	assertTTLs(t, c, "aivonx:")
	if n := strings.Count(logs.String(), "level=INFO"); n != 1 {
		t.Errorf("%d info lines after Redis came back, want exactly 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings in all, want exactly 1:\n%s", n, logs.String())
	}
	t.Logf("log:\n%s", logs.String())
}

// Concurrent acquires and releases from many goroutines keep exact counts.
func TestInFlight_Concurrent(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	f := redis.NewInFlight(c, prefix, 5*time.Second, nil)
	var wg sync.WaitGroup
	hold := make(chan struct{})
	var mu sync.Mutex
	var releases []func()
	for range 30 {
		wg.Go(func() {
			_, release, err := f.Acquire(testCtx(t), []int64{1, 2, 3})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			releases = append(releases, release)
			mu.Unlock()
			<-hold
		})
	}
	eventually(t, 5*time.Second, "30 leases taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(releases) == 30
	})
	got := counts(t, f, 1, 2, 3)
	if got[1] != 10 || got[2] != 10 || got[3] != 10 {
		t.Errorf("30 concurrent acquires on 3 idle nodes: %v, want 10 each (atomic choose-and-take)", got)
	}
	close(hold)
	wg.Wait()
	for _, r := range releases {
		r()
	}
	if got := counts(t, f, 1, 2, 3); got[1]+got[2]+got[3] != 0 {
		t.Errorf("Counts after release = %v", got)
	}
}

// A request with a single candidate does not wait for Redis: its lease is
// written in the background, shared with other replicas within a moment,
// counted by its own replica at once, and removed after its release, also
// when releases race the background writes.
func TestInFlight_SingleCandidate(t *testing.T) {
	t.Parallel()
	c, prefix := newClient(t)
	r1 := redis.NewInFlight(c, prefix, 5*time.Second, nil)
	r2 := redis.NewInFlight(c, prefix, 5*time.Second, nil)

	_, release := acquire(t, r1, 1)
	if got := counts(t, r1, 1)[1]; got != 1 {
		t.Fatalf("own count right after a single-candidate acquire = %d, want 1", got)
	}
	eventually(t, time.Second, "another replica counts the lease", func() bool {
		return counts(t, r2, 1)[1] == 1
	})
	// It decides a choice on the other replica: node 2 is idle.
	if id, other := acquire(t, r2, 1, 2); id != 2 {
		t.Fatalf("picked node %d, want the idle node 2", id)
	} else {
		other()
	}
	release()
	eventually(t, time.Second, "the released lease stops counting", func() bool {
		return counts(t, r2, 1)[1] == 0
	})

	// Many short and long requests, released at random moments around the
	// background writes: exact counts while held, nothing left after.
	var wg sync.WaitGroup
	hold := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			_, release, err := r1.Acquire(testCtx(t), []int64{3})
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				<-hold
			} else {
				time.Sleep(time.Duration(i%7) * time.Millisecond)
			}
			release()
		})
	}
	eventually(t, 5*time.Second, "the 100 held leases are shared", func() bool {
		return counts(t, r2, 3)[3] == 100
	})
	close(hold)
	wg.Wait()
	r1.Flush()
	if got := counts(t, r2, 3)[3]; got != 0 {
		t.Fatalf("another replica counts %d leases after every release, want 0", got)
	}
	if n := c.ZCard(testCtx(t), prefix+"inflight:3").Val(); n != 0 {
		t.Fatalf("the lease set still holds %d leases", n)
	}
	assertTTLs(t, c, prefix)
}

// The Redis round trip a single candidate saves: a lease released before
// the background write never reaches Redis, and one still held reaches it
// with that write, not with Acquire.
func TestInFlight_SingleCandidateSkipsRedis(t *testing.T) {
	t.Parallel()
	c, prefix, calls, f := countedInFlight(t, time.Minute) // only Flush writes

	_, release := acquire(t, f, 1)
	release()
	f.Flush()
	if n := calls.load(); n != 0 {
		t.Fatalf("a lease released before its write cost %d Redis commands, want 0", n)
	}

	_, release = acquire(t, f, 1)
	if n := calls.load(); n != 0 {
		t.Fatalf("a single-candidate Acquire sent %d Redis commands, want 0", n)
	}
	f.Flush()
	if n := c.ZCard(testCtx(t), prefix+"inflight:1").Val(); n != 1 {
		t.Fatalf("after Flush the lease set holds %d leases, want 1", n)
	}
	release()
	f.Flush()
	if n := c.ZCard(testCtx(t), prefix+"inflight:1").Val(); n != 0 {
		t.Fatalf("after release and Flush the lease set holds %d leases, want 0", n)
	}
}

// countedInFlight returns an InFlight with the given write delay on a
// client of its own whose commands are counted.
func countedInFlight(t *testing.T, delay time.Duration) (*goredis.Client, string, *commandCounter, *redis.InFlight) {
	t.Helper()
	c, prefix := newClient(t)
	calls := &commandCounter{}
	c.AddHook(calls)
	f := redis.NewInFlight(c, prefix, 10*time.Second, nil)
	redis.SetWriteDelay(f, delay)
	return c, prefix, calls, f
}

// commandCounter is a go-redis hook counting the commands sent, alone or
// in pipelines.
type commandCounter struct {
	mu sync.Mutex
	n  int
}

func (h *commandCounter) load() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *commandCounter) add(n int) {
	h.mu.Lock()
	h.n += n
	h.mu.Unlock()
}

func (h *commandCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *commandCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.add(1)
		return next(ctx, cmd)
	}
}

func (h *commandCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.add(len(cmds))
		return next(ctx, cmds)
	}
}

// A single candidate's lease is written once it has lived for the write
// delay, not at the first background write after it was taken: back-to-back
// requests shorter than the delay cost Redis nothing at all, and of two
// held leases the younger is written a delay after the older.
func TestInFlight_SingleCandidateWriteDelay(t *testing.T) {
	t.Parallel()
	const delay = 400 * time.Millisecond
	c, prefix, calls, f := countedInFlight(t, delay)

	start := time.Now()
	for time.Since(start) < 3*delay {
		_, release := acquire(t, f, 1)
		time.Sleep(time.Millisecond)
		release()
	}
	if n := calls.load(); n != 0 {
		t.Fatalf("back-to-back 1 ms requests over %v sent %d Redis commands, want 0", 3*delay, n)
	}

	_, releaseOld := acquire(t, f, 2)
	time.Sleep(delay / 2)
	_, releaseYoung := acquire(t, f, 2)
	key := prefix + "inflight:2"
	eventually(t, 10*delay, "the older lease is written", func() bool { return c.ZCard(testCtx(t), key).Val() > 0 })
	if n := c.ZCard(testCtx(t), key).Val(); n != 1 {
		t.Fatalf("%d leases written when the older one was due, want 1 (the younger is not due yet)", n)
	}
	eventually(t, 10*delay, "the younger lease is written", func() bool { return c.ZCard(testCtx(t), key).Val() == 2 })
	releaseOld()
	releaseYoung()
	f.Flush()
	if n := c.ZCard(testCtx(t), key).Val(); n != 0 {
		t.Fatalf("%d leases left after release and Flush", n)
	}
}
