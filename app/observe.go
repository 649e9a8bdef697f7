package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ObserveConfig configures logs and metrics.
type ObserveConfig struct {
	// MetricsPrivate puts GET /metrics behind an API key or a login
	// (requireKeyOrUser: a scraper sends a key, as it cannot refresh a
	// login). False,
	// the default, leaves it public, as most exporters are: it shows node
	// names and model names, never URLs or secrets (though a node added
	// without a name is named after its host:port).
	MetricsPrivate bool
	// Location is the time zone of log-query times written without one
	// ("2026-01-02 15:04:05"). Nil means time.Local.
	Location *time.Location
	// LogQueryTimeout bounds one /api/logs or /api/requests query. Zero
	// means 10s.
	LogQueryTimeout time.Duration
	// RequestLogRetention is how long the request log (Deps.Requests) keeps
	// a record; older ones are deleted during a flush, at most once an hour
	// per process. Zero keeps them all.
	RequestLogRetention time.Duration
	// RequestLogMaxRows caps the request log's records; the oldest beyond
	// it are deleted after the first write and then each time a tenth of it
	// has been written, so a flood of requests cannot fill the disk before
	// the retention ends. Zero means no cap.
	RequestLogMaxRows int
	// RequestLogFlushEvery is how often request records are written to the
	// store. Zero means 1s.
	RequestLogFlushEvery time.Duration
	// RequestLogBuffer is how many request records are kept in memory while
	// the store cannot be written; beyond it the oldest are dropped. Zero
	// means 50000.
	RequestLogBuffer int
}

// LogReader reads the proxy's JSON log, newest line first. Safe for
// concurrent use. infra/logfile implements it over the --log-file and its
// rotated copies.
type LogReader interface {
	// Backward calls fn with each line of the log, newest first: the
	// current file from its end, then each rotated file from the newest to
	// the oldest. It stops when fn returns false or ctx ends (returning
	// ctx's error). line is valid only during the call. Files are read in
	// blocks from their end, so memory does not grow with their size.
	Backward(ctx context.Context, fn func(line []byte) bool) error
}

type observeState struct {
	metrics *metrics
}

func (h *Handler) initObserve() error {
	c := &h.cfg.Observe
	if c.Location == nil {
		c.Location = time.Local
	}
	if c.LogQueryTimeout == 0 {
		c.LogQueryTimeout = 10 * time.Second
	}
	if c.LogQueryTimeout < 0 {
		return errors.New("Observe.LogQueryTimeout must not be negative")
	}
	h.ext.observe = &observeState{metrics: newMetrics(h)}
	return nil
}

func (h *Handler) observeRoutes(mux *routeMux) {
	logs := h.requireUser(http.HandlerFunc(h.handleLogs))
	mux.Handle("GET /api/logs", logs)
	mux.Handle("GET /api/logs/", logs) // the upstream's path, slash included
	var m http.Handler = h.ext.observe.metrics.handler()
	if h.cfg.Observe.MetricsPrivate {
		m = h.requireKeyOrUser(m)
	}
	mux.Handle("GET /metrics", m)
	mux.HandleFunc("GET /api/schema", h.handleSchema)
	mux.Handle("GET /api/requests", h.requireUser(http.HandlerFunc(h.handleRequests)))
}

// recordRequest is called once per request, after it ended, with what the
// access line reports.
func (h *Handler) recordRequest(r *http.Request, a *access, status int) {
	h.ext.observe.metrics.record(h, r, a, status)
	h.logRequest(r, a, status)
}

// logQuery is a parsed /api/logs query.
type logQuery struct {
	source     string   // "", "proxy" or "access"
	levels     []string // upper case; empty: any
	query      string   // lower case; empty: any
	start, end time.Time
	limit      int
	offset     int
}

// logEntry is one log line as /api/logs returns it.
type logEntry struct {
	Time  *time.Time     `json:"time"`
	Level string         `json:"level"`
	Msg   string         `json:"msg"`
	Attrs map[string]any `json:"attrs"`
}

const maxLogLimit = 100

// parseLogQuery reads the upstream's filters. Times are RFC 3339 (any
// zone), or "YYYY-MM-DD HH:MM:SS[.fff]" / "YYYY-MM-DDTHH:MM:SS" / a bare
// date in loc; a bare date as end means the end of that day. limit (≤100,
// default 100) and offset (default 0) must be integers when given.
func parseLogQuery(q url.Values, loc *time.Location) (logQuery, fieldErrors) {
	fe := fieldErrors{}
	lq := logQuery{limit: maxLogLimit}
	switch s := strings.ToLower(strings.TrimSpace(q.Get("source"))); s {
	case "", "all":
	case "proxy", "access":
		lq.source = s
	default:
		fe.add("source", "must be proxy, access or all")
	}
	for _, l := range strings.Split(q.Get("level"), ",") {
		switch l = strings.ToUpper(strings.TrimSpace(l)); l {
		case "":
		case "WARNING":
			lq.levels = append(lq.levels, "WARN")
		case "DEBUG", "INFO", "WARN", "ERROR":
			lq.levels = append(lq.levels, l)
		default:
			fe.add("level", "must be debug, info, warn or error (or a comma-separated list)")
		}
	}
	lq.query = strings.ToLower(strings.TrimSpace(q.Get("query")))
	if len(lq.query) > 500 || !utf8.ValidString(lq.query) {
		fe.add("query", "must be valid text of at most 500 bytes")
		lq.query = ""
	}
	var err error
	if s := q.Get("start"); s != "" {
		if lq.start, err = parseLogTime(s, loc, false); err != nil {
			fe.add("start", err.Error())
		}
	}
	if s := q.Get("end"); s != "" {
		if lq.end, err = parseLogTime(s, loc, true); err != nil {
			fe.add("end", err.Error())
		}
	}
	if !lq.start.IsZero() && !lq.end.IsZero() && lq.end.Before(lq.start) {
		fe.add("end", "must not be before start")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fe.add("limit", "must be a positive integer")
		} else {
			lq.limit = min(n, maxLogLimit)
		}
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1_000_000 {
			fe.add("offset", "must be an integer between 0 and 1000000")
		} else {
			lq.offset = n
		}
	}
	if len(fe) > 0 {
		return logQuery{}, fe
	}
	return lq, nil
}

var localLayouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05,999999999", // Python's asctime, as the upstream wrote
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02T15:04",
}

func parseLogTime(s string, loc *time.Location, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	// "2026-01-02 15:04:05Z" and "…+08:00" with a space.
	if t, err := time.Parse("2006-01-02 15:04:05.999999999Z07:00", s); err == nil {
		return t, nil
	}
	for _, layout := range localLayouts {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	if t, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		if end {
			t = t.AddDate(0, 0, 1).Add(-time.Nanosecond)
		}
		return t, nil
	}
	return time.Time{}, errors.New(`must be RFC 3339 ("2026-01-02T15:04:05+08:00") or "YYYY-MM-DD HH:MM:SS" in the server's time zone`)
}

// clockSkew is how far out of order lines may be written (concurrent
// goroutines take their timestamps before they write): scanning stops once
// lines are this much older than start.
const clockSkew = 5 * time.Second

// handleLogs is GET /api/logs: the JSON log, newest first, filtered and
// paged. Counting every match would mean reading every file on every page,
// so count is the number of matches found up to offset+limit (the end of
// this page), and has_more says whether at least one more exists.
func (h *Handler) handleLogs(w http.ResponseWriter, r *http.Request) {
	if h.deps.Logs == nil {
		writeError(w, ollamaDialect, http.StatusNotFound, "no log file configured: start serve with --log-file")
		return
	}
	q, fe := parseLogQuery(r.URL.Query(), h.cfg.Observe.Location)
	if fe != nil {
		writeFieldErrors(w, fe)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Observe.LogQueryTimeout)
	defer cancel()
	results := []logEntry{}
	matched := 0
	hasMore := false
	err := h.deps.Logs.Backward(ctx, func(line []byte) bool {
		e, t, ok := q.match(line)
		if !ok {
			// Past the window: older lines cannot match.
			return t.IsZero() || q.start.IsZero() || !t.Before(q.start.Add(-clockSkew))
		}
		matched++
		if matched <= q.offset {
			return true
		}
		if len(results) == q.limit {
			hasMore = true
			matched--
			return false
		}
		results = append(results, e)
		return true
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn("read logs", "err", err.Error())
		writeError(w, ollamaDialect, http.StatusInternalServerError, "the log files could not be read")
		return
	}
	body := map[string]any{"count": matched, "offset": q.offset, "limit": q.limit, "has_more": hasMore, "results": results}
	if err != nil {
		body["truncated"] = true // timed out: the results so far
	}
	writeJSON(w, http.StatusOK, body)
}

// match decodes a line and applies the filters. It returns the line's time
// (zero when it has none) even when the line does not match.
func (q *logQuery) match(line []byte) (logEntry, time.Time, bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return logEntry{}, time.Time{}, false
	}
	// Cheap pre-check: a query that is not in the raw line (ignoring case)
	// cannot be in its message or attributes. Only for plain ASCII queries,
	// which JSON never escapes.
	if q.query != "" && plainASCII(q.query) && !containsFold(line, q.query) {
		return logEntry{}, lineTime(line), false
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return logEntry{}, time.Time{}, false
	}
	e := logEntry{Attrs: m}
	var t time.Time
	if s, ok := m["time"].(string); ok {
		if parsed, err := time.Parse(time.RFC3339Nano, s); err == nil {
			t = parsed
			e.Time = &t
		}
	}
	e.Level, _ = m["level"].(string)
	e.Msg, _ = m["msg"].(string)
	delete(m, "time")
	delete(m, "level")
	delete(m, "msg")

	if !t.IsZero() && ((!q.start.IsZero() && t.Before(q.start)) || (!q.end.IsZero() && t.After(q.end))) {
		return logEntry{}, t, false
	}
	if q.source == "access" && e.Msg != "request" || q.source == "proxy" && e.Msg == "request" {
		return logEntry{}, t, false
	}
	if len(q.levels) > 0 {
		lvl := strings.ToUpper(e.Level)
		if i := strings.IndexAny(lvl, "+-"); i > 0 {
			lvl = lvl[:i] // slog's "INFO+2"
		}
		found := false
		for _, l := range q.levels {
			found = found || l == lvl
		}
		if !found {
			return logEntry{}, t, false
		}
	}
	if q.query != "" && !strings.Contains(strings.ToLower(e.Msg), q.query) && !containsIn(m, q.query) {
		// Also as JSON, so that "status":502 finds what it says.
		var attrs bytes.Buffer
		enc := json.NewEncoder(&attrs)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(m)
		if !strings.Contains(strings.ToLower(attrs.String()), q.query) {
			return logEntry{}, t, false
		}
	}
	return e, t, true
}

// containsIn reports whether the lower-case q is in a key or a value of v
// as text: a field that reads lab "gpu" box is found by that query, which
// its JSON form (lab \"gpu\" box) would not match.
func containsIn(v any, q string) bool {
	switch x := v.(type) {
	case string:
		return strings.Contains(strings.ToLower(x), q)
	case json.Number:
		return strings.Contains(string(x), q)
	case map[string]any:
		for k, e := range x {
			if strings.Contains(strings.ToLower(k), q) || containsIn(e, q) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if containsIn(e, q) {
				return true
			}
		}
	}
	return false
}

// lineTime reads the "time" of a slog JSON line without decoding it all.
func lineTime(line []byte) time.Time {
	const key = `"time":"`
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return time.Time{}
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t
}

func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// containsFold reports whether b contains the lower-case ASCII needle,
// ignoring ASCII case in b.
func containsFold(b []byte, needle string) bool {
	n := len(needle)
	if n == 0 {
		return true
	}
	for i := 0; i+n <= len(b); i++ {
		j := 0
		for j < n {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

// String renders the query for logs and errors.
func (q logQuery) String() string {
	return fmt.Sprintf("source=%q levels=%v query=%q start=%v end=%v limit=%d offset=%d", q.source, q.levels, q.query, q.start, q.end, q.limit, q.offset)
}
