package app

// upstream.go is the HTTP/1.1 client that reaches the nodes.
//
// net/http's Transport runs two goroutines per connection (a read loop and
// a write loop, a few KiB of stack each) and gives every connection a 4 KiB
// bufio.Writer besides its 4 KiB bufio.Reader. A stream holds its connection
// for minutes, so at thousands of concurrent streams those are most of the
// proxy's memory, and the hand-offs between the goroutines cost CPU on every
// request. This client does the whole exchange on the caller's goroutine:
// write the request, read the response headers, and let the caller read the
// body straight from the connection's only buffer.
//
// What it keeps from net/http: idle connections pooled per node (LIFO,
// bounded, expired lazily), a dial bounded by the dial timeout, a bound on
// the wait for response headers, one transparent retry when a pooled
// connection turns out to be dead before any byte of the answer arrived,
// and a response the node sent before it read the whole request (413 and
// close) is still returned. Cancelling the request's context closes the
// connection at once, so the node sees the client leave.
//
// What it leaves out, because a node never needs it: proxies, HTTP/2,
// compression, redirects (RoundTrip never follows them), request trailers,
// and reading the response while the request body is still being written
// (a node reads the whole request before it answers).

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	upReadBufferSize   = 2 << 10 // the one buffer a connection holds: a token line is ~200 bytes
	upMaxIdlePerHost   = 1024    // idle connections kept per node
	upIdleTimeout      = 90 * time.Second
	upMaxHeaderBytes   = 1 << 20  // response head, 1xx included
	upInlineBody       = 32 << 10 // bodies up to this go out with the head, in one write
	upCopyBuffer       = 32 << 10 // chunk size for bodies streamed from a reader
	upEarlyAnswerWait  = time.Second
	upMax1xxResponses  = 10
	upDefaultUserAgent = "Go-http-client/1.1" // what net/http sends; nodes see no change
)

// upstream is an http.RoundTripper for HTTP/1.1 nodes. It is safe for
// concurrent use; the zero value is not usable, build it with
// newUpstream.
type upstream struct {
	dialer           net.Dialer
	firstByteTimeout time.Duration // 0: no bound
	// tlsConfig is cloned for every TLS connection (nil: the system's
	// roots). Tests set their server's certificate pool.
	tlsConfig   *tls.Config
	maxIdle     int
	idleTimeout time.Duration

	mu        sync.RWMutex
	pools     map[poolKey]*hostPool
	nextSweep atomic.Int64 // unix nanoseconds

	// streams are the connections whose answers are being relayed as
	// streams, for endStreams to wake; ending is set once endStreams ran,
	// so that a stream watched after it is woken too.
	streamsMu sync.Mutex
	streams   map[*upConn]struct{}
	ending    bool
}

func newUpstream(dialTimeout, firstByteTimeout time.Duration) *upstream {
	return &upstream{
		dialer:           net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		firstByteTimeout: firstByteTimeout,
		maxIdle:          upMaxIdlePerHost,
		idleTimeout:      upIdleTimeout,
		pools:            make(map[poolKey]*hostPool),
		streams:          make(map[*upConn]struct{}),
	}
}

// endStreams wakes every stream waiting for its node: its read fails at
// once, and the relay, told why (Handler.EndStreams), ends it with an
// error its client sees. For a shutdown's last seconds.
func (t *upstream) endStreams() {
	t.streamsMu.Lock()
	defer t.streamsMu.Unlock()
	t.ending = true
	for c := range t.streams {
		c.wake()
	}
}

// watch puts c in endStreams' reach. A stream that starts waiting after
// endStreams ran (its relay was between two chunks then) is woken at once:
// under the lock, either endStreams sees it or it sees endStreams.
func (t *upstream) watch(c *upConn) {
	t.streamsMu.Lock()
	t.streams[c] = struct{}{}
	if t.ending {
		c.wake()
	}
	t.streamsMu.Unlock()
}

func (t *upstream) unwatch(c *upConn) {
	t.streamsMu.Lock()
	delete(t.streams, c)
	t.streamsMu.Unlock()
}

// poolKey names a node's connections: scheme and host:port.
type poolKey struct{ scheme, addr string }

// hostPool is a node's idle connections, oldest first.
type hostPool struct {
	mu   sync.Mutex
	idle []*upConn
}

// upConn is one connection to a node.
type upConn struct {
	conn   net.Conn  // the TLS connection for https, else raw
	raw    net.Conn  // the TCP connection
	peek   *connPeek // checks raw before a reuse
	br     *bufio.Reader
	key    poolKey
	tls    *tls.ConnectionState
	limit  int64 // bytes the response head may still take; <0: no limit
	idleAt time.Time
	reused bool  // taken from the pool rather than dialed for this request
	rerr   error // the connection's first read error, returned from then on
	// silence, when set, bounds how long a stream's node may send nothing;
	// heard is when it last sent something (upBody.waitData, Read).
	silence time.Duration
	heard   time.Time
	ending  atomic.Bool // endStreams woke it: no more waiting
	pw      progressWriter
}

// Read feeds the connection's bufio.Reader, bounding the response head.
// A read error is sticky, as a connection that failed is never read again:
// bufio hands an error out once, and a reset reported to Peek must not turn
// into a clean end of the stream for the Read after it.
func (c *upConn) Read(p []byte) (int, error) {
	if c.rerr != nil {
		return 0, c.rerr
	}
	if c.limit == 0 {
		return 0, errors.New("aivonx: node's response head is too large")
	}
	if c.limit > 0 && int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	if c.silence > 0 {
		// The deadline is set once, from the silence's start, not moved at
		// every token: when it passes, a node that spoke since gets the
		// rest of its time from its last byte.
		now := time.Now()
		if n > 0 {
			c.heard = now
		}
		for n == 0 && isTimeout(err) && now.Sub(c.heard) < c.silence && !c.ending.Load() {
			_ = c.conn.SetReadDeadline(c.heard.Add(c.silence))
			if c.ending.Load() { // endStreams ran since the check
				_ = c.conn.SetReadDeadline(time.Now())
			}
			n, err = c.conn.Read(p)
			if now = time.Now(); n > 0 {
				c.heard = now
			}
		}
	}
	if c.limit > 0 {
		c.limit -= int64(n)
	}
	c.rerr = err
	return n, err
}

// wake makes a stream's read fail at once, and stay failed (endStreams).
func (c *upConn) wake() {
	c.ending.Store(true)
	_ = c.conn.SetReadDeadline(time.Now())
}

// close closes the TCP connection; a TLS close_notify is not needed, as
// every HTTP/1.1 message is framed. Safe to call more than once.
func (c *upConn) close() { _ = c.raw.Close() }

// RoundTrip implements http.RoundTripper. It closes req.Body, also on
// errors, and never modifies req.
func (t *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	fail := func(err error) (*http.Response, error) {
		if body != nil {
			body.Close()
		}
		return nil, err
	}
	if req.URL == nil {
		return fail(errors.New("aivonx: nil Request.URL"))
	}
	if req.Header == nil {
		return fail(errors.New("aivonx: nil Request.Header"))
	}
	u := req.URL
	if u.Scheme != "http" && u.Scheme != "https" {
		return fail(fmt.Errorf("aivonx: unsupported protocol scheme %q", u.Scheme))
	}
	if u.Host == "" {
		return fail(errors.New("aivonx: no Host in request URL"))
	}
	if req.ContentLength != 0 && req.Body == nil {
		return fail(fmt.Errorf("aivonx: Request.ContentLength=%d with nil Body", req.ContentLength))
	}
	cl := req.ContentLength
	if body == nil {
		cl = 0
	} else if cl == 0 {
		cl = -1 // a body of unknown length: chunked
	}
	key := poolKey{scheme: u.Scheme, addr: u.Host}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		key.addr = net.JoinHostPort(u.Hostname(), port)
	}
	ctx := req.Context()
	t.maybeSweep()
	for attempt := 0; ; attempt++ {
		var c *upConn
		if attempt == 0 {
			c = t.take(key)
		}
		if c == nil {
			var err error
			if c, err = t.dial(ctx, key, u.Hostname()); err != nil {
				return fail(err)
			}
		}
		resp, touched, retry, err := t.exchange(ctx, c, req, body, cl)
		if err == nil {
			return resp, nil
		}
		if !retry || attempt > 0 || ctx.Err() != nil {
			if !touched {
				return fail(err)
			}
			return nil, err // the body was closed when it was written
		}
		// A pooled connection that failed before the node could act on
		// the request: once more on a fresh one, with the body from the
		// start.
		if touched && body != nil {
			if req.GetBody == nil {
				return nil, err
			}
			nb, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			body = nb
			if body == http.NoBody {
				body = nil
			}
		}
	}
}

// exchange sends req on c and reads the response head. touched reports
// whether the body was read (and closed); retry whether the failure is a
// pooled connection that was already dead.
func (t *upstream) exchange(ctx context.Context, c *upConn, req *http.Request, body io.ReadCloser, cl int64) (resp *http.Response, touched, retry bool, err error) {
	// Cancelling ctx closes the connection, from the request's first byte
	// to the body's last: the node sees the client leave.
	stop := context.AfterFunc(ctx, c.close)
	fail := func(err error) (*http.Response, bool, bool, error) {
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, touched, false, ctx.Err()
		}
		return nil, touched, retry, err
	}
	// A node that stops reading (frozen) must not hold the request for
	// ever: each write must make progress within the first-byte timeout.
	// Each, not all: a large body may take long to arrive from its client.
	var dst io.Writer = c.conn
	if t.firstByteTimeout > 0 {
		c.pw = progressWriter{conn: c.conn, within: t.firstByteTimeout}
		dst = &c.pw
	}
	touched, local, werr := writeRequest(dst, req, body, cl)
	if touched && body != nil {
		body.Close()
	}
	if local {
		return fail(werr)
	}
	if isTimeout(werr) {
		return fail(&stallError{what: "read nothing of the request", idle: t.firstByteTimeout})
	}
	if t.firstByteTimeout > 0 {
		_ = c.conn.SetWriteDeadline(time.Time{})
	}
	canReplay := !touched || body == nil || req.GetBody != nil
	wait := t.firstByteTimeout
	if ctx.Value(noFirstByteTimeout{}) != nil {
		wait = 0
	}
	if werr != nil {
		// The node may have answered before it read the whole body (413
		// and close): what it sent is in the socket.
		wait = upEarlyAnswerWait
		if t.firstByteTimeout > 0 {
			wait = min(wait, t.firstByteTimeout)
		}
	}
	if wait > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	}
	c.limit = upMaxHeaderBytes
	if _, perr := c.br.Peek(1); perr != nil {
		if werr != nil {
			retry = c.reused && canReplay
			return fail(fmt.Errorf("write request: %w", werr))
		}
		if isTimeout(perr) {
			return fail(&headerTimeoutError{wait: wait, err: perr})
		}
		// The node took the whole request and said nothing: it may have
		// acted on it (crashed, restarted with it queued), so only a
		// request that may be repeated is sent again here. The connection
		// was checked before the write (usable).
		retry = c.reused && canReplay && idempotent(req) && (perr == io.EOF || errors.Is(perr, syscall.ECONNRESET))
		if perr == io.EOF {
			perr = errors.New("node closed the connection before answering")
		}
		return fail(fmt.Errorf("read response: %w", perr))
	}
	// A byte of the answer arrived: never retried from here on.
	for n1xx := 0; ; n1xx++ {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if isTimeout(err) {
				return fail(&headerTimeoutError{wait: wait, err: err})
			}
			return fail(fmt.Errorf("read response: %w", err))
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n1xx == upMax1xxResponses {
			return fail(errors.New("read response: too many 1xx responses"))
		}
	}
	c.limit = -1
	if wait > 0 {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	resp.TLS = c.tls
	keep := werr == nil && !resp.Close && !req.Close
	if werr != nil {
		resp.Close = true
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		resp.Body = &rawBody{c: c, stop: stop}
	case resp.Body == http.NoBody:
		t.release(c, stop, keep)
	default:
		resp.Body = &upBody{rc: resp.Body, c: c, t: t, ctx: ctx, stop: stop, keep: keep}
	}
	return resp, touched, false, nil
}

// idempotent reports whether req may be sent twice (RFC 9110 §9.2.2, as
// net/http's Transport reads it): a safe method, or a declared
// idempotency key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// progressWriter gives each write to a node its own deadline: a node that
// takes nothing for that long has stopped reading.
type progressWriter struct {
	conn   net.Conn
	within time.Duration
}

func (w *progressWriter) Write(p []byte) (int, error) {
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.within))
	return w.conn.Write(p)
}

// noFirstByteTimeout is the context key of withoutFirstByteTimeout.
type noFirstByteTimeout struct{}

// withoutFirstByteTimeout lifts the transport's bound on the wait for the
// response head, for requests whose answer comes whole, once done.
func withoutFirstByteTimeout(ctx context.Context) context.Context {
	return context.WithValue(ctx, noFirstByteTimeout{}, true)
}

// release ends an exchange whose response was read to its end: the
// connection goes back to the pool when it may carry another request.
func (t *upstream) release(c *upConn, stop func() bool, keep bool) {
	if !stop() { // ctx was cancelled: the connection is closed or closing
		c.close()
		return
	}
	if !keep || c.br.Buffered() > 0 { // bytes nobody asked for: out of sync
		c.close()
		return
	}
	t.put(c)
}

// upBody is a response body read straight from the connection.
type upBody struct {
	rc    io.ReadCloser // what http.ReadResponse framed; reads c.br
	c     *upConn
	t     *upstream
	ctx   context.Context
	stop  func() bool
	keep  bool
	state atomic.Int32 // bodyReading, bodyDone, bodyClosed
	err   error        // the error Read returned last, set and read by Read only
	// watched: the relay waits on it as a stream, and endStreams may wake
	// it. Set by waitData, read by Read: the relay's goroutine only.
	watched bool
}

const (
	bodyReading int32 = iota
	bodyDone          // read to the end; the connection was released
	bodyClosed        // closed, or failed, before its end; the connection was closed
)

var errBodyClosed = errors.New("http: read on closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyDone:
		return 0, io.EOF
	case bodyClosed:
		if b.err != nil {
			return 0, b.err
		}
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.c.silence > 0 && isTimeout(err) {
		err = &stallError{what: "sent nothing", idle: b.c.silence}
	}
	switch {
	case err == io.EOF:
		if b.watched {
			// Out of endStreams' reach first, then cleared: the connection
			// may serve a whole answer next, with no deadline.
			b.t.unwatch(b.c)
			b.c.silence = 0
			b.c.ending.Store(false)
			_ = b.c.conn.SetReadDeadline(time.Time{})
		}
		if b.state.CompareAndSwap(bodyReading, bodyDone) {
			b.t.release(b.c, b.stop, b.keep)
		}
	case err != nil:
		if b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
		if b.state.CompareAndSwap(bodyReading, bodyClosed) {
			b.stop()
			b.c.close()
			b.t.unwatch(b.c)
		} else if b.state.Load() == bodyClosed {
			err = errBodyClosed
		}
		b.err = err
	}
	return n, err
}

// waitData blocks until the node has sent more of the body, or the
// connection failed, so that the caller takes a buffer only once there is
// something to copy into it. A failure is left for Read to report.
//
// It also bounds the silence: a node that stops sending mid-stream (frozen,
// its machine gone) fails the stream after the first-byte timeout, rather
// than holding the client for ever (see upConn.Read).
func (b *upBody) waitData() {
	if b.c.silence > 0 {
		// The silence counts from now, when the proxy asks again, not
		// from the node's last byte: a slow client may have held the
		// relay in its write for longer than the bound.
		b.c.heard = time.Now()
	}
	if b.state.Load() != bodyReading || b.c.br.Buffered() > 0 {
		return
	}
	if !b.watched {
		b.watched = true
		b.t.watch(b.c)
		if b.state.Load() != bodyReading { // closed meanwhile: Close's unwatch may have run first
			b.t.unwatch(b.c)
		}
	}
	if idle := b.t.firstByteTimeout; idle > 0 && b.c.silence == 0 {
		b.c.silence, b.c.heard = idle, time.Now()
		_ = b.c.conn.SetReadDeadline(b.c.heard.Add(idle))
		if b.c.ending.Load() { // endStreams ran before the deadline was set
			_ = b.c.conn.SetReadDeadline(time.Now())
		}
	}
	_, _ = b.c.br.Peek(1)
}

// stallError is a node that did nothing for too long: sent nothing of a
// stream, or read nothing of a request.
type stallError struct {
	what string
	idle time.Duration
}

func (e *stallError) Error() string   { return e.what + " for " + e.idle.String() }
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }

// Close ends the body. Before its end that closes the connection: a
// half-read connection is never reused. Idempotent, and safe to call while
// another goroutine is in Read.
func (b *upBody) Close() error {
	if b.state.CompareAndSwap(bodyReading, bodyClosed) {
		b.stop()
		b.c.close()
		b.t.unwatch(b.c)
	}
	return nil
}

// rawBody is the connection after 101 Switching Protocols.
type rawBody struct {
	c    *upConn
	stop func() bool
	once sync.Once
}

func (b *rawBody) Read(p []byte) (int, error)  { return b.c.br.Read(p) }
func (b *rawBody) Write(p []byte) (int, error) { return b.c.conn.Write(p) }
func (b *rawBody) Close() error {
	b.once.Do(func() { b.stop(); b.c.close() })
	return nil
}

// headerTimeoutError is the node not answering within the first-byte
// timeout: a net.Error whose Timeout is true, and not a dial error.
type headerTimeoutError struct {
	wait time.Duration
	err  error
}

func (e *headerTimeoutError) Error() string {
	return "timeout awaiting response headers (" + e.wait.String() + ")"
}
func (e *headerTimeoutError) Timeout() bool   { return true }
func (e *headerTimeoutError) Temporary() bool { return true }
func (e *headerTimeoutError) Unwrap() error   { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dial opens a connection to a node, on a goroutine of its own. Connecting
// (the socket's deadline timers, the resolver, a TLS handshake) takes more
// stack than all the rest of a stream, and a goroutine's stack, once grown,
// stays grown while the goroutine lives: dialing on the request's goroutine
// would double the stack of every stream for its whole life, from 8 to 16
// KiB, which at thousands of streams is a third of the proxy's memory. The
// dialing goroutine's stack is freed when it returns.
func (t *upstream) dial(ctx context.Context, key poolKey, hostname string) (*upConn, error) {
	type dialed struct {
		c   *upConn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := t.connect(ctx, key, hostname)
		ch <- dialed{c, err}
	}()
	d := <-ch
	return d.c, d.err
}

// connect opens a connection to a node. Every failure, the TLS handshake's
// included, is a *net.OpError with Op "dial".
func (t *upstream) connect(ctx context.Context, key poolKey, hostname string) (*upConn, error) {
	raw, err := t.dialer.DialContext(ctx, "tcp", key.addr)
	if err != nil {
		return nil, err
	}
	c := &upConn{conn: raw, raw: raw, key: key, peek: newConnPeek(raw)}
	if key.scheme == "https" {
		var cfg *tls.Config
		if t.tlsConfig != nil {
			cfg = t.tlsConfig.Clone()
		} else {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = hostname
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if t.dialer.Timeout > 0 {
			_ = raw.SetDeadline(time.Now().Add(t.dialer.Timeout))
		}
		stop := context.AfterFunc(ctx, func() { raw.Close() })
		err := tc.Handshake()
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			raw.Close()
			return nil, &net.OpError{Op: "dial", Net: "tcp", Source: raw.LocalAddr(), Addr: raw.RemoteAddr(), Err: err}
		}
		_ = raw.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.conn, c.tls = tc, &st
	}
	c.br = bufio.NewReaderSize(c, upReadBufferSize)
	return c, nil
}

func (t *upstream) pool(key poolKey, create bool) *hostPool {
	t.mu.RLock()
	p := t.pools[key]
	t.mu.RUnlock()
	if p != nil || !create {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p = t.pools[key]; p == nil {
		p = &hostPool{}
		t.pools[key] = p
	}
	return p
}

// take returns the node's most recently used idle connection that is
// still usable, or nil.
func (t *upstream) take(key poolKey) *upConn {
	p := t.pool(key, false)
	if p == nil {
		return nil
	}
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.idle[n-1]
		if now.Sub(c.idleAt) > t.idleTimeout {
			// The newest has expired, so have all the others.
			stale := p.idle
			p.idle = nil
			p.mu.Unlock()
			for _, c := range stale {
				c.close()
			}
			return nil
		}
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if c.usable() {
			c.reused = true
			return c
		}
		c.close()
	}
}

// usable reports whether an idle connection can carry a request: the node
// has neither closed it (a restart, an idle timeout) nor sent anything
// unasked, which would be read as the next request's answer. Checking
// before the write is what allows a request, once written, never to be
// sent again: a write to a connection the node had closed still succeeds,
// and the failure shows only on the read, where it cannot be told from the
// node failing that request.
func (c *upConn) usable() bool {
	return c.br.Buffered() == 0 && c.peek.idle()
}

// put returns a connection to its node's pool.
func (t *upstream) put(c *upConn) {
	p := t.pool(c.key, true)
	c.idleAt = time.Now()
	p.mu.Lock()
	if len(p.idle) >= t.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	stale := p.expire(c.idleAt, t.idleTimeout)
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// expire removes the connections idle longer than timeout (the oldest
// come first) and returns them. p.mu is held.
func (p *hostPool) expire(now time.Time, timeout time.Duration) []*upConn {
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) > timeout {
		n++
	}
	if n == 0 {
		return nil
	}
	stale := make([]*upConn, n)
	copy(stale, p.idle[:n])
	m := copy(p.idle, p.idle[n:])
	clear(p.idle[m:])
	p.idle = p.idle[:m]
	return stale
}

// maybeSweep closes expired idle connections of every node now and then,
// so that those of a node no longer used do not stay open.
func (t *upstream) maybeSweep() {
	now := time.Now()
	next := t.nextSweep.Load()
	if now.UnixNano() < next || !t.nextSweep.CompareAndSwap(next, now.Add(t.idleTimeout/3).UnixNano()) {
		return
	}
	t.mu.RLock()
	pools := make([]*hostPool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.RUnlock()
	for _, p := range pools {
		p.mu.Lock()
		stale := p.expire(now, t.idleTimeout)
		p.mu.Unlock()
		for _, c := range stale {
			c.close()
		}
	}
}

// CloseIdleConnections closes every pooled connection.
func (t *upstream) CloseIdleConnections() {
	t.mu.RLock()
	var all []*upConn
	for _, p := range t.pools {
		p.mu.Lock()
		all = append(all, p.idle...)
		p.idle = nil
		p.mu.Unlock()
	}
	t.mu.RUnlock()
	for _, c := range all {
		c.close()
	}
}

// Request writing.

var upWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

// writeRequest writes req's head and body to w: a body up to upInlineBody
// in the same write as the head, a larger one after it. touched reports
// whether body was read; local whether err is the request's own fault (an
// invalid header, a body shorter than its length) rather than the
// connection's.
func writeRequest(w io.Writer, req *http.Request, body io.Reader, cl int64) (touched, local bool, err error) {
	bp := upWriteBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			upWriteBufs.Put(bp)
		}
	}()
	buf, err = appendRequestHead(buf, req, cl)
	if err != nil {
		return false, true, err
	}
	if body == nil {
		_, err = w.Write(buf)
		return false, false, err
	}
	touched = true
	if cl > 0 && cl <= upInlineBody {
		head := len(buf)
		buf = append(buf, make([]byte, cl)...)[:head+int(cl)]
		if n, rerr := io.ReadFull(body, buf[head:]); rerr != nil {
			return true, true, fmt.Errorf("aivonx: ContentLength=%d with Body length %d", cl, n)
		}
		_, err = w.Write(buf)
		return true, false, err
	}
	// The head goes first, on its own: a streamed body may be slow.
	if _, err = w.Write(buf); err != nil {
		return true, false, err
	}
	if cl > 0 {
		if wt, ok := body.(io.WriterTo); ok && req.GetBody != nil {
			// An in-memory body (bytes.Reader...): one write.
			cw := &countingWriter{w: w}
			_, err = wt.WriteTo(cw)
			if err == nil && cw.n != cl {
				return true, true, fmt.Errorf("aivonx: ContentLength=%d with Body length %d", cl, cw.n)
			}
			return true, false, err
		}
	}
	buf = buf[:cap(buf)]
	if len(buf) < upCopyBuffer {
		buf = make([]byte, upCopyBuffer)
	}
	if cl > 0 {
		var sent int64
		for sent < cl {
			n, rerr := body.Read(buf[:min(int64(len(buf)), cl-sent)])
			if n > 0 {
				if _, err = w.Write(buf[:n]); err != nil {
					return true, false, err
				}
				sent += int64(n)
			}
			if rerr != nil && sent < cl {
				if rerr == io.EOF {
					rerr = fmt.Errorf("aivonx: ContentLength=%d with Body length %d", cl, sent)
				}
				return true, true, rerr
			}
		}
		return true, false, nil
	}
	// Chunked: each read is one chunk, sized in front and CRLF behind.
	const front = 10 // hex size (at most 8 digits for 32 KiB) and CRLF
	for {
		n, rerr := body.Read(buf[front : len(buf)-2])
		if n > 0 {
			size := strconv.AppendInt(buf[:0:front], int64(n), 16) // fits: no allocation
			start := front - len(size) - 2
			copy(buf[start:], size)
			buf[front-2], buf[front-1] = '\r', '\n'
			buf[front+n], buf[front+n+1] = '\r', '\n'
			if _, err = w.Write(buf[start : front+n+2]); err != nil {
				return true, false, err
			}
		}
		if rerr == io.EOF {
			_, err = io.WriteString(w, "0\r\n\r\n")
			return true, false, err
		}
		if rerr != nil {
			return true, true, rerr
		}
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// appendRequestHead appends the request line and headers, as
// http.Request.Write would write them: Host, User-Agent (Go's default
// unless set, omitted when set empty), Connection: close when req.Close,
// Content-Length or Transfer-Encoding, then req.Header. cl < 0 means a
// chunked body.
func appendRequestHead(b []byte, req *http.Request, cl int64) ([]byte, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !isToken(method) {
		return b, fmt.Errorf("aivonx: invalid method %q", method)
	}
	ruri := req.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if ruri[i] <= ' ' || ruri[i] == 0x7f {
			return b, errors.New("aivonx: invalid character in request URL")
		}
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if i := strings.Index(host, "%25"); i >= 0 && strings.HasPrefix(host, "[") {
		if j := strings.LastIndexByte(host, ']'); j > i {
			host = host[:i] + host[j:] // no IPv6 zone in Host (RFC 6874)
		}
	}
	if !validHostHeader(host) {
		host = "" // as net/http: never send a Host that could smuggle
	}
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, ruri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	ua := upDefaultUserAgent
	if _, ok := req.Header["User-Agent"]; ok {
		ua = req.Header.Get("User-Agent")
	}
	if ua = trimHeaderValue(ua); ua != "" {
		if !validHeaderValue(ua) {
			return b, errors.New("aivonx: invalid User-Agent")
		}
		b = append(b, "User-Agent: "...)
		b = append(b, ua...)
		b = append(b, "\r\n"...)
	}
	if req.Close && !namedIn(req.Header["Connection"], "close") {
		b = append(b, "Connection: close\r\n"...)
	}
	switch {
	case cl < 0:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case cl > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, cl, 10)
		b = append(b, "\r\n"...)
	}
	for k, vs := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !isToken(k) {
			return b, fmt.Errorf("aivonx: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return b, fmt.Errorf("aivonx: invalid header field value for %q", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, trimHeaderValue(v)...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...), nil
}

// isToken reports whether s is an RFC 9110 token (a method or field name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimHeaderValue(v string) string { return strings.Trim(v, " \t") }

// validHostHeader allows what may appear in a host[:port]: letters,
// digits, and the few punctuation marks of hostnames, IPv6 literals and
// sub-delims (as httpguts.ValidHostHeader).
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!$%&'()*+,-.:;=[]_~", rune(c)) {
			return false
		}
	}
	return true
}
