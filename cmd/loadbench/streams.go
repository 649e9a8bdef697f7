package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// streamStats are the timings of many concurrent streams against one target.
type streamStats struct {
	ttft     []time.Duration // request sent → first line received
	lag      []time.Duration // line created on the node → line received
	failures int
	peakRSS  int64 // bytes, of the proxy process
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, len(d)*p/100)]
}

// runStreams opens n streams at once against t and reads every line,
// recording the time to the first line and, for each line, how long after
// its created_at (stamped by the node as it wrote it) it arrived. That lag is
// the proof that nothing is held back or coalesced: it would grow by a token
// delay for every line a proxy buffered.
func runStreams(t target, n int, timeout time.Duration) streamStats {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		mu  sync.Mutex
		out streamStats
		wg  sync.WaitGroup
	)
	stopRSS := make(chan struct{})
	rssDone := make(chan int64)
	go func() { rssDone <- sampleRSS(t.pid, stopRSS) }()
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ttft, lags, err := oneStream(ctx, client, t.url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.failures++
				return
			}
			out.ttft = append(out.ttft, ttft)
			out.lag = append(out.lag, lags...)
		}()
	}
	close(start)
	wg.Wait()
	close(stopRSS)
	out.peakRSS = <-rssDone
	return out
}

var streamBody = []byte(`{"model":"llama3","messages":[{"role":"user","content":"hello"}]}`)

func oneStream(ctx context.Context, client *http.Client, url string) (time.Duration, []time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/api/chat", bytes.NewReader(streamBody))
	if err != nil {
		return 0, nil, err
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	var ttft time.Duration
	var lags []time.Duration
	done := false
	for sc.Scan() {
		now := time.Now()
		if ttft == 0 {
			ttft = now.Sub(t0)
		}
		var line struct {
			CreatedAt time.Time `json:"created_at"`
			Done      bool      `json:"done"`
			Error     string    `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Error != "" {
			return 0, nil, fmt.Errorf("bad line %q", sc.Text())
		}
		if !line.CreatedAt.IsZero() {
			lags = append(lags, now.Sub(line.CreatedAt))
		}
		done = done || line.Done
	}
	if err := sc.Err(); err != nil || !done {
		return 0, nil, fmt.Errorf("stream ended early: %v", err)
	}
	return ttft, lags, nil
}

// sampleRSS polls the resident set of pid until stop and returns the peak.
func sampleRSS(pid int, stop <-chan struct{}) int64 {
	var peak int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if pid != 0 {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "VmRSS:") {
						kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
						peak = max(peak, kb<<10)
					}
				}
			}
		}
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}
