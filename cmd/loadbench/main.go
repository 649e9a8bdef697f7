// Command loadbench measures what Aivonx adds on top of going to a node
// directly. It starts fake Ollama nodes (cmd/fakeollama), nginx when
// installed, a Go floor (floor.go) and the real aivonx binary as separate
// processes, drives the same streamed-chat
// workload at each target in one run, and prints a Markdown table:
// requests/s, latency p50/p99 and the proxy's CPU time per request (from
// /proc, so the load generator's own CPU is not counted).
//
//	go run ./cmd/loadbench -duration 5s
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == floorFlag {
		if err := serveFloor(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench floor proxy:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

type options struct {
	duration    time.Duration
	concurrency []int
	tokens      int
	tokenDelay  time.Duration
	nodes       int
	bin         string
	fake        string
	redisURL    string
	databaseURL string
	streams     int
	streamLen   int
	rounds      int
}

func run() error {
	var o options
	var conc string
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long each measurement runs")
	flag.StringVar(&conc, "concurrency", "1,32", "comma-separated concurrency levels")
	flag.IntVar(&o.tokens, "tokens", 5, "tokens per streamed answer")
	flag.DurationVar(&o.tokenDelay, "token-delay", 0, "fake node's delay between tokens")
	flag.IntVar(&o.nodes, "nodes", 1, "fake nodes behind the proxy")
	flag.StringVar(&o.bin, "aivonx", "", "aivonx binary (default: build it)")
	flag.StringVar(&o.fake, "fakeollama", "", "fakeollama binary (default: build it)")
	flag.StringVar(&o.redisURL, "redis-url", os.Getenv("AIVONX_TEST_REDIS_URL"), "also measure the shared mode (with --database-url)")
	flag.StringVar(&o.databaseURL, "database-url", os.Getenv("AIVONX_TEST_DATABASE_URL"), "Postgres for the shared mode (a scratch database: its nodes are removed)")
	flag.IntVar(&o.streams, "streams", 0, "also open this many concurrent long streams per target (0: skip)")
	flag.IntVar(&o.streamLen, "stream-tokens", 100, "tokens per long stream (at -stream-delay apart)")
	flag.IntVar(&o.rounds, "rounds", 3, "split each cell's duration into this many rounds, interleaved across the targets")
	flag.Parse()
	if o.rounds < 1 {
		return fmt.Errorf("bad -rounds %d", o.rounds)
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -concurrency %q", conc)
		}
		o.concurrency = append(o.concurrency, n)
	}

	tmp, err := os.MkdirTemp("", "loadbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.bin == "" {
		o.bin = filepath.Join(tmp, "aivonx")
		if err := build(o.bin, "./cmd/aivonx"); err != nil {
			return err
		}
	}
	if o.fake == "" {
		o.fake = filepath.Join(tmp, "fakeollama")
		if err := build(o.fake, "./cmd/fakeollama"); err != nil {
			return err
		}
	}

	var nodeURLs []string
	for range o.nodes {
		p, url, err := startFake(o)
		if err != nil {
			return err
		}
		defer stop(p)
		nodeURLs = append(nodeURLs, url)
	}

	targets := []target{{name: "direct", url: nodeURLs[0]}}
	if ng, nurl, err := startNginx(tmp, nodeURLs[0]); err == nil {
		defer stop(ng)
		targets = append(targets, target{name: "nginx (1 worker, keepalive)", url: nurl, pid: ng.Process.Pid})
	} else {
		fmt.Fprintln(os.Stderr, "loadbench: no nginx baseline:", err)
	}
	floor, furl, err := startFloor(nodeURLs[0])
	if err != nil {
		return fmt.Errorf("floor proxy: %w", err)
	}
	defer stop(floor)
	targets = append(targets, target{name: floorName, url: furl, pid: floor.Process.Pid})
	proxy, purl, err := startProxy(o, tmp, nodeURLs, nil)
	if err != nil {
		return err
	}
	defer stop(proxy)
	targets = append(targets, target{name: "aivonx (embedded)", url: purl, pid: proxy.Process.Pid})
	if o.redisURL != "" && o.databaseURL != "" {
		env := []string{"DATABASE_URL=" + o.databaseURL, "REDIS_URL=" + o.redisURL, "AIVONX_REDIS_PREFIX=loadbench:",
			"AIVONX_SECRET_KEY=" + rand.Text() + rand.Text()}
		if out, err := exec.Command(o.bin, append([]string{"migrate", "up"}, "--database-url", o.databaseURL)...).CombinedOutput(); err != nil {
			return fmt.Errorf("migrate: %v: %s", err, out)
		}
		if err := clearNodes(o); err != nil {
			return err
		}
		shared, surl, err := startProxy(o, tmp, nodeURLs, append(env, "AIVONX_WITH_WORKER=true"))
		if err != nil {
			return err
		}
		defer stop(shared)
		targets = append(targets, target{name: "aivonx (Redis leases)", url: surl, pid: shared.Process.Pid, env: append(env, "AIVONX_WITH_WORKER=true")})
	}

	fmt.Printf("machine: %s\n\n", machine())
	fmt.Printf("streamed /api/chat, %d tokens per answer, token delay %s, %s per cell in %d interleaved rounds, %d node(s)\n\n",
		o.tokens, o.tokenDelay, o.duration, o.rounds, o.nodes)
	fmt.Println("| target | concurrency | requests/s | p50 | p99 | added p50 | added p99 | proxy CPU/request | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range o.concurrency {
		// The targets take turns, a slice of the cell's time each per
		// round, so that a noisy stretch of a shared machine falls on
		// all of them rather than on whichever ran then.
		samples := make([]sample, len(targets))
		for range o.rounds {
			for i, t := range targets {
				samples[i].add(measure(t, c, o.duration/time.Duration(o.rounds)))
			}
		}
		base := samples[0].result()
		for i, t := range targets {
			r := samples[i].result()
			added50, added99, cpu := "", "", ""
			if i > 0 {
				added50 = fmtDur(r.p50 - base.p50)
				added99 = fmtDur(r.p99 - base.p99)
				cpu = fmtDur(r.cpuPerReq)
			}
			fmt.Printf("| %s | %d | %.0f (%.0f%%) | %s | %s | %s | %s | %s | %d |\n", t.name, c, r.rps, 100*r.rps/base.rps,
				fmtDur(r.p50), fmtDur(r.p99), added50, added99, cpu, r.errors)
		}
	}
	fmt.Println()
	return reportStreaming(o, tmp, targets)
}

// reportStreaming measures, per target, the time to first token a proxy
// adds at a 20 ms token delay and the lag of every line behind its creation
// on the node; with -streams, the same under many concurrent long streams
// plus the proxy's peak RSS. It uses its own slow node, so the throughput
// table below is unaffected.
func reportStreaming(o options, tmp string, fast []target) error {
	slow, url, err := startAndWait(exec.Command(o.fake, "--addr", "127.0.0.1:0", "--models", "llama3:latest",
		"--tokens", "10", "--token-delay", "20ms"), "listening on ")
	if err != nil {
		return err
	}
	defer stop(slow)
	targets, err := retarget(o, tmp, fast, url)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range targets {
			if t.cmd != nil {
				stop(t.cmd)
			}
		}
	}()
	fmt.Println("time to first token and per-line lag, 10 tokens 20 ms apart, one stream at a time (200 streams)")
	fmt.Println()
	fmt.Println("| target | TTFT p50 | TTFT p90 | added TTFT p50 | line lag p50 | line lag p99 | line lag max | lines within 1 ms | lines held ≥ 10 ms | failures |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var base time.Duration
	for i, t := range targets {
		var all streamStats
		for range 200 {
			s := runStreams(t, 1, 10*time.Second)
			all.ttft = append(all.ttft, s.ttft...)
			all.lag = append(all.lag, s.lag...)
			all.failures += s.failures
		}
		p50 := pct(all.ttft, 50)
		if i == 0 {
			base = p50
		}
		added := ""
		if i > 0 {
			added = fmtDur(p50 - base)
		}
		within, held := 0, 0
		for _, l := range all.lag {
			if l <= time.Millisecond {
				within++
			}
			if l >= 10*time.Millisecond { // a line held back for the next token would lag ≥ 20 ms
				held++
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %.2f%% | %d of %d | %d |\n", t.name, fmtDur(p50), fmtDur(pct(all.ttft, 90)), added,
			fmtDur(pct(all.lag, 50)), fmtDur(pct(all.lag, 99)), fmtDur(pct(all.lag, 100)),
			100*float64(within)/float64(max(len(all.lag), 1)), held, len(all.lag), all.failures)
	}
	fmt.Println()
	if o.streams == 0 {
		return nil
	}
	delay := 100 * time.Millisecond
	long, lurl, err := startAndWait(exec.Command(o.fake, "--addr", "127.0.0.1:0", "--models", "llama3:latest",
		"--tokens", strconv.Itoa(o.streamLen), "--token-delay", delay.String()), "listening on ")
	if err != nil {
		return err
	}
	defer stop(long)
	ltargets, err := retarget(o, tmp, fast, lurl)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range ltargets {
			if t.cmd != nil {
				stop(t.cmd)
			}
		}
	}()
	fmt.Printf("%d concurrent streams, %d tokens %s apart, all opened at once\n\n", o.streams, o.streamLen, delay)
	fmt.Println("| target | TTFT p50 | TTFT p90 | TTFT p90 vs direct | line lag p99 | peak RSS | failures |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	var base90 time.Duration
	for i, t := range ltargets {
		s := runStreams(t, o.streams, time.Duration(o.streamLen)*delay+60*time.Second)
		p90 := pct(s.ttft, 90)
		if i == 0 {
			base90 = p90
		}
		rss := ""
		if t.pid != 0 {
			rss = fmt.Sprintf("%.0f MB", float64(s.peakRSS)/(1<<20))
		}
		fmt.Printf("| %s | %s | %s | %.2fx | %s | %s | %d |\n", t.name, fmtDur(pct(s.ttft, 50)), fmtDur(p90),
			float64(p90)/float64(max(base90, 1)), fmtDur(pct(s.lag, 99)), rss, s.failures)
	}
	fmt.Println()
	return nil
}

// retarget starts, for each target, a twin in front of node url: the same
// kind of proxy with the same settings.
func retarget(o options, tmp string, targets []target, url string) ([]target, error) {
	var out []target
	for _, t := range targets {
		switch {
		case t.name == "direct":
			out = append(out, target{name: t.name, url: url})
		case strings.HasPrefix(t.name, "nginx"):
			cmd, u, err := startNginx(tmp, url)
			if err != nil {
				return out, err
			}
			out = append(out, target{name: t.name, url: u, pid: cmd.Process.Pid, cmd: cmd})
		case t.name == floorName:
			cmd, u, err := startFloor(url)
			if err != nil {
				return out, err
			}
			out = append(out, target{name: t.name, url: u, pid: cmd.Process.Pid, cmd: cmd})
		default:
			if t.env != nil {
				if err := clearNodes(o); err != nil {
					return out, err
				}
			}
			cmd, u, err := startProxy(o, tmp, []string{url}, t.env)
			if err != nil {
				return out, err
			}
			out = append(out, target{name: t.name, url: u, pid: cmd.Process.Pid, cmd: cmd})
		}
	}
	return out, nil
}

// clearNodes removes every node from the shared mode's Postgres before a
// shared proxy starts with its --node flags: nodes left there by an earlier
// run, or by anything else using the database, would be candidates too
// when they serve the model, and the shared column would measure another
// fleet than the others.
func clearNodes(o options) error {
	out, err := exec.Command(o.bin, "nodes", "list", "--json", "--database-url", o.databaseURL).Output()
	if err != nil {
		return fmt.Errorf("nodes list: %w", err)
	}
	var nodes []struct{ ID int64 }
	if err := json.Unmarshal(out, &nodes); err != nil {
		return err
	}
	for _, n := range nodes {
		if b, err := exec.Command(o.bin, "nodes", "rm", "--database-url", o.databaseURL, strconv.FormatInt(n.ID, 10)).CombinedOutput(); err != nil {
			return fmt.Errorf("nodes rm: %v: %s", err, b)
		}
	}
	return nil
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }

func build(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

// startFake starts one fake node and returns its URL.
func startFake(o options) (*exec.Cmd, string, error) {
	cmd := exec.Command(o.fake, "--addr", "127.0.0.1:0", "--models", "llama3:latest",
		"--tokens", strconv.Itoa(o.tokens), "--token-delay", o.tokenDelay.String())
	return startAndWait(cmd, "listening on ")
}

func startProxy(o options, tmp string, nodes []string, env []string) (*exec.Cmd, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(o.bin, "serve", "--addr", addr, "--data-dir", dir, "--log-level", "error", "--rise", "1")
	for _, n := range nodes {
		cmd.Args = append(cmd.Args, "--node", n)
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url + "/api/tags"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(body, []byte("llama3")) {
				return cmd, url, nil
			}
		}
	}
	stop(cmd)
	return nil, "", errors.New("aivonx did not become ready")
}

// nginxPath finds nginx, also where root's PATH has it but a user's does not.
func nginxPath() (string, error) {
	if bin, err := exec.LookPath("nginx"); err == nil {
		return bin, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("nginx not installed (apt-get install nginx-light)")
}

// startNginx runs nginx as the plain reverse-proxy baseline: one worker,
// kept-alive upstream connections, no buffering (as a streaming setup needs).
func startNginx(tmp, node string) (*exec.Cmd, string, error) {
	bin, err := nginxPath()
	if err != nil {
		return nil, "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp(tmp, "nginx-")
	if err != nil {
		return nil, "", err
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 20000; }
worker_rlimit_nofile 20000;
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  upstream node { server %[2]s; keepalive 256; }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://node;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`, dir, strings.TrimPrefix(node, "http://"), addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin, "-c", path, "-p", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return cmd, url, nil
		}
	}
	stop(cmd)
	return nil, "", errors.New("nginx did not start")
}

func startAndWait(cmd *exec.Cmd, prefix string) (*exec.Cmd, string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, prefix) {
		stop(cmd)
		return nil, "", fmt.Errorf("%s: unexpected first line %q: %v", cmd.Path, line, err)
	}
	go io.Copy(io.Discard, out)
	return cmd, strings.TrimSpace(strings.TrimPrefix(line, prefix)), nil
}

func stop(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type target struct {
	name string
	url  string
	pid  int // the proxy process whose CPU time is measured; 0 for direct
	env  []string
	cmd  *exec.Cmd
}

type result struct {
	rps       float64
	p50, p99  time.Duration
	cpuPerReq time.Duration
	errors    int64
}

// sample is what one or more measurements of a target saw.
type sample struct {
	lats    []time.Duration // of the whole streamed answers
	elapsed time.Duration
	cpu     time.Duration // the target process's
	errors  int64
}

func (s *sample) add(o sample) {
	s.lats = append(s.lats, o.lats...)
	s.elapsed += o.elapsed
	s.cpu += o.cpu
	s.errors += o.errors
}

func (s sample) result() result {
	slices.Sort(s.lats)
	r := result{errors: s.errors}
	if n := len(s.lats); n > 0 {
		r.rps = float64(n) / s.elapsed.Seconds()
		r.p50 = s.lats[n/2]
		r.p99 = s.lats[n*99/100]
		r.cpuPerReq = s.cpu / time.Duration(n)
	}
	return r
}

var body = []byte(`{"model":"llama3","messages":[{"role":"user","content":"hello"}],"stream":true}`)

// measure runs concurrency workers against t for d and records the
// latency of whole streamed answers.
func measure(t target, concurrency int, d time.Duration) sample {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}}
	defer client.CloseIdleConnections()
	// Warm up connections and the proxy's caches.
	for range concurrency {
		_ = once(client, t.url)
	}
	cpu0 := cpuTime(t.pid)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu    sync.Mutex
		out   sample
		errs  atomic.Int64
		wg    sync.WaitGroup
		start = time.Now()
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := once(client, t.url); err != nil {
					errs.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			out.lats = append(out.lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	out.cpu = cpuTime(t.pid) - cpu0
	out.errors = errs.Load()
	return out
}

func once(client *http.Client, url string) error {
	resp, err := client.Post(url+"/api/chat", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"done":true`)) {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// cpuTime is the user+system CPU time of pid from /proc/<pid>/stat.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// machine describes where the run happened, for the report: figures from
// different machines are not comparable, and the table alone does not say
// which machine it came from.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	parts := []string{fmt.Sprintf("%d CPUs (%s)", runtime.NumCPU(), cpu), runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "kernel "+strings.TrimSpace(string(b)))
	}
	parts = append(parts, runtime.Version())
	if bin, err := nginxPath(); err == nil {
		if out, err := exec.Command(bin, "-v").CombinedOutput(); err == nil {
			parts = append(parts, strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
		}
	}
	return strings.Join(parts, ", ")
}
