package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/app/history"
)

// The request log: one record per finished proxied or management request
// (who, model, node, status, duration, tokens), kept in the configured store
// and read back by GET /api/requests and the web UI's request history.
//
// Records are written in batches off the request path, like API key usage:
// the request only appends to a buffer in memory; a timer writes the buffer
// about once a second. A database that is slow or down never slows a
// request: the buffer keeps what could not be written and retries, up to
// ObserveConfig.RequestLogBuffer records, beyond which the oldest are
// dropped and counted (aivonx_request_log_dropped_total).

// RequestRecord is one finished request, as the request log keeps it.
type RequestRecord = history.Record

// RequestQuery selects request records; zero fields do not filter.
type RequestQuery = history.Query

// RequestLog keeps the request log: the embedded store and Postgres
// implement it. Safe for concurrent use. Errors wrap fleet.ErrUnavailable
// when the database cannot be reached.
type RequestLog interface {
	// RecordRequests appends the records, in order.
	RecordRequests(ctx context.Context, records []RequestRecord) error
	// Requests returns the records matching q, newest first (by time, then
	// by the order written), at most q.Limit of them after skipping
	// q.Offset; never nil.
	Requests(ctx context.Context, q RequestQuery) ([]RequestRecord, error)
	// PruneRequests deletes the records older than before and returns how
	// many it deleted.
	PruneRequests(ctx context.Context, before time.Time) (int64, error)
	// TrimRequests deletes every record but the newest keep (at least 1)
	// and returns how many it deleted.
	TrimRequests(ctx context.Context, keep int) (int64, error)
}

const (
	requestLogChunk      = 1000     // records per write
	maxSpareRecords      = 16 << 10 // the largest written batch whose array is kept for the next
	requestLogPruneEvery = time.Hour
	requestLogMaxRetries = 3 // a batch the store refuses (not "unavailable") is dropped after this many failed writes
)

// requestLog batches the records of one handler. It runs no goroutine while
// idle: the first record arms a timer.
type requestLog struct {
	store      RequestLog
	log        *slog.Logger
	every      time.Duration
	maxPending int
	retention  time.Duration
	maxRows    int

	mu      sync.Mutex
	pending []RequestRecord
	spare   []RequestRecord // a written batch's array, for the next one
	timer   *time.Timer
	dropped int // since the last report

	droppedTotal prometheus.Counter

	writing   sync.Mutex // one write at a time; guards the fields below
	failures  int        // consecutive failed writes of the current records
	lastPrune time.Time
	sinceTrim int  // records written since the last trim to maxRows
	trimmed   bool // at least once since the start
}

func (h *Handler) initRequestLog() error {
	c := &h.cfg.Observe
	switch {
	case c.RequestLogBuffer < 0:
		return errors.New("Observe.RequestLogBuffer must not be negative")
	case c.RequestLogRetention < 0 || c.RequestLogFlushEvery < 0:
		return errors.New("Observe.RequestLogRetention and RequestLogFlushEvery must not be negative")
	case c.RequestLogMaxRows < 0:
		return errors.New("Observe.RequestLogMaxRows must not be negative")
	}
	if h.deps.Requests == nil {
		return nil
	}
	b := &requestLog{
		store:      h.deps.Requests,
		log:        h.log,
		every:      orDuration(c.RequestLogFlushEvery, time.Second),
		maxPending: c.RequestLogBuffer,
		retention:  c.RequestLogRetention,
		maxRows:    c.RequestLogMaxRows,
		droppedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "aivonx_request_log_dropped_total",
			Help: "Request log records dropped because the store could not be written for too long."}),
	}
	if b.maxPending == 0 {
		b.maxPending = 50000
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aivonx_request_log_pending",
		Help: "Request log records waiting to be written."}, func() float64 {
		b.mu.Lock()
		defer b.mu.Unlock()
		return float64(len(b.pending))
	})
	if err := h.ext.observe.metrics.reg.Register(b.droppedTotal); err != nil {
		return err
	}
	if err := h.ext.observe.metrics.reg.Register(pending); err != nil {
		return err
	}
	h.ext.requests = b
	return nil
}

// historyWorthy says whether a request goes to the request log: inference
// and management requests do; the UI's files, metrics, health checks and
// the reads the UI polls (state, nodes, logs, this log itself) do not.
func historyWorthy(method, path string) bool {
	if !strings.HasPrefix(path, "/api/") && !strings.HasPrefix(path, "/v1/") || path == "/api/health" {
		return false
	}
	if method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions {
		return true // every write, management included
	}
	if method == http.MethodOptions {
		return false // CORS preflights
	}
	switch {
	case path == "/api/proxy/tags":
		return true
	case strings.HasPrefix(path, "/api/proxy/"), strings.HasPrefix(path, "/api/logs"), strings.HasPrefix(path, "/api/requests"),
		strings.HasPrefix(path, "/api/account/"), strings.HasPrefix(path, "/api/keys"), path == "/api/schema", path == "/api/proxy":
		return false
	}
	return true
}

// logRequest adds a finished request to the request log.
func (h *Handler) logRequest(r *http.Request, a *access, status int) {
	b := h.ext.requests
	if b == nil || a.unrouted || !historyWorthy(r.Method, r.URL.Path) {
		return
	}
	rec := RequestRecord{
		Time:             a.start,
		RequestID:        a.requestID,
		Who:              a.who,
		Client:           h.clientOf(r, a),
		Method:           r.Method,
		Path:             r.URL.Path,
		Model:            h.historyModel(a.model),
		Node:             a.node,
		Status:           status,
		DurationMS:       ms(time.Since(a.start)),
		TTFBMS:           ms(a.firstByte),
		PromptTokens:     a.promptTok,
		CompletionTokens: a.evalTok,
		Bytes:            a.bytes,
	}
	switch {
	case a.streamErr != "":
		rec.Error = a.streamErr
	case a.err != nil:
		rec.Error = shortReason(a.err)
	}
	b.add(rec.Clean())
}

// historyModel is the fleet's name of a model a client sent
// ("llama3:latest" for "llama3"), or the name as sent when no node lists
// it.
func (h *Handler) historyModel(name string) string {
	if name == "" {
		return ""
	}
	if l := h.ext.observe.metrics.modelLabel(h, name); l != "other" {
		return l
	}
	return name
}

func (b *requestLog) add(rec RequestRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trim(1)
	b.pending = append(b.pending, rec)
	if b.timer == nil {
		b.timer = time.AfterFunc(b.every, b.tick)
	}
}

// trim makes room for n more records, dropping the oldest (a tenth of the
// buffer at a time, so that a long outage costs no copy per request).
// b.mu must be held.
func (b *requestLog) trim(n int) {
	over := len(b.pending) + n - b.maxPending
	if over <= 0 {
		return
	}
	over = min(max(over, b.maxPending/10, 1), len(b.pending))
	k := copy(b.pending, b.pending[over:])
	clear(b.pending[k:])
	b.pending = b.pending[:k]
	b.dropped += over
	b.droppedTotal.Add(float64(over))
}

// tick is the timer's flush. It never waits for a write in progress (a
// slow database): it tries again a period later.
func (b *requestLog) tick() {
	if !b.writing.TryLock() {
		b.mu.Lock()
		b.timer = time.AfterFunc(b.every, b.tick)
		b.mu.Unlock()
		return
	}
	defer b.writing.Unlock()
	b.flushLocked(context.Background())
}

// flush writes what is pending, waiting for a write in progress.
func (b *requestLog) flush(ctx context.Context) error {
	b.writing.Lock()
	defer b.writing.Unlock()
	return b.flushLocked(ctx)
}

// flushLocked writes the pending records in chunks. On failure the rest is
// kept, in order, ahead of what arrived meanwhile, and a timer retries. A
// batch the store keeps refusing for another reason than being unavailable
// is dropped after a few tries, so that one bad batch cannot stop the log.
// Once the writes succeed, old records are pruned, at most once an hour.
// b.writing must be held.
func (b *requestLog) flushLocked(ctx context.Context) error {
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	batch := b.pending
	// The last batch's array, once written, takes the next records: under
	// load a growing slice would be most of the log's allocations.
	b.pending, b.spare = b.spare[:0], nil
	dropped := b.dropped
	b.dropped = 0
	b.mu.Unlock()
	if dropped > 0 {
		b.log.Warn("request log records dropped: the store could not be written for too long", "dropped", dropped)
	}
	var err error
	written := batch
	for len(batch) > 0 {
		chunk := batch[:min(len(batch), requestLogChunk)]
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = b.store.RecordRequests(wctx, chunk)
		cancel()
		if err != nil {
			break
		}
		batch = batch[len(chunk):]
	}
	if err == nil {
		if cap(written) <= maxSpareRecords { // not the backlog of an outage
			clear(written) // drop the records' strings
			b.mu.Lock()
			b.spare = written[:0]
			b.mu.Unlock()
		}
		b.failures = 0
		b.sinceTrim += len(written)
		b.prune(ctx)
		return nil
	}
	b.failures++
	transient := errors.Is(err, fleet.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
	if !transient && b.failures >= requestLogMaxRetries {
		b.failures = 0
		b.droppedTotal.Add(float64(len(batch)))
		b.log.Error("request log records dropped: the store refused them", "dropped", len(batch), "err", err.Error())
		return err
	}
	b.log.Warn("write request log; will retry", "records", len(batch), "err", err.Error())
	b.mu.Lock()
	newer := b.pending
	b.pending = batch
	b.trim(len(newer))
	b.pending = append(b.pending, newer...)
	if b.timer == nil {
		b.timer = time.AfterFunc(5*b.every, b.tick) // 5s by default: a database that is down is not hammered
	}
	b.mu.Unlock()
	return err
}

// prune deletes the records older than the retention, at most once an
// hour, and those beyond the row cap: on the first write, and then each
// time a tenth of the cap has been written, so that a flood of requests
// grows the store by at most that tenth between two trims. b.writing must
// be held.
func (b *requestLog) prune(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if now := time.Now(); b.retention > 0 && now.Sub(b.lastPrune) >= requestLogPruneEvery {
		b.lastPrune = now
		n, err := b.store.PruneRequests(ctx, now.Add(-b.retention))
		switch {
		case err != nil:
			b.log.Warn("prune the request log", "err", err.Error())
		case n > 0:
			b.log.Info("request log pruned", "deleted", n, "older_than", now.Add(-b.retention).UTC().Format(time.RFC3339))
		}
	}
	if b.maxRows > 0 && (!b.trimmed || b.sinceTrim >= max(b.maxRows/10, 1)) {
		b.trimmed, b.sinceTrim = true, 0
		n, err := b.store.TrimRequests(ctx, b.maxRows)
		switch {
		case err != nil:
			b.log.Warn("trim the request log", "err", err.Error())
		case n > 0:
			b.log.Info("request log trimmed", "deleted", n, "kept", b.maxRows)
		}
	}
}

// FlushRequests writes the request log records not yet written (they are
// otherwise written about once a second). Call it on shutdown, after the
// server stopped serving. It is a no-op without a request log.
func (h *Handler) FlushRequests(ctx context.Context) error {
	if h.ext.requests == nil {
		return nil
	}
	return h.ext.requests.flush(ctx)
}

const defaultRequestLimit = 50

// parseRequestQuery reads the filters of GET /api/requests. status is a
// code ("502"), a class ("4xx") or "error" (400 and above, or a stream cut
// after its 200); since and until
// are read as /api/logs reads start and end.
func (h *Handler) parseRequestQuery(q url.Values) (RequestQuery, fieldErrors) {
	fe := fieldErrors{}
	rq := RequestQuery{Limit: defaultRequestLimit}
	text := func(name string) string {
		v := strings.TrimSpace(q.Get(name))
		if len(v) > history.MaxTextLen || !utf8.ValidString(v) {
			fe.add(name, "must be valid text of at most "+strconv.Itoa(history.MaxTextLen)+" bytes")
			return ""
		}
		return v
	}
	rq.Model = h.historyModel(text("model"))
	rq.Node = text("node")
	rq.Who = text("who")
	switch s := strings.ToLower(strings.TrimSpace(q.Get("status"))); {
	case s == "":
	case s == "error", s == "errors":
		rq.Failed = true
	case len(s) == 3 && s[0] >= '1' && s[0] <= '5' && s[1:] == "xx":
		rq.StatusMin = int(s[0]-'0') * 100
		rq.StatusMax = rq.StatusMin + 99
	default:
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 || n > 599 {
			fe.add("status", `must be a status code (502), a class (4xx) or "error"`)
		} else {
			rq.StatusMin, rq.StatusMax = n, n
		}
	}
	var err error
	if s := q.Get("since"); s != "" {
		if rq.Since, err = parseLogTime(s, h.cfg.Observe.Location, false); err != nil {
			fe.add("since", err.Error())
		}
	}
	if s := q.Get("until"); s != "" {
		if rq.Until, err = parseLogTime(s, h.cfg.Observe.Location, true); err != nil {
			fe.add("until", err.Error())
		}
	}
	if !rq.Since.IsZero() && !rq.Until.IsZero() && rq.Until.Before(rq.Since) {
		fe.add("until", "must not be before since")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fe.add("limit", "must be a positive integer")
		} else {
			rq.Limit = min(n, history.MaxLimit)
		}
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1_000_000 {
			fe.add("offset", "must be an integer between 0 and 1000000")
		} else {
			rq.Offset = n
		}
	}
	if len(fe) > 0 {
		return RequestQuery{}, fe
	}
	return rq, nil
}

// handleRequests is GET /api/requests: the request log, newest first,
// filtered and paged. As for /api/logs, count is the number of matches up
// to the end of this page, and has_more says whether another exists.
// Records reach the store about a second after their request ended.
func (h *Handler) handleRequests(w http.ResponseWriter, r *http.Request) {
	if h.ext.requests == nil {
		writeError(w, ollamaDialect, http.StatusNotImplemented, "no request log is configured on this server")
		return
	}
	q, fe := h.parseRequestQuery(r.URL.Query())
	if fe != nil {
		writeFieldErrors(w, fe)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Observe.LogQueryTimeout)
	defer cancel()
	limit := q.Limit
	q.Limit++ // one more says whether there is a next page
	results, err := h.ext.requests.store.Requests(ctx, q)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	if results == nil {
		results = []RequestRecord{}
	}
	hasMore := len(results) > limit
	if hasMore {
		results = results[:limit]
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"count": q.Offset + len(results), "offset": q.Offset, "limit": limit, "has_more": hasMore, "results": results,
	})
}
