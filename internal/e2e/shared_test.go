package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
)

// Lease and lock TTLs: 30 s each in the binary (redis.DefaultLeaseTTL and
// redis.DefaultLockTTL). When the binary grows --lease-ttl (serve) and
// --lock-ttl (worker) the tests use short ones; until then they wait the
// defaults out, in parallel with each other.
func leaseTTL(t testing.TB) (time.Duration, []string) {
	if flagAvailable(t, "serve", "lease-ttl") {
		return 3 * time.Second, []string{"--lease-ttl", "3s"}
	}
	return 30 * time.Second, nil
}

func lockTTL(t testing.TB) (time.Duration, []string) {
	if flagAvailable(t, "worker", "lock-ttl") {
		return 3 * time.Second, []string{"--lock-ttl", "3s"}
	}
	return 30 * time.Second, nil
}

// TestSharedReplicas: two serve replicas and one worker on one Postgres
// schema and one Redis prefix.
func TestSharedReplicas(t *testing.T) {
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	sh := newShared(t, dbURL, redisURL, prefix)

	// A also serves "big", which only it has: streams of "big" load A alone.
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{model, "big"}, Tokens: 400, TokenDelay: 50 * time.Millisecond})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{model}})
	idA := sh.addNode(t, a.URL())
	idB := sh.addNode(t, b.URL())
	sh.startWorker(t, "worker")
	sh.waitPass(t, time.Time{}, 15*time.Second)
	r1 := startServe(t, serveOpts{name: "replica1", env: sh.env(), args: []string{"--health-interval", "1s"}})
	r2 := startServe(t, serveOpts{name: "replica2", env: sh.env(), args: []string{"--health-interval", "1s"}})
	ctx := context.Background()

	t.Run("streams on replica 1 steer replica 2", func(t *testing.T) {
		var streams []*stream
		for range 3 {
			s := openStreamFor(t, r1.URL, "big")
			if s.node != nodeName(a) {
				t.Fatalf("stream of big went to %q; only %s has it", s.node, nodeName(a))
			}
			streams = append(streams, s)
		}
		key := strconv.FormatInt(idA, 10)
		waitFor(t, 3*time.Second, "3 leases on node A in Redis", func() bool {
			l, err := sh.leases(t)
			return err == nil && l[key] == 3 && sum(l) == 3
		})
		if got := r2.activeByAddr(t); got[a.URL()] != 3 || got[b.URL()] != 0 {
			t.Errorf("replica 2's active-requests = %v; want 3 on %s and 0 on %s", got, a.URL(), b.URL())
		}
		beforeA, beforeB := a.Requests("/api/chat"), b.Requests("/api/chat")
		for i := range 6 {
			r := chat(ctx, nil, r2.URL)
			if !r.ok() {
				t.Fatalf("request %d through replica 2: %v", i, r)
			}
			if r.node != nodeName(b) {
				t.Errorf("request %d through replica 2 went to %q; A holds 3 streams, want %s", i, r.node, nodeName(b))
			}
		}
		if da, db := a.Requests("/api/chat")-beforeA, b.Requests("/api/chat")-beforeB; da != 0 || db != 6 {
			t.Errorf("fake nodes saw %d (A) and %d (B) new chats; want 0 and 6", da, db)
		}
		for _, s := range streams {
			s.Close()
		}
		waitFor(t, 3*time.Second, "the streams' leases to be released", func() bool {
			l, err := sh.leases(t)
			return err == nil && sum(l) == 0
		})
	})
	a.SetTokenDelay(0)

	t.Run("an API key's rate limit is one budget across replicas", func(t *testing.T) {
		_, key := sh.createKey(t, "--name", "e2e-limited", "--rpm", "3")
		for i, r := range []*server{r1, r2, r1} {
			if code := tagsWithKey(t, r, key); code != http.StatusOK {
				t.Fatalf("request %d of 3: %d", i+1, code)
			}
		}
		// Per replica, replica 2 has spent one of its 3.
		if code := tagsWithKey(t, r2, key); code != http.StatusTooManyRequests {
			t.Fatalf("fourth request of a 3/min key across two replicas: %d, want 429", code)
		}
	})

	t.Run("disabled node avoided by the other replica within a second", func(t *testing.T) {
		// Steady traffic through replica 2 while the CLI (no replica
		// involved) disables B.
		type sent struct {
			at time.Time
			r  reply
		}
		var mu sync.Mutex
		var log []sent
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				r := chat(ctx, nil, r2.URL)
				mu.Lock()
				log = append(log, sent{at, r})
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		time.Sleep(500 * time.Millisecond)
		mustCLI(t, sh.env(), "nodes", "disable", strconv.FormatInt(idB, 10))
		disabled := time.Now()
		time.Sleep(2500 * time.Millisecond)
		close(stop)
		<-done
		var after, onB int
		var lastB time.Time
		for _, s := range log {
			if !s.r.ok() {
				t.Errorf("request at %s failed: %v", s.at.Format("15:04:05.000"), s.r)
				continue
			}
			if s.r.node == nodeName(b) {
				lastB = s.at
			}
			if s.at.After(disabled.Add(time.Second)) {
				after++
				if s.r.node == nodeName(b) {
					onB++
				}
			}
		}
		if after < 10 {
			t.Fatalf("only %d requests more than a second after the change; the test needs more", after)
		}
		if onB > 0 {
			t.Errorf("%d of %d requests sent more than 1s after `nodes disable` returned still went to the disabled node (last one %s after)",
				onB, after, lastB.Sub(disabled).Round(time.Millisecond))
		}
		if !lastB.IsZero() {
			t.Logf("last request to the disabled node was sent %s after the CLI returned", lastB.Sub(disabled).Round(time.Millisecond))
		}

		// Sparse traffic: nothing reaches replica 2 between the change and
		// the next request, which comes 1.1 s later.
		mustCLI(t, sh.env(), "nodes", "enable", strconv.FormatInt(idB, 10))
		waitFor(t, 5*time.Second, "replica 2 to route to B again", func() bool {
			r := chat(ctx, nil, r2.URL)
			return r.ok() && r.node == nodeName(b)
		})
		time.Sleep(300 * time.Millisecond)
		mustCLI(t, sh.env(), "nodes", "disable", strconv.FormatInt(idB, 10))
		time.Sleep(1100 * time.Millisecond)
		// Concurrent requests spread over every candidate, so a stale view
		// shows for sure.
		// (About 200 ms each: A answers 400 tokens, B 5.)
		a.SetTokenDelay(500 * time.Microsecond)
		b.SetTokenDelay(40 * time.Millisecond)
		defer a.SetTokenDelay(0)
		defer b.SetTokenDelay(0)
		var wg sync.WaitGroup
		replies := make([]reply, 4)
		for i := range replies {
			wg.Add(1)
			go func() { defer wg.Done(); replies[i] = chat(ctx, nil, r2.URL) }()
		}
		wg.Wait()
		for i, r := range replies {
			if !r.ok() {
				t.Errorf("sparse request %d: %v", i, r)
			} else if r.node == nodeName(b) {
				t.Errorf("sparse request %d, sent 1.1s after `nodes disable` returned, went to the disabled node %s", i, r.node)
			}
		}
		mustCLI(t, sh.env(), "nodes", "enable", strconv.FormatInt(idB, 10))

		// The same through replica 1's management API.
		waitFor(t, 5*time.Second, "replica 2 to route to B again", func() bool {
			r := chat(ctx, nil, r2.URL)
			return r.ok() && r.node == nodeName(b)
		})
		time.Sleep(300 * time.Millisecond)
		path := "/api/proxy/nodes/" + strconv.FormatInt(idB, 10)
		if status, body := r1.adminDo(t, "PATCH", path, map[string]any{"enabled": false}); status != 200 {
			t.Fatalf("PATCH %s on replica 1: %d %s", path, status, body)
		}
		time.Sleep(1100 * time.Millisecond)
		for i := range replies {
			wg.Add(1)
			go func() { defer wg.Done(); replies[i] = chat(ctx, nil, r2.URL) }()
		}
		wg.Wait()
		for i, r := range replies {
			if !r.ok() {
				t.Errorf("request %d after PATCH on replica 1: %v", i, r)
			} else if r.node == nodeName(b) {
				t.Errorf("request %d through replica 2, sent 1.1s after replica 1 disabled B, went to B", i)
			}
		}
		if status, body := r1.adminDo(t, "PATCH", path, map[string]any{"enabled": true}); status != 200 {
			t.Fatalf("PATCH %s on replica 1: %d %s", path, status, body)
		}
	})

	t.Run("serve and worker refuse an un-migrated schema", func(t *testing.T) {
		fresh := &shared{dbURL: testenv.Postgres(t), redisURL: redisURL, prefix: prefix + "fresh:"}
		for _, args := range [][]string{
			{"serve", "--addr", "127.0.0.1:" + strconv.Itoa(freePort(t))},
			{"worker"},
		} {
			p := startProc(t, args[0]+"-unmigrated", fresh.env(), args...)
			code, ok := p.Wait(15 * time.Second)
			if !ok {
				t.Fatalf("%s on an un-migrated schema still runs after 15s", args[0])
			}
			out := p.Output()
			if code == 0 {
				t.Errorf("%s on an un-migrated schema exited 0", args[0])
			}
			if !strings.Contains(out, "aivonx migrate up") {
				t.Errorf("%s on an un-migrated schema: the message does not name `aivonx migrate up`:\n%s", args[0], out)
			}
		}
	})
}

// TestSharedSIGKILLLeaksNoLease: a replica killed with SIGKILL while it holds
// streams leaves leases behind that expire within the lease TTL.
func TestSharedSIGKILLLeaksNoLease(t *testing.T) {
	t.Parallel()
	ttl, ttlArgs := leaseTTL(t)
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	sh := newShared(t, dbURL, redisURL, prefix)
	fakes := startFakes(t, 2, fakeollama.Options{Tokens: 2000, TokenDelay: 50 * time.Millisecond})
	for _, f := range fakes {
		sh.addNode(t, f.URL())
	}
	sh.startWorker(t, "worker")
	sh.waitPass(t, time.Time{}, 15*time.Second)
	args := append([]string{"--health-interval", "1s"}, ttlArgs...)
	r1 := startServe(t, serveOpts{name: "replica1", env: sh.env(), args: args})
	r2 := startServe(t, serveOpts{name: "replica2", env: sh.env(), args: args})

	for range 4 {
		openStream(t, r1.URL)
	}
	waitFor(t, 3*time.Second, "4 leases in Redis", func() bool {
		l, err := sh.leases(t)
		return err == nil && sum(l) == 4
	})
	r1.Kill()
	killed := time.Now()
	waitFor(t, 5*time.Second, "the fake nodes to see the killed replica's streams end", func() bool {
		return fakes[0].Active()+fakes[1].Active() == 0
	})
	l, _ := sh.leases(t)
	t.Logf("right after SIGKILL: %d leases still in Redis (only the TTL removes them)", sum(l))

	var total int
	waitFor(t, ttl+5*time.Second, "the dead replica's leases to expire", func() bool {
		l, err := sh.leases(t)
		if err != nil || sum(l) != 0 {
			return false
		}
		total = 0
		for _, n := range r2.activeByAddr(t) {
			total += n
		}
		return total == 0
	})
	took := time.Since(killed)
	t.Logf("leases gone %s after SIGKILL (lease TTL %s)", took.Round(100*time.Millisecond), ttl)
	if took > ttl+2*time.Second {
		t.Errorf("leases took %s to expire; the lease TTL is %s", took, ttl)
	}

	// No leaked count skews the survivor: two streams land on two nodes.
	s1, s2 := openStream(t, r2.URL), openStream(t, r2.URL)
	if s1.node == s2.node {
		t.Errorf("two streams through replica 2 both went to %s; with no leaked counts they spread", s1.node)
	}
}

// TestSharedWorkerTakeover: of two workers one passes and the other stands
// by; the one passing, killed in the middle of a pass, holds the lock until
// it lapses; the other then takes over and keeps the statuses fresh.
func TestSharedWorkerTakeover(t *testing.T) {
	t.Parallel()
	ttl, ttlArgs := lockTTL(t)
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	sh := newShared(t, dbURL, redisURL, prefix)
	// A slow liveness answer makes every pass last about 2 s.
	slow := fakeollama.Start(t, fakeollama.Options{Models: []string{model}})
	slow.SetLivenessDelay(2 * time.Second)
	fast := fakeollama.Start(t, fakeollama.Options{Models: []string{model}})
	sh.addNode(t, slow.URL())
	sh.addNode(t, fast.URL())
	r := startServe(t, serveOpts{name: "replica", env: sh.env(), args: []string{"--health-interval", "10s"}})

	w1 := sh.startWorker(t, "worker1", ttlArgs...)
	first := sh.waitPass(t, time.Time{}, 15*time.Second)
	// The first worker keeps the lock between its passes: the second
	// stands by (and says so) rather than passing in turn.
	w2 := sh.startWorker(t, "worker2", ttlArgs...)
	waitFor(t, 10*time.Second, "worker 2 to stand by", func() bool {
		return strings.Contains(w2.Output(), "another worker holds the lock")
	})
	if strings.Contains(w2.Output(), "health pass done") || strings.Contains(w2.Output(), "took the worker lock") {
		t.Fatalf("worker 2 passed while worker 1 held the lock:\n%s", w2.Output())
	}
	// Kill worker 1, which holds the lock in and between its passes.
	sh.waitPass(t, first, 6*time.Second)
	time.Sleep(300 * time.Millisecond) // likely inside the next 2 s probe
	lockKey := prefix + "worker"
	if n, _ := sh.rdb.Exists(context.Background(), lockKey).Result(); n != 1 {
		t.Fatal("the lock is not held between passes")
	}
	w1.Kill()
	killed := time.Now()
	if n, _ := sh.rdb.Exists(context.Background(), lockKey).Result(); n != 1 {
		t.Fatal("the lock vanished with the killed worker; want it held until it lapses")
	}

	next := sh.waitPass(t, killed, ttl+10*time.Second)
	took := next.Sub(killed)
	t.Logf("worker 2's first pass ended %s after worker 1 was killed (lock TTL %s, a pass takes ~2s)", took.Round(100*time.Millisecond), ttl)
	if took > ttl+5*time.Second {
		t.Errorf("takeover took %s; the lock TTL is %s", took, ttl)
	}
	// Worker 2 keeps passing.
	sh.waitPass(t, next, 6*time.Second)
	h := r.health(t)
	if h.Worker.AgeSeconds == nil || *h.Worker.AgeSeconds > 8 || h.Worker.Stale {
		b, _ := json.Marshal(h)
		t.Errorf("/api/health after the takeover: %s; want a fresh worker pass", b)
	}
}

// TestRedisOutageDuringLoad: Redis stopped and restarted while 8 clients
// send non-streamed chats through two replicas: nothing fails, and leases
// and statuses are shared again once Redis is back.
func TestRedisOutageDuringLoad(t *testing.T) {
	rs := testenv.StartRedis(t)
	dbURL := testenv.Postgres(t)
	sh := newShared(t, dbURL, rs.URL(), "aivonxe2e:"+strconv.FormatInt(time.Now().UnixNano(), 36)+":")
	fakes := startFakes(t, 2, fakeollama.Options{Tokens: 5, TokenDelay: 4 * time.Millisecond})
	for _, f := range fakes {
		sh.addNode(t, f.URL())
	}
	sh.startWorker(t, "worker")
	sh.waitPass(t, time.Time{}, 15*time.Second)
	replicas := []*server{
		startServe(t, serveOpts{name: "replica1", env: sh.env(), args: []string{"--health-interval", "1s"}}),
		startServe(t, serveOpts{name: "replica2", env: sh.env(), args: []string{"--health-interval", "1s"}}),
	}

	resc := make(chan loadResult, 1)
	go func() {
		resc <- runLoad(8, 6*time.Second, func(ctx context.Context, w int) reply {
			return chat(ctx, nil, replicas[w%2].URL)
		})
	}()
	time.Sleep(1500 * time.Millisecond)
	rs.Stop()
	stopped := time.Now()
	time.Sleep(2 * time.Second)
	rs.Start()
	restarted := time.Now()
	(<-resc).checkOutage(t, "Redis", stopped, restarted)

	// Shared state resumes: the worker refills the statuses, and requests
	// in flight show up as leases again.
	waitFor(t, 10*time.Second, "the worker's statuses in Redis again", func() bool {
		n, err := sh.rdb.Exists(context.Background(), sh.prefix+"fleet").Result()
		return err == nil && n == 1
	})
	for _, f := range fakes {
		f.SetTokenDelay(50 * time.Millisecond)
	}
	var streams []*stream
	waitFor(t, 10*time.Second, "leases in Redis again", func() bool {
		for _, r := range replicas {
			streams = append(streams, openStream(t, r.URL))
		}
		l, err := sh.leases(t)
		return err == nil && sum(l) > 0
	})
	for _, s := range streams {
		s.Close()
	}
	for _, r := range replicas {
		if h := r.health(t); h.Dependencies["redis"]["status"] != "ok" {
			t.Errorf("%s /api/health after the restart: redis %v", r.name, h.Dependencies["redis"])
		}
		// One warning per outage, not one per request.
		warns := 0
		for _, line := range strings.Split(r.Output(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(strings.ToLower(line), "redis") {
				warns++
			}
		}
		t.Logf("%s logged %d warnings about Redis", r.name, warns)
		if warns > 6 {
			t.Errorf("%s logged %d warnings about Redis during one outage; want a few, not one per request", r.name, warns)
		}
	}
}

// TestPostgresOutage: Postgres stopped while clients send chats: proxying
// goes on, admin writes fail with a clear error, and after the restart
// nothing written before is lost.
func TestPostgresOutage(t *testing.T) {
	pg := testenv.StartPostgres(t)
	redisURL, prefix := testenv.Redis(t)
	sh := newShared(t, pg.URL(), redisURL, prefix)
	fakes := startFakes(t, 2, fakeollama.Options{Tokens: 5, TokenDelay: 4 * time.Millisecond})
	for _, f := range fakes {
		sh.addNode(t, f.URL())
	}
	mustCLI(t, sh.env(), "nodes", "add", "--name", "written-before", "--disabled", "http://127.0.0.1:9")
	sh.startWorker(t, "worker")
	sh.waitPass(t, time.Time{}, 15*time.Second)
	r := startServe(t, serveOpts{name: "replica", env: sh.env(), args: []string{"--health-interval", "1s"}})
	r.activeByAddr(t) // logs in while Postgres is up

	resc := make(chan loadResult, 1)
	go func() {
		resc <- runLoad(8, 6*time.Second, func(ctx context.Context, _ int) reply { return chat(ctx, nil, r.URL) })
	}()
	time.Sleep(1500 * time.Millisecond)
	pg.Stop()
	stopped := time.Now()

	start := time.Now()
	out, err := runCLI(t, sh.env(), "nodes", "add", "http://127.0.0.1:10")
	took := time.Since(start)
	t.Logf("`nodes add` with Postgres down took %s: %v\n%s", took.Round(time.Millisecond), err, strings.TrimSpace(out))
	if err == nil {
		t.Errorf("`nodes add` with Postgres down succeeded:\n%s", out)
	} else {
		lo := strings.ToLower(out)
		if !strings.Contains(lo, "postgres") && !strings.Contains(lo, "database") {
			t.Errorf("`nodes add` with Postgres down: the error does not say that the database is unreachable:\n%s", out)
		}
	}
	if took > 10*time.Second {
		t.Errorf("`nodes add` with Postgres down took %s to fail", took)
	}
	// The management API answers 503 with a message, in Ollama's shape.
	status, body := r.adminDo(t, "POST", "/api/proxy/nodes", map[string]any{"base_url": "http://127.0.0.1:12"})
	t.Logf("POST /api/proxy/nodes with Postgres down: %d %s", status, body)
	if status != 503 {
		t.Errorf("POST /api/proxy/nodes with Postgres down: %d %s; want 503", status, body)
	} else {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("POST /api/proxy/nodes with Postgres down: %s; want {\"error\":…}", body)
		}
	}
	if h := r.health(t); h.Dependencies["postgres"]["status"] != "down" {
		t.Errorf("/api/health with Postgres down: postgres %v; want down", h.Dependencies["postgres"])
	}
	if rest := 3*time.Second - time.Since(stopped); rest > 0 {
		time.Sleep(rest)
	}
	pg.Start()
	restarted := time.Now()
	(<-resc).checkOutage(t, "Postgres", stopped, restarted)

	// Nothing written before the outage is lost, and writes work again.
	var nodes []struct {
		Name    string `json:"name"`
		BaseURL string `json:"base_url"`
		Enabled bool   `json:"enabled"`
	}
	listed := mustCLI(t, sh.env(), "nodes", "list", "--json")
	if err := json.Unmarshal([]byte(listed), &nodes); err != nil {
		t.Fatalf("nodes list --json: %v\n%s", err, listed)
	}
	got := map[string]bool{}
	for _, n := range nodes {
		got[n.Name] = n.Enabled
		if n.Name == "written-before" && n.BaseURL != "http://127.0.0.1:9" {
			t.Errorf("nodes list --json: base_url %q, want http://127.0.0.1:9 (the API's field names)", n.BaseURL)
		}
	}
	want := map[string]bool{nodeName(fakes[0]): true, nodeName(fakes[1]): true, "written-before": false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("nodes after the outage: %v; want %v", got, want)
	}
	mustCLI(t, sh.env(), "nodes", "add", "http://127.0.0.1:11")
	sh.waitPass(t, restarted, 10*time.Second)
	if h := r.health(t); h.Dependencies["postgres"]["status"] != "ok" {
		t.Errorf("/api/health after the restart: postgres %v", h.Dependencies["postgres"])
	}
}

// TestSharedKeyRevokedEverywhere: a key revoked through one replica, or by
// the CLI, stops working on every replica at once, not when their key
// caches expire (30 s).
func TestSharedKeyRevokedEverywhere(t *testing.T) {
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	sh := newShared(t, dbURL, redisURL, prefix)
	sh.addNode(t, fakeollama.Start(t, fakeollama.Options{Models: []string{model}}).URL())
	sh.startWorker(t, "worker")
	sh.waitPass(t, time.Time{}, 15*time.Second)
	args := []string{"--require-api-key"}
	r1 := startServe(t, serveOpts{name: "replica1", env: sh.env(), args: args})
	r2 := startServe(t, serveOpts{name: "replica2", env: sh.env(), args: args})

	// rejectedSoon waits for s to refuse key, far below the cache TTL.
	rejectedSoon := func(s *server, key, how string) {
		start := time.Now()
		waitFor(t, 2*time.Second, how+": the key is refused", func() bool { return tagsWithKey(t, s, key) == http.StatusUnauthorized })
		t.Logf("%s: refused after %v", how, time.Since(start).Round(time.Millisecond))
	}

	id, key := sh.createKey(t, "--name", "via-api")
	for _, s := range []*server{r1, r2} {
		if code := tagsWithKey(t, s, key); code != http.StatusOK {
			t.Fatalf("%s with a new key: %d", s.name, code) // now cached on both
		}
	}
	if code, body := r1.adminDo(t, http.MethodDelete, "/api/keys/"+id, nil); code != http.StatusNoContent {
		t.Fatalf("revoke through replica 1: %d %s", code, body)
	}
	rejectedSoon(r2, key, "revoked through replica 1, used on replica 2")

	id, key = sh.createKey(t, "--name", "via-cli")
	for _, s := range []*server{r1, r2} {
		if code := tagsWithKey(t, s, key); code != http.StatusOK {
			t.Fatalf("%s with a new key: %d", s.name, code)
		}
	}
	mustCLI(t, sh.env(), "keys", "revoke", id)
	rejectedSoon(r1, key, "revoked by the CLI, used on replica 1")
	rejectedSoon(r2, key, "revoked by the CLI, used on replica 2")

	// Password guesses spread over the replicas lock the username on all of
	// them after five failures, as on one.
	login := func(s *server, password string) int {
		resp, err := quickClient.Post(s.URL+"/api/account/login", "application/json",
			strings.NewReader(`{"username":"ghost","password":"`+password+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, s := range []*server{r1, r2, r1, r2, r1} {
		if code := login(s, fmt.Sprint("guess", i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d on %s: %d, want 401", i+1, s.name, code)
		}
	}
	if code := login(r2, "guess5"); code != http.StatusTooManyRequests {
		t.Fatalf("a sixth guess across two replicas: %d, want 429", code)
	}
}

// createKey makes an API key through the CLI (args: its flags) and returns
// its ID and plaintext.
func (s *shared) createKey(t testing.TB, args ...string) (id, key string) {
	t.Helper()
	out := mustCLI(t, s.env(), append([]string{"keys", "create"}, args...)...)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "aivx_") {
			key = strings.TrimSpace(line)
		}
		if _, rest, ok := strings.Cut(line, "created key "); ok {
			id, _, _ = strings.Cut(rest, " ")
		}
	}
	if key == "" || id == "" {
		t.Fatalf("keys create: %s", out)
	}
	return id, key
}

// tagsWithKey sends GET /api/tags to s with an API key and returns the
// status.
func tagsWithKey(t testing.TB, s *server, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/api/tags", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := quickClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
