// Package worker probes the Ollama nodes and records what it sees. One pass,
// [Worker.RunOnce], is the unit of work; something outside schedules it: the
// cron loop of `aivonx worker`, the in-process cron of the embedded `serve`,
// an EventBridge rule on Lambda, or cron(8) with `--once`.
package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// Config tunes a pass. Zero values mean the documented defaults.
type Config struct {
	// ProbeTimeout bounds all probes of one node in one pass. Zero means 5s.
	ProbeTimeout time.Duration
	// ModelsEvery is how often a healthy node's model list and version are
	// refreshed; liveness and loaded models are probed every pass. Zero
	// means 60s.
	ModelsEvery time.Duration
	// Rise and Fall are the consecutive probes needed to turn a node
	// healthy or unhealthy. Zero means 2 each.
	Rise, Fall int
	// Concurrency bounds the nodes probed at once. Zero means 64.
	Concurrency int
}

// Worker runs probe passes. Safe for concurrent use; concurrent passes are
// serialised by the Lock when one is given, and run without it while the
// Lock cannot be reached.
type Worker struct {
	cfg    Config
	nodes  NodeLister
	store  StatusStore
	lock   Lock
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	mu     sync.Mutex // one pass at a time in this process
	// lockDown remembers that the last pass could not reach the lock, so
	// that an outage is logged once. Guarded by mu.
	lockDown bool
	// standby remembers that the last pass found the lock held by another
	// worker, so that standing by is logged once. Guarded by mu.
	standby bool
	// lastNodes is the node list last read, probed while the store cannot
	// be read; nodesDown says it is in use. Guarded by mu.
	lastNodes []fleet.Node
	nodesDown bool
	// release lets go of the lock that the scheduled passes keep between
	// them (see Schedule), nil when none is kept. Guarded by mu.
	release func()
}

// New builds a worker. lock may be nil (a single worker); client nil means a
// kept-alive client of the worker's own, so that latency measures the node,
// not TCP setup.
func New(cfg Config, nodes NodeLister, store StatusStore, lock Lock, client *http.Client, log *slog.Logger) (*Worker, error) {
	cfg.ProbeTimeout = cmp.Or(cfg.ProbeTimeout, 5*time.Second)
	cfg.ModelsEvery = cmp.Or(cfg.ModelsEvery, 60*time.Second)
	cfg.Rise = cmp.Or(cfg.Rise, 2)
	cfg.Fall = cmp.Or(cfg.Fall, 2)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 64)
	if cfg.ProbeTimeout < 0 || cfg.ModelsEvery < 0 || cfg.Rise < 1 || cfg.Fall < 1 || cfg.Concurrency < 1 {
		return nil, errors.New("worker: timeouts must be positive and Rise, Fall, Concurrency at least 1")
	}
	if nodes == nil || store == nil || log == nil {
		return nil, errors.New("worker: nodes, store and log are required")
	}
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     5 * time.Minute,
			Proxy:               nil,
		}, CheckRedirect: noRedirects}
	}
	return &Worker{cfg: cfg, nodes: nodes, store: store, lock: lock, client: client, log: log, now: time.Now}, nil
}

// RunOnce probes every node concurrently and writes all statuses in one
// call. A node that fails its probe is data (an unhealthy status with a
// reason), not an error: RunOnce returns an error only when it cannot read
// the nodes or write the statuses. When another worker holds the lock it
// returns nil without probing.
func (w *Worker) RunOnce(ctx context.Context) error {
	return w.pass(ctx, nil, false)
}

// RefreshNode probes one node now, model list included, and records it: a
// model pulled a moment ago becomes routable at once, not a minute later.
func (w *Worker) RefreshNode(ctx context.Context, nodeID int64) error {
	return w.pass(ctx, &nodeID, false)
}

// pass probes the nodes (only one of them when only is set) under the
// lock. keep holds the lock after the pass, for the next (Schedule); else
// it is released, as a single pass (RunOnce, a Lambda invocation) must.
func (w *Worker) pass(ctx context.Context, only *int64, keep bool) (passErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lock != nil && only == nil {
		unlock, ok, err := w.lock.TryLock(ctx)
		switch {
		case err != nil:
			// The lock lives in Redis, and a Redis outage must not stop
			// health checks: the pass still reaches Postgres, which every
			// handler falls back to. Workers may overlap until it is back;
			// a pass is idempotent.
			if !w.lockDown {
				w.log.Warn("worker lock unavailable; passing without it until it is back", "err", err.Error())
				w.lockDown = true
			}
		case !ok:
			w.release = nil // lost, if it was kept: another worker has it
			// Said once when this worker starts to stand by (and so by
			// `worker --once`, which would otherwise end in silence).
			level := slog.LevelDebug
			if !w.standby {
				level, w.standby = slog.LevelInfo, true
			}
			w.log.Log(ctx, level, "another worker holds the lock; this one skips its passes while it does")
			// Keep the node list warm all the same: taking over during a
			// store outage, this worker probes what it last read.
			if nodes, err := w.nodes.Nodes(ctx); err == nil {
				w.lastNodes = nodes
			}
			return nil
		default:
			if w.lockDown {
				w.log.Info("worker lock available again")
				w.lockDown = false
			}
			if w.standby {
				w.log.Info("took the worker lock; passing again")
				w.standby = false
			}
			if keep {
				w.release = unlock
				// A pass that fails (no node list, statuses not written)
				// lets the lock go: another worker may do better.
				defer func() {
					if passErr != nil && w.release != nil {
						w.release()
						w.release = nil
					}
				}()
			} else {
				w.release = nil // the unlock below lets go of a kept lock too
				defer unlock()
			}
		}
	}
	nodes, err := w.readNodes(ctx)
	if err != nil {
		return err
	}
	prev := map[int64]fleet.Status{}
	read := w.store.Statuses
	if r, ok := w.store.(PassReader); ok {
		read = r.PassStatuses
	}
	if statuses, err := read(ctx); err != nil {
		w.log.Warn("read previous statuses; thresholds start over", "err", err.Error())
	} else {
		for _, s := range statuses {
			prev[s.NodeID] = s
		}
	}

	start := time.Now()
	out := make([]fleet.Status, len(nodes))
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, n := range nodes {
		p, known := prev[n.ID]
		if only != nil && n.ID != *only {
			out[i] = p
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = w.probe(ctx, n, p, known, only != nil)
		}()
	}
	wg.Wait()
	kept := out[:0]
	healthy := 0
	for i, s := range out {
		if s.NodeID == 0 && only != nil {
			continue // a node never probed yet, outside this refresh
		}
		kept = append(kept, s)
		if only == nil || s.NodeID == *only {
			w.logProbe(ctx, nodes[i], s)
		}
		if s.Healthy {
			healthy++
		}
		if p, known := prev[nodes[i].ID]; known && p.Healthy != s.Healthy {
			w.logTransition(nodes[i], s)
		} else if !known {
			w.logTransition(nodes[i], s)
		}
	}
	if err := w.store.WriteStatuses(ctx, kept); err != nil {
		return fmt.Errorf("write statuses: %w", err)
	}
	if only == nil {
		w.log.Debug("health pass done", "nodes", len(nodes), "healthy", healthy, "duration_ms", time.Since(start).Milliseconds())
	}
	return nil
}

// readNodes lists the nodes to probe. While the store cannot be read it
// returns the last list read, so that health checks go on through a
// Postgres outage (the statuses still reach Redis, which every handler
// reads); with no list yet it returns the store's error. w.mu is held.
func (w *Worker) readNodes(ctx context.Context) ([]fleet.Node, error) {
	nodes, err := w.nodes.Nodes(ctx)
	switch {
	case err == nil:
		if w.nodesDown {
			w.log.Info("node store available again")
			w.nodesDown = false
		}
		w.lastNodes = nodes
		return nodes, nil
	case w.lastNodes == nil:
		return nil, err // the store's error names the operation
	case !w.nodesDown:
		w.log.Warn("node store unavailable; probing the last known nodes until it is back", "nodes", len(w.lastNodes), "err", err.Error())
		w.nodesDown = true
	}
	return w.lastNodes, nil
}

// logProbe is the debug line of one node's probe: what an operator needs to
// see why a node is, or is not, getting traffic.
func (w *Worker) logProbe(ctx context.Context, n fleet.Node, s fleet.Status) {
	if !w.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	w.log.Debug("node probed", "node", n.Name, "node_id", n.ID, "enabled", n.Enabled, "healthy", s.Healthy,
		"latency_ms", float64(s.Latency.Microseconds())/1000, "models", len(s.Models), "loaded", len(s.Loaded),
		"version", s.Version, "passes", s.Passes, "fails", s.Fails, "reason", s.Reason)
}

func (w *Worker) logTransition(n fleet.Node, s fleet.Status) {
	if s.Healthy {
		w.log.Info("node healthy", "node", n.Name, "node_id", n.ID, "latency_ms", float64(s.Latency.Microseconds())/1000, "models", len(s.Models))
	} else {
		w.log.Warn("node unhealthy", "node", n.Name, "node_id", n.ID, "reason", s.Reason)
	}
}

// probe checks one node: liveness and latency, loaded models, and, when
// due, the model list and version.
func (w *Worker) probe(ctx context.Context, n fleet.Node, prev fleet.Status, known, forceModels bool) fleet.Status {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ProbeTimeout)
	defer cancel()
	prev.NodeID = n.ID

	start := w.now()
	status, err := w.get(ctx, n.BaseURL+"/", nil)
	latency := w.now().Sub(start)
	ok, reason := classify(status, err)

	next := nextStatus(prev, known, ok, reason, w.cfg.Rise, w.cfg.Fall)
	next.CheckedAt = w.now()
	if !ok {
		next.Latency = 0
		return next
	}
	next.PassedAt = next.CheckedAt
	next.Latency = latency

	var ps struct {
		Models []fleet.Model `json:"models"`
	}
	if _, err := w.get(ctx, n.BaseURL+"/api/ps", &ps); err == nil {
		next.Loaded = ps.Models
	}
	due := forceModels || !prev.Healthy || next.ModelsCheckedAt.IsZero() || w.now().Sub(next.ModelsCheckedAt) >= w.cfg.ModelsEvery
	if !due {
		return next
	}
	var tags struct {
		Models []fleet.Model `json:"models"`
	}
	var version struct {
		Version string `json:"version"`
	}
	if _, err := w.get(ctx, n.BaseURL+"/api/tags", &tags); err != nil {
		// Keep the last list: a failed refresh must not make a healthy node
		// unroutable (the upstream wrote an empty list here).
		w.log.Warn("refresh models", "node", n.Name, "err", err.Error())
		return next
	}
	next.Models = tags.Models
	if next.Models == nil {
		next.Models = []fleet.Model{}
	}
	next.ModelsCheckedAt = w.now()
	if _, err := w.get(ctx, n.BaseURL+"/api/version", &version); err == nil {
		next.Version = version.Version
	}
	return next
}

// get fetches url and, when into is not nil, decodes a 200 JSON body into it.
func (w *Worker) get(ctx context.Context, url string, into any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 16<<20)
	if into == nil {
		_, _ = io.Copy(io.Discard, body)
		return resp.StatusCode, nil
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, body)
		return resp.StatusCode, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(body).Decode(into); err != nil {
		return resp.StatusCode, fmt.Errorf("decode %s: %w", url, err)
	}
	return resp.StatusCode, nil
}

// noRedirects makes a client return a redirect as the answer. A node is
// probed where it is: following a redirect would let a node send the
// checks, and publish what they fetch (its model list), to an address
// outside the networks nodes may use (--node-allow-cidr).
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
