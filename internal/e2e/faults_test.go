package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// sendN sends n non-streamed chats, conc at a time.
func sendN(base string, n, conc int) []reply {
	out := make([]reply, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				out[i] = chat(context.Background(), nil, base)
			}
		}()
	}
	wg.Wait()
	return out
}

// checkAllOn fails unless every reply succeeded and came from node.
func checkAllOn(t *testing.T, what string, replies []reply, node string) {
	t.Helper()
	bad, elsewhere := 0, 0
	for _, r := range replies {
		switch {
		case !r.ok():
			if bad == 0 {
				t.Errorf("%s: first failure: %v", what, r)
			}
			bad++
		case r.node != node:
			elsewhere++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d requests failed", what, bad, len(replies))
	}
	if elsewhere > 0 {
		t.Errorf("%s: %d of %d requests were answered by another node than %s", what, elsewhere, len(replies), node)
	}
}

// waitRouted waits until a request through s is answered by node.
func waitRouted(t *testing.T, s *server, node string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, d, "requests to reach "+node+" again", func() bool {
		r := chat(context.Background(), nil, s.URL)
		return r.ok() && r.node == node
	})
	return time.Since(start)
}

// TestFaultRefusedOrBusyNode: a node that refuses connections, or answers
// 503 busy, costs no request while another candidate exists.
func TestFaultRefusedOrBusyNode(t *testing.T) {
	fakes := startFakes(t, 2, fakeollama.Options{})
	a, b := fakes[0], fakes[1]
	s := startServe(t, serveOpts{nodes: fakes, args: []string{"--health-interval", "1s", "--rise", "1"}})

	t.Run("refused", func(t *testing.T) {
		a.Stop()
		checkAllOn(t, "node A refusing connections", sendN(s.URL, 200, 4), nodeName(b))
		if err := a.Restart(); err != nil {
			t.Fatal(err)
		}
		took := waitRouted(t, s, nodeName(a), 6*time.Second)
		t.Logf("A took requests again %s after its restart", took.Round(10*time.Millisecond))
	})
	t.Run("busy", func(t *testing.T) {
		a.SetBusy(true)
		defer a.SetBusy(false)
		before := a.Requests("/api/chat")
		checkAllOn(t, "node A answering 503 busy", sendN(s.URL, 200, 4), nodeName(b))
		if a.Requests("/api/chat") == before {
			t.Error("the busy node got no request at all; the test did not exercise the 503 path")
		}
	})
}

// TestFaultNodeDiesMidStream: the clients of a node that dies get an error
// line; new requests avoid the node at once; it rejoins after its restart
// and a passed check.
func TestFaultNodeDiesMidStream(t *testing.T) {
	fakes := startFakes(t, 2, fakeollama.Options{Tokens: 40, TokenDelay: 50 * time.Millisecond})
	a, b := fakes[0], fakes[1]
	s := startServe(t, serveOpts{nodes: fakes, args: []string{"--health-interval", "1s", "--rise", "1"}})

	var onA, onB []*stream
	for range 4 {
		st := openStream(t, s.URL)
		if st.node == nodeName(a) {
			onA = append(onA, st)
		} else {
			onB = append(onB, st)
		}
	}
	if len(onA) != 2 || len(onB) != 2 {
		t.Fatalf("4 streams spread %d/%d over the two nodes; least-active gives 2/2", len(onA), len(onB))
	}
	a.Stop()
	for i, st := range onA {
		done, errLine, err := st.finish()
		if errLine == "" || done {
			t.Errorf("stream %d on the dead node: done=%v, error line %q, read error %v; want an error line", i, done, errLine, err)
		} else {
			t.Logf("stream %d on the dead node ended with %q (read error: %v)", i, errLine, err)
		}
	}
	// New requests avoid A at once: no attempt on it at all.
	a.SetTokenDelay(0)
	b.SetTokenDelay(0)
	marks := strings.Count(s.Output(), `"msg":"node unreachable"`)
	checkAllOn(t, "right after A died", sendN(s.URL, 20, 1), nodeName(b))
	if n := strings.Count(s.Output(), `"msg":"node unreachable"`); n != marks {
		t.Errorf("requests after A died still tried it (%d more 'node unreachable' warnings)", n-marks)
	}
	for i, st := range onB {
		if done, errLine, err := st.finish(); !done || errLine != "" || err != nil {
			t.Errorf("stream %d on the healthy node: done=%v, error %q, read error %v", i, done, errLine, err)
		}
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	took := waitRouted(t, s, nodeName(a), 5*time.Second)
	t.Logf("A took requests again %s after its restart (--health-interval 1s --rise 1)", took.Round(10*time.Millisecond))
}

// TestFaultFlappingNode: one node stops and restarts every 300 ms for 5 s
// under steady load; at least 99.9% of requests succeed.
func TestFaultFlappingNode(t *testing.T) {
	fakes := startFakes(t, 2, fakeollama.Options{})
	a := fakes[0]
	s := startServe(t, serveOpts{nodes: fakes, args: []string{"--health-interval", "1s", "--rise", "1"}})

	stop := make(chan struct{})
	flapped := make(chan int)
	go func() {
		n := 0
		defer func() { _ = a.Restart(); flapped <- n }()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if n%2 == 0 {
				a.Stop()
			} else {
				_ = a.Restart()
			}
			n++
		}
	}()
	before := a.Requests("/api/chat")
	res := runLoad(8, 5*time.Second, func(ctx context.Context, _ int) reply { return chat(ctx, nil, s.URL) })
	close(stop)
	toggles := <-flapped
	failed := res.failures()
	total := len(res.replies)
	rate := float64(total-len(failed)) / float64(max(total, 1))
	t.Logf("%d requests, %d failed (%.3f%% ok), %d toggles, by node %v, flapping node saw %d chats",
		total, len(failed), 100*rate, toggles, res.byNode(), a.Requests("/api/chat")-before)
	if total < 500 {
		t.Errorf("only %d requests in 5 s; the test needs more", total)
	}
	if rate < 0.999 {
		t.Errorf("success rate %.3f%%; want at least 99.9%%; failures:\n%s", 100*rate, strings.Join(failed[:min(10, len(failed))], "\n"))
	}
	if a.Requests("/api/chat") == before {
		t.Error("the flapping node never got a request; the test did not exercise it")
	}
}

// TestFaultSlowNodeLowestLatency: with lowest_latency, traffic leaves the
// node whose liveness probe is slow (and comes back when the other one is
// the slow one); with least_active it does not.
func TestFaultSlowNodeLowestLatency(t *testing.T) {
	fakes := startFakes(t, 2, fakeollama.Options{})
	a, b := fakes[0], fakes[1]
	dir := t.TempDir()
	s := startServe(t, serveOpts{nodes: fakes, dataDir: dir, args: []string{"--health-interval", "1s"}})
	a.SetLivenessDelay(150 * time.Millisecond)
	time.Sleep(2500 * time.Millisecond) // two passes see A slow

	// least_active (the default) ignores latency: both nodes serve.
	by := map[string]int{}
	for _, r := range sendN(s.URL, 40, 1) {
		if !r.ok() {
			t.Fatalf("least_active: %v", r)
		}
		by[r.node]++
	}
	if by[nodeName(a)] == 0 || by[nodeName(b)] == 0 {
		t.Errorf("least_active sent 40 sequential requests as %v; want both nodes used", by)
	}

	mustCLI(t, nil, "config", "set", "--data-dir", dir, "strategy", "lowest_latency")
	allOn := func(node string) func() bool {
		return func() bool {
			for _, r := range sendN(s.URL, 20, 1) {
				if !r.ok() || r.node != node {
					return false
				}
			}
			return true
		}
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "lowest_latency to send 20 requests in a row to the fast node B", allOn(nodeName(b)))
	t.Logf("traffic left the slow node %s after `config set strategy lowest_latency`", time.Since(start).Round(10*time.Millisecond))

	a.SetLivenessDelay(0)
	b.SetLivenessDelay(150 * time.Millisecond)
	start = time.Now()
	waitFor(t, 6*time.Second, "lowest_latency to send 20 requests in a row to A once B is the slow one", allOn(nodeName(a)))
	t.Logf("traffic moved to A %s after B became slow", time.Since(start).Round(10*time.Millisecond))
}

// TestSIGTERMDrainsStreams: on SIGTERM the listener closes at once, the
// streams in flight run to their end, and the process exits 0.
func TestSIGTERMDrainsStreams(t *testing.T) {
	t.Run("streams finish", func(t *testing.T) {
		fakes := startFakes(t, 2, fakeollama.Options{Tokens: 20, TokenDelay: 100 * time.Millisecond})
		s := startServe(t, serveOpts{nodes: fakes, args: []string{"--shutdown-timeout", "10s"}})
		var streams []*stream
		for range 3 {
			streams = append(streams, openStream(t, s.URL))
		}
		s.Signal(syscall.SIGTERM)
		sent := time.Now()
		waitFor(t, 2*time.Second, "the listener to close", func() bool {
			c, err := net.DialTimeout("tcp", s.addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		for i, st := range streams {
			if done, errLine, err := st.finish(); !done || errLine != "" || err != nil {
				t.Errorf("stream %d after SIGTERM: done=%v, error line %q, read error %v; want it complete", i, done, errLine, err)
			}
		}
		code, ok := s.Wait(10 * time.Second)
		if !ok || code != 0 {
			t.Fatalf("after SIGTERM: exited=%v code=%d; want exit 0", ok, code)
		}
		t.Logf("exited 0 %s after SIGTERM with 3 streams of ~2 s", time.Since(sent).Round(10*time.Millisecond))
	})
	t.Run("streams cut at the shutdown timeout", func(t *testing.T) {
		fakes := startFakes(t, 1, fakeollama.Options{Tokens: 200, TokenDelay: 50 * time.Millisecond})
		s := startServe(t, serveOpts{nodes: fakes, args: []string{"--shutdown-timeout", "1s"}})
		st := openStream(t, s.URL)
		s.Signal(syscall.SIGTERM)
		sent := time.Now()
		code, ok := s.Wait(5 * time.Second)
		took := time.Since(sent)
		if !ok || code != 0 {
			t.Fatalf("after SIGTERM with a 10 s stream and --shutdown-timeout 1s: exited=%v code=%d; want exit 0", ok, code)
		}
		if took < 900*time.Millisecond || took > 3*time.Second {
			t.Errorf("exited %s after SIGTERM; want about the 1 s shutdown timeout", took)
		}
		// Cut, but not silently: a cut NDJSON stream looks complete to the
		// Go client and the ollama CLI.
		if done, errLine, _ := st.finish(); done || !strings.Contains(errLine, "shutting down") {
			t.Errorf("a 10 s stream cut by the 1 s shutdown timeout: done=%v, error line %q; want an error line saying so", done, errLine)
		}
	})
}

// TestRollingRestart: two replicas restarted one after the other (SIGTERM,
// then a new process on the same port) behind a client-side round robin
// that, as a load balancer would, tries the other replica when a connection
// fails before any response: refused (the listener is closed), or reset or
// closed without a byte (a connection still in the kernel's accept queue
// when the old process closed its listener: no server can avoid resetting
// those, and the process never read the request; its exit code 0 shows it
// abandoned nothing it had accepted). No request is lost.
func TestRollingRestart(t *testing.T) {
	fakes := startFakes(t, 2, fakeollama.Options{Tokens: 5, TokenDelay: 20 * time.Millisecond})
	var mu sync.Mutex
	replicas := make([]*server, 2)
	opts := make([]serveOpts, 2)
	for i := range replicas {
		opts[i] = serveOpts{name: "replica", nodes: fakes, port: freePort(t), dataDir: t.TempDir(),
			args: []string{"--shutdown-timeout", "10s", "--health-interval", "1s"}}
		replicas[i] = startServe(t, opts[i])
	}
	urls := []string{replicas[0].URL, replicas[1].URL}
	// A new connection per request, as a layer-4 balancer makes.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var refused, reset atomic.Int64
	var rr atomic.Int64
	stop := make(chan struct{})
	resc := make(chan loadResult, 1)
	go func() {
		resc <- runLoadUntil(8, stop, func(ctx context.Context, _ int) reply {
			i := int(rr.Add(1))
			var r reply
			for try := range 2 {
				r = chat(ctx, client, urls[(i+try)%2])
				switch {
				case r.err == nil || r.status != 0:
					return r // an answer, or a failure after one began
				case errors.Is(r.err, syscall.ECONNREFUSED):
					refused.Add(1)
				case errors.Is(r.err, io.EOF), errors.Is(r.err, syscall.ECONNRESET):
					reset.Add(1)
				default:
					return r
				}
			}
			return r
		})
	}()
	time.Sleep(500 * time.Millisecond)
	for i := range replicas {
		mu.Lock()
		old := replicas[i]
		mu.Unlock()
		old.Signal(syscall.SIGTERM)
		if code, ok := old.Wait(15 * time.Second); !ok || code != 0 {
			t.Fatalf("replica %d after SIGTERM: exited=%v code=%d", i, ok, code)
		}
		nr := startServe(t, opts[i])
		mu.Lock()
		replicas[i] = nr
		mu.Unlock()
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	res := <-resc
	failed := res.failures()
	t.Logf("%d requests during the rolling restart; sent to the other replica: %d refused, %d reset before any response; by node %v",
		len(res.replies), refused.Load(), reset.Load(), res.byNode())
	if len(failed) > 0 {
		t.Errorf("%d of %d requests lost during the rolling restart; first:\n%s", len(failed), len(res.replies), strings.Join(failed[:min(10, len(failed))], "\n"))
	}
	if refused.Load() == 0 {
		t.Error("no connection was refused; the test did not exercise the restart")
	}
}
