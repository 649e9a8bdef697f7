package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aivonx/aivonx/app/history"
)

// access is what one request's access line reports. The proxy fills in the
// model, node and token counts as it learns them.
type access struct {
	start     time.Time
	firstByte time.Duration
	status    int
	bytes     int64
	model     string
	node      string
	retries   int
	promptTok int64
	evalTok   int64
	streamErr string
	err       error
	requestID string
	// who is the user or API key behind the request ("key:ci-bot",
	// "user:alice"); apiKeyID is set when an API key authenticated it.
	who      string
	apiKeyID int64
	// client is the client's address once clientOf worked it out.
	client string
	// tail is the relay's record of the response's last bytes.
	tail tail
	// wholeAnswer is set when the node answers only once it is done (not
	// a stream): no first-byte timeout applies.
	wholeAnswer bool
	// hideUsage is set when the proxy asked for the stream's usage event
	// on the client's behalf (route.asksUsage): the relay drops it.
	hideUsage bool
	// body is the request's body, bounded in its pauses.
	body idleBody
	// unrouted is set when no route took the request (404, 405): the
	// access line has it, the request history does not, as anyone can
	// send such requests by the thousand.
	unrouted bool
}

type accessKey struct{}

func accessFrom(ctx context.Context) *access {
	a, _ := ctx.Value(accessKey{}).(*access)
	return a
}

// recorder wraps the client's ResponseWriter to count what went out. It
// implements Flush and Unwrap so http.NewResponseController reaches the real
// writer (which, under Lambda, is not a net/http one).
type recorder struct {
	http.ResponseWriter
	a *access
}

func (w *recorder) WriteHeader(status int) {
	if w.a.status == 0 {
		w.a.status = status
		w.a.firstByte = time.Since(w.a.start)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.a.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.a.bytes += int64(n)
	return n, err
}

func (w *recorder) Flush() {
	if w.a.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	// net/http's writer (and the Lambda one) flush directly; a
	// ResponseController would add frames to every stream's deepest path.
	if f, ok := w.ResponseWriter.(interface{ FlushError() error }); ok {
		_ = f.FlushError()
		return
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var requestSeq atomic.Uint64
var requestPrefix = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// serveLogged runs the router and writes one JSON access line per request.
// Request bodies and credentials are never logged.
//
// Its frame stays on the stack for the whole of a stream, so the work
// around the call to the router is done in helpers that return first (see
// tail).
func (h *Handler) serveLogged(w http.ResponseWriter, r *http.Request) {
	rec, r := h.beginAccess(w, r)
	defer h.endAccess(rec, r)
	if h.headTooLarge(rec, r) {
		return
	}
	h.router.ServeHTTP(rec, r)
}

// beginAccess starts a request's access record and returns the recording
// writer and the request that carries the record.
func (h *Handler) beginAccess(w http.ResponseWriter, r *http.Request) (*recorder, *http.Request) {
	a := &access{start: time.Now()}
	a.requestID = r.Header.Get("X-Request-Id")
	if a.requestID == "" || len(a.requestID) > 128 {
		a.requestID = requestPrefix + "-" + itoa(requestSeq.Add(1))
	}
	hdr := w.Header()
	hdr.Set("X-Request-Id", a.requestID)
	hdr.Set("X-Aivonx-Version", h.cfg.Version)
	r = r.WithContext(context.WithValue(r.Context(), accessKey{}, a))
	if r.Body != nil && r.Body != http.NoBody {
		conn, _ := w.(readDeadliner)
		a.body = idleBody{ReadCloser: r.Body, conn: conn, idle: h.cfg.BodyIdleTimeout}
		r.Body = &a.body
	}
	return &recorder{ResponseWriter: w, a: a}, r
}

// endAccess writes the access line. A panic in the handler is logged and
// ends only this request, the process keeps serving: when nothing was sent
// yet the client gets a whole 500 in the route's shape, else the
// connection is cut, so that a half-sent answer never looks complete.
func (h *Handler) endAccess(rec *recorder, r *http.Request) {
	a := rec.a
	if b := &a.body; b.conn != nil && !b.ended {
		// The handler answered without reading the body (401, 404, a
		// GET): net/http reads what is left before it replies, and that
		// read gets the same bound, or a client that never sends it
		// would hold the connection with no answer.
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
	p := recover()
	if p != nil && p != http.ErrAbortHandler {
		h.log.Error("panic serving request", "path", r.URL.Path, "panic", p)
		a.err = fmt.Errorf("panic: %v", p)
		p = http.ErrAbortHandler
		if a.status == 0 {
			// Re-panicking would drop this answer with the connection.
			writeError(rec, dialectOf(r.URL.Path), http.StatusInternalServerError, "internal error")
			p = nil
		}
	}
	h.logAccess(r, a)
	if p != nil {
		panic(p)
	}
}

// headTooLarge answers 431 to a request whose head is over the limit.
func (h *Handler) headTooLarge(w http.ResponseWriter, r *http.Request) bool {
	n := headBytes(r)
	if n <= h.cfg.MaxHeaderBytes {
		return false
	}
	writeError(w, dialectOf(r.URL.Path), http.StatusRequestHeaderFieldsTooLarge,
		"request headers are "+strconv.Itoa(n)+" bytes, more than the "+strconv.Itoa(h.cfg.MaxHeaderBytes)+" allowed")
	return true
}

// headBytes is the size of a request's head as it came: the request line
// and every header line.
func headBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func (h *Handler) logAccess(r *http.Request, a *access) {
	status := a.status
	if status == 0 {
		status = http.StatusOK
	}
	if r.Context().Err() != nil && a.streamErr == "" && errors.Is(r.Context().Err(), context.Canceled) && a.status == 0 {
		status = 499 // client closed the request before an answer
	}
	level := slog.LevelInfo
	if status >= 500 || a.streamErr != "" {
		level = slog.LevelWarn
	}
	defer h.recordRequest(r, a, status)
	if !h.log.Enabled(r.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("method", r.Method),
		// What the client sent is cut to the history's limits: one request
		// must not write megabytes to the log (or be dropped by its
		// rotation, which refuses a line over its size).
		slog.String("path", history.Clip(r.URL.Path, history.MaxPathLen)),
		slog.Int("status", status),
		slog.Float64("duration_ms", ms(time.Since(a.start))),
		slog.Float64("ttfb_ms", ms(a.firstByte)),
		slog.Int64("bytes", a.bytes),
		slog.String("request_id", a.requestID),
		slog.String("client", h.clientOf(r, a)),
	)
	if a.model != "" {
		attrs = append(attrs, slog.String("model", history.Clip(a.model, history.MaxTextLen)))
	}
	if a.node != "" {
		attrs = append(attrs, slog.String("node", a.node))
	}
	if a.who != "" {
		attrs = append(attrs, slog.String("who", a.who))
	}
	if a.retries > 0 {
		attrs = append(attrs, slog.Int("retries", a.retries))
	}
	if a.promptTok > 0 || a.evalTok > 0 {
		attrs = append(attrs, slog.Int64("prompt_eval_count", a.promptTok), slog.Int64("eval_count", a.evalTok))
	}
	if a.streamErr != "" {
		attrs = append(attrs, slog.String("stream_error", history.Clip(a.streamErr, history.MaxErrorLen)))
	}
	if a.err != nil {
		attrs = append(attrs, slog.String("err", history.Clip(a.err.Error(), history.MaxErrorLen)))
	}
	h.log.LogAttrs(r.Context(), level, "request", attrs...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// peerIP is the address at the other end of r's connection.
func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientIP is the address of the client behind r: the connection's peer,
// or, when the peer is a trusted proxy, the rightmost address in
// X-Forwarded-For that is not a trusted proxy itself. Entries further left
// were written by whoever sent the request and are not believed; an entry
// that is not an address stops the walk at the last proxy vouched for.
func (h *Handler) clientIP(r *http.Request) string {
	peer := peerIP(r)
	trusted := h.cfg.Auth.TrustedProxies
	if len(trusted) == 0 {
		return peer
	}
	last, err := netip.ParseAddr(peer)
	if err != nil || !inPrefixes(trusted, last) {
		return peer
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			addr, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return last.String()
			}
			addr = addr.Unmap()
			if !inPrefixes(trusted, addr) {
				return addr.String()
			}
			last = addr
		}
	}
	return last.String()
}

// clientOf is clientIP, worked out once per request for the access line
// and the request history.
func (h *Handler) clientOf(r *http.Request, a *access) string {
	if a.client == "" {
		a.client = h.clientIP(r)
	}
	return a.client
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// shortReason turns a transport error into a short, secret-free reason.
// Clients see it, so the node's address goes: they know nodes by name.
func shortReason(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "dial tcp") {
		return s[i+2:]
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		// "read tcp 10.0.0.5:41234->10.0.0.7:11434: read: connection
		// reset by peer" becomes "read: connection reset by peer".
		s = strings.Replace(s, op.Error(), op.Err.Error(), 1)
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
