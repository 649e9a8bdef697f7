package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// upServer is a test node that counts the TCP connections it accepted.
type upServer struct {
	*httptest.Server
	conns atomic.Int32
}

func newUpServer(t *testing.T, h http.HandlerFunc) *upServer {
	t.Helper()
	s := &upServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func newTestUpstream(t *testing.T, firstByte time.Duration) *upstream {
	t.Helper()
	u := newUpstream(2*time.Second, firstByte)
	t.Cleanup(u.CloseIdleConnections)
	return u
}

func upGet(t *testing.T, u *upstream, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func (u *upstream) idleCount() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	n := 0
	for _, p := range u.pools {
		p.mu.Lock()
		n += len(p.idle)
		p.mu.Unlock()
	}
	return n
}

func TestUpstreamKeepAliveAndRequestHead(t *testing.T) {
	type seen struct {
		method, uri, host, ua, ct, custom, body string
		cl                                      int64
		te                                      []string
	}
	got := make(chan seen, 10)
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.UserAgent(), r.Header.Get("Content-Type"), r.Header.Get("X-Custom"), string(b), r.ContentLength, r.TransferEncoding}
		io.WriteString(w, "ok:"+string(b))
	})
	u := newTestUpstream(t, 5*time.Second)
	for i := range 5 {
		body := fmt.Sprintf(`{"model":"m","i":%d}`, i)
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/chat?x=1", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Custom", "  v  ")
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok:"+body || resp.StatusCode != 200 {
			t.Fatalf("answer %d %q", resp.StatusCode, b)
		}
		g := <-got
		want := seen{"POST", "/api/chat?x=1", strings.TrimPrefix(s.URL, "http://"), "Go-http-client/1.1", "application/json", "v", body, int64(len(body)), nil}
		if fmt.Sprint(g) != fmt.Sprint(want) {
			t.Fatalf("node saw %+v, want %+v", g, want)
		}
	}
	// GET with no body, and an empty POST (Content-Length: 0).
	upGet(t, u, s.URL+"/a")
	if g := <-got; g.cl != 0 || g.method != "GET" {
		t.Fatalf("GET: %+v", g)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/b", nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if g := <-got; g.cl != 0 || g.te != nil {
		t.Fatalf("empty POST: %+v", g)
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
	if n := u.idleCount(); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
}

func TestUpstreamChunkedStreamArrivesIncrementally(t *testing.T) {
	gate := make(chan struct{})
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"n":1}`+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
			return
		}
		io.WriteString(w, `{"n":2}`+"\n")
	})
	u := newTestUpstream(t, 5*time.Second)
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != `{"n":1}`+"\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(gate) // the second line is written only now
	line, err = br.ReadString('\n')
	if err != nil || line != `{"n":2}`+"\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the last line: %v, want EOF", err)
	}
	resp.Body.Close()
	upGet(t, u, s.URL+"/again") // reuses the connection (the gate is closed)
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestUpstreamContentLengthBodies(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b := []byte("short")
		if r.URL.Path == "/big" {
			b = big
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	})
	u := newTestUpstream(t, 5*time.Second)
	for range 3 {
		resp, body := upGet(t, u, s.URL+"/small")
		if body != "short" || resp.ContentLength != 5 {
			t.Fatalf("small: %q, length %d", body, resp.ContentLength)
		}
		resp, body = upGet(t, u, s.URL+"/big")
		if body != string(big) || resp.ContentLength != int64(len(big)) {
			t.Fatalf("big: %d bytes, length %d", len(body), resp.ContentLength)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	// The connection is back in the pool as soon as the body reached EOF,
	// before Close.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/small", nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if u.idleCount() != 0 {
		t.Fatal("connection idle while its body is unread")
	}
	io.ReadAll(resp.Body)
	if u.idleCount() != 1 {
		t.Fatal("connection not released at EOF")
	}
	resp.Body.Close()
	resp.Body.Close() // idempotent
	if u.idleCount() != 1 {
		t.Fatal("Close after EOF dropped the connection")
	}
}

func TestUpstreamRequestBodies(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("X-Len")
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s %d %d %v %x", h, len(b), r.ContentLength, r.TransferEncoding, b[len(b)-min(len(b), 4):])
	})
	u := newTestUpstream(t, 5*time.Second)
	big := bytes.Repeat([]byte("x"), 3<<20)
	big[len(big)-1] = 'y'
	cases := []struct {
		name string
		body func() (io.Reader, int64)
		want string
	}{
		{"inline", func() (io.Reader, int64) { return bytes.NewReader(big[:1000]), 1000 }, " 1000 1000 [] 78787878"},
		{"in-memory large", func() (io.Reader, int64) { return bytes.NewReader(big), int64(len(big)) }, fmt.Sprintf(" %d %d [] 78787879", len(big), len(big))},
		{"streamed with length", func() (io.Reader, int64) { return io.MultiReader(bytes.NewReader(big)), int64(len(big)) }, fmt.Sprintf(" %d %d [] 78787879", len(big), len(big))},
		{"chunked", func() (io.Reader, int64) { return io.MultiReader(bytes.NewReader(big[:100000])), -1 }, " 100000 -1 [chunked] 78787878"},
		{"chunked empty", func() (io.Reader, int64) { return io.MultiReader(strings.NewReader("")), -1 }, " 0 -1 [chunked] "},
	}
	for _, c := range cases {
		rd, n := c.body()
		req, _ := http.NewRequest(http.MethodPut, s.URL, rd)
		req.ContentLength = n
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != c.want {
			t.Fatalf("%s: node saw %q, want %q", c.name, b, c.want)
		}
	}
	// A body shorter than its length is the caller's error.
	req, _ := http.NewRequest(http.MethodPut, s.URL, io.MultiReader(strings.NewReader("abc")))
	req.ContentLength = 10
	if _, err := u.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "ContentLength=10") {
		t.Fatalf("short body: %v", err)
	}
	// Invalid header values are refused before anything is sent.
	req, _ = http.NewRequest(http.MethodGet, s.URL, nil)
	req.Header["X-Bad"] = []string{"a\r\nInjected: 1"}
	if _, err := u.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid header") {
		t.Fatalf("bad header: %v", err)
	}
}

func TestUpstreamNoReuse(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, strings.Repeat("z", 100<<10))
	})
	u := newTestUpstream(t, 5*time.Second)
	// Connection: close from the node.
	upGet(t, u, s.URL+"/close")
	upGet(t, u, s.URL+"/close")
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections after two Connection: close answers, want 2", n)
	}
	if u.idleCount() != 0 {
		t.Fatal("a Connection: close connection was pooled")
	}
	// A body closed half-read.
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/long", nil)
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after Close succeeded")
		}
	}
	if n := s.conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4: a half-read connection was reused", n)
	}
	if u.idleCount() != 0 {
		t.Fatal("a half-read connection was pooled")
	}
	// Connection: close from the client.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/x", nil)
	req.Close = true
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if u.idleCount() != 0 {
		t.Fatal("a req.Close connection was pooled")
	}
}

func TestUpstreamCancelMidBodyClosesNodeSide(t *testing.T) {
	nodeSawCancel := make(chan struct{})
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "token\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(nodeSawCancel)
		case <-time.After(10 * time.Second):
		}
	})
	u := newTestUpstream(t, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, strings.NewReader(`{}`))
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 100))
		readErr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-nodeSawCancel:
	case <-time.After(2 * time.Second):
		t.Fatal("the node did not see the client leave")
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked Read returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a blocked Read did not return after cancel")
	}
	resp.Body.Close()
	if u.idleCount() != 0 {
		t.Fatal("a cancelled connection was pooled")
	}

	// Cancelled while waiting for the head.
	ctx, cancel = context.WithCancel(context.Background())
	started := make(chan struct{})
	s2 := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	go func() { <-started; cancel() }()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s2.URL, nil)
	if _, err := u.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel before the head: %v, want context.Canceled", err)
	}
}

func TestUpstreamDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u := newTestUpstream(t, 5*time.Second)
	body := &closeTracker{Reader: strings.NewReader("{}")}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/chat", body)
	req.ContentLength = 2
	_, err = u.RoundTrip(req)
	if err == nil || !isDialError(err) {
		t.Fatalf("refused: %v (dial error %v)", err, isDialError(err))
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("refused: %T %v, want *net.OpError dial", err, err)
	}
	if !body.closed {
		t.Fatal("request body not closed on a dial error")
	}
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func TestUpstreamHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	u := newTestUpstream(t, 100*time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("{}"))
	start := time.Now()
	_, err := u.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want a net.Error with Timeout", err)
	}
	if isDialError(err) {
		t.Fatalf("a header timeout counted as a dial error: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
	if s.conns.Load() != 1 {
		t.Fatalf("%d connections: a timed-out request was retried", s.conns.Load())
	}
}

func TestUpstreamStalePooledConnectionRetried(t *testing.T) {
	var requests atomic.Int32
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	u := newTestUpstream(t, 5*time.Second)
	post := func(body string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(body))
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatalf("POST %q: %v", body, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	for i := range 3 {
		if got := post("first"); got != "first" {
			t.Fatal(got)
		}
		// The node closes its idle connections (a restart, an idle
		// timeout); the pooled one is dead.
		if u.idleCount() != 1 {
			t.Fatal("no pooled connection")
		}
		s.CloseClientConnections()
		time.Sleep(10 * time.Millisecond)
		if got := post(fmt.Sprint("second-", i)); got != fmt.Sprint("second-", i) {
			t.Fatalf("retried POST: node echoed %q", got)
		}
	}
	if n := requests.Load(); n != 6 {
		t.Fatalf("node served %d requests, want 6", n)
	}
	if n := s.conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4 (each retry on a fresh one)", n)
	}

	// A fresh connection is never retried.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String(), strings.NewReader("{}"))
	if _, err := u.RoundTrip(req); err == nil {
		t.Fatal("no error from a node that hung up")
	} else if isDialError(err) {
		t.Fatalf("hang-up counted as a dial error: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections: a fresh connection was retried", n)
	}
}

// rawNode serves each connection with serve, which reads requests and
// writes answers as they are; it counts connections and requests.
type rawNode struct {
	ln              net.Listener
	conns, requests atomic.Int32
}

func newRawNode(t *testing.T, serve func(n *rawNode, c net.Conn, br *bufio.Reader)) *rawNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	n := &rawNode{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.conns.Add(1)
			go func() {
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return n
}

func (n *rawNode) URL() string { return "http://" + n.ln.Addr().String() }

// read reads one request whole and counts it.
func (n *rawNode) read(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, req.Body)
	n.requests.Add(1)
	return true
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// TestUpstreamTakenRequestNotResent: a node that takes a whole request on
// a pooled connection and closes it without a word may have acted on it
// (it crashed, or restarted with the request queued), so a POST is not
// sent to it again; a GET, which may be repeated, is.
func TestUpstreamTakenRequestNotResent(t *testing.T) {
	n := newRawNode(t, func(n *rawNode, c net.Conn, br *bufio.Reader) {
		if n.read(br) {
			io.WriteString(c, okAnswer) // the first on each connection is answered
			n.read(br)                  // the second is taken, then the connection dropped
		}
	})
	u := newTestUpstream(t, 5*time.Second)
	send := func(method string) error {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("{}")
		}
		req, _ := http.NewRequest(method, n.URL(), body)
		resp, err := u.RoundTrip(req)
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		return err
	}
	if err := send(http.MethodPost); err != nil {
		t.Fatal(err)
	}
	if err := send(http.MethodPost); err == nil {
		t.Fatal("a POST the node dropped succeeded")
	}
	time.Sleep(50 * time.Millisecond)
	if n.requests.Load() != 2 || n.conns.Load() != 1 {
		t.Fatalf("node saw %d requests on %d connections; want 2 on 1: a taken POST was sent again", n.requests.Load(), n.conns.Load())
	}
	if err := send(http.MethodGet); err != nil { // a fresh connection, answered
		t.Fatal(err)
	}
	if err := send(http.MethodGet); err != nil {
		t.Fatalf("a GET the node dropped was not sent again: %v", err)
	}
	if n.requests.Load() != 5 || n.conns.Load() != 3 {
		t.Fatalf("node saw %d requests on %d connections; want 5 on 3", n.requests.Load(), n.conns.Load())
	}
}

// TestUpstreamFrozenNodeBoundsTheWrite: a node that stops reading (a
// frozen process) cannot hold a request with a large body for ever: the
// write is bounded by the first-byte timeout too.
func TestUpstreamFrozenNodeBoundsTheWrite(t *testing.T) {
	n := newRawNode(t, func(n *rawNode, c net.Conn, br *bufio.Reader) {
		time.Sleep(10 * time.Second) // reads nothing
	})
	u := newTestUpstream(t, 300*time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, n.URL(), bytes.NewReader(make([]byte, 64<<20)))
	start := time.Now()
	_, err := u.RoundTrip(req)
	var stall *stallError
	if !errors.As(err, &stall) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v; want a timeout after about 300ms", time.Since(start), err)
	}
}

// TestUpstreamSlowSteadyBody: the bound is on each write's progress, not on
// the whole body, which may take long to arrive from its client (a large
// blob upload).
func TestUpstreamSlowSteadyBody(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	u := newTestUpstream(t, 300*time.Millisecond)
	pr, pw := io.Pipe()
	go func() {
		for range 5 {
			time.Sleep(150 * time.Millisecond) // 750 ms in all
			pw.Write(make([]byte, 1000))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, s.URL, pr)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatalf("a body arriving over 750 ms, under a 300 ms bound: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "5000" {
		t.Fatalf("node read %s bytes", b)
	}
}

// TestUpstreamUnsolicitedBytes: bytes a node sends on an idle connection
// are not the next request's answer: that connection is not used again.
func TestUpstreamUnsolicitedBytes(t *testing.T) {
	n := newRawNode(t, func(n *rawNode, c net.Conn, br *bufio.Reader) {
		for n.read(br) {
			io.WriteString(c, okAnswer)
			if n.conns.Load() == 1 {
				time.Sleep(20 * time.Millisecond) // after the proxy took the answer
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			}
		}
	})
	u := newTestUpstream(t, 5*time.Second)
	for i := range 2 {
		time.Sleep(50 * time.Millisecond) // the stale answer has arrived
		if _, got := upGet(t, u, n.URL()); got != "ok" {
			t.Fatalf("request %d got %q", i, got)
		}
	}
	if n.conns.Load() != 2 {
		t.Fatalf("%d connections; want 2", n.conns.Load())
	}
}

// A node that answers a large body without reading it: the request's write
// fails, and the answer already sent is returned. (A Go node lingers 500ms
// before it resets the connection, so the write blocks that long; net/http
// reads concurrently and returns sooner. Ollama reads whole bodies.)
func TestUpstreamEarlyAnswerToLargeBody(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 1<<20 {
			w.Header().Set("Connection", "close")
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		io.Copy(io.Discard, r.Body)
	})
	u := newTestUpstream(t, 5*time.Second)
	for _, reused := range []bool{false, true} {
		if reused {
			upGet(t, u, s.URL) // a pooled connection
		}
		req, _ := http.NewRequest(http.MethodPost, s.URL, bytes.NewReader(make([]byte, 32<<20)))
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatalf("reused %v: %v", reused, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "too large") {
			t.Fatalf("reused %v: %d %q", reused, resp.StatusCode, b)
		}
	}
}

func TestUpstreamHTTPS(t *testing.T) {
	var conns atomic.Int32
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure "+r.Proto)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.EnableHTTP2 = true // offered; the client must still speak HTTP/1.1
	s.StartTLS()
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	u := newTestUpstream(t, 5*time.Second)
	u.tlsConfig = &tls.Config{RootCAs: pool}
	for range 3 {
		resp, body := upGet(t, u, s.URL+"/x")
		if body != "secure HTTP/1.1" || resp.TLS == nil || resp.TLS.NegotiatedProtocol == "h2" {
			t.Fatalf("%q, TLS %v", body, resp.TLS != nil)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d TLS connections, want 1", n)
	}
	// Without the server's root the handshake fails, as a dial error.
	plain := newTestUpstream(t, 5*time.Second)
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	if _, err := plain.RoundTrip(req); err == nil || !isDialError(err) {
		t.Fatalf("unknown certificate: %v (dial error %v)", err, isDialError(err))
	}
}

func TestUpstreamNoBodyResponses(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "10")
			if r.Method != http.MethodHead {
				io.WriteString(w, "0123456789")
			}
		}
	})
	u := newTestUpstream(t, 5*time.Second)
	for _, c := range []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/204"}, {"GET", "/304"}, {"HEAD", "/"}, {"GET", "/"}} {
		req, _ := http.NewRequest(c.method, s.URL+c.path, nil)
		resp, err := u.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := ""
		if c.method == "GET" && c.path == "/" {
			want = "0123456789"
		}
		if err != nil || string(b) != want {
			t.Fatalf("%s %s: %q, %v", c.method, c.path, b, err)
		}
		if c.method == "HEAD" && resp.ContentLength != 10 {
			t.Fatalf("HEAD content length %d", resp.ContentLength)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestUpstreamSkips1xx(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusProcessing)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	u := newTestUpstream(t, 5*time.Second)
	resp, body := upGet(t, u, s.URL)
	if resp.StatusCode != 200 || body != "final" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	// Also a raw 100 Continue before the answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}()
	resp, body = upGet(t, u, "http://"+ln.Addr().String())
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestUpstreamIdleExpiry(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") })
	u := newTestUpstream(t, 5*time.Second)
	u.idleTimeout = 50 * time.Millisecond
	upGet(t, u, s.URL)
	upGet(t, u, s.URL)
	time.Sleep(80 * time.Millisecond)
	upGet(t, u, s.URL)
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (one expired)", n)
	}
	// The bound on idle connections per node.
	u.maxIdle = 2
	var wg sync.WaitGroup
	var resps []*http.Response
	var mu sync.Mutex
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
			resp, err := u.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			resps = append(resps, resp)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, r := range resps {
		io.ReadAll(r.Body)
		r.Body.Close()
	}
	if n := u.idleCount(); n > 2 {
		t.Fatalf("%d idle connections, bound 2", n)
	}
}

func TestUpstreamConcurrent(t *testing.T) {
	s := newUpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/stream":
			for i := range 5 {
				fmt.Fprintf(w, "%s-%d\n", b, i)
				w.(http.Flusher).Flush()
			}
		default:
			w.Write(b)
		}
	})
	u := newTestUpstream(t, 5*time.Second)
	var wg sync.WaitGroup
	for g := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := fmt.Sprintf("g%d-%d", g, i)
				path := "/echo"
				want := id
				if i%2 == 0 {
					path = "/stream"
					want = ""
					for j := range 5 {
						want += fmt.Sprintf("%s-%d\n", id, j)
					}
				}
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+path, strings.NewReader(id))
				resp, err := u.RoundTrip(req)
				if err != nil {
					t.Error(err)
					cancel()
					return
				}
				if i%5 == 4 { // some are abandoned half-read
					resp.Body.Read(make([]byte, 2))
					resp.Body.Close()
					cancel()
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err != nil || string(b) != want {
					t.Errorf("%s: %q, %v", id, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connections for 2000 requests", s.conns.Load())
}

func TestNewTransportIsUpstream(t *testing.T) {
	rt := NewTransport(time.Second, time.Minute)
	if _, ok := rt.(*upstream); !ok {
		t.Fatalf("NewTransport returned %T", rt)
	}
	if _, ok := rt.(interface{ CloseIdleConnections() }); !ok {
		t.Fatal("no CloseIdleConnections")
	}
}

// resetOnce is a connection that fails one read with a reset and would
// then report a clean end, as a reset socket does when read again.
type resetOnce struct {
	net.Conn
	reads int
}

func (c *resetOnce) Read([]byte) (int, error) {
	c.reads++
	if c.reads == 1 {
		return 0, syscall.ECONNRESET
	}
	return 0, io.EOF
}

func (c *resetOnce) Close() error { return nil }

// waitData peeks, and bufio hands a read error out only once: the Read
// after it must still see the reset, not a clean end of a close-delimited
// body (a silent truncation).
func TestUpstreamReadErrorIsSticky(t *testing.T) {
	conn := &resetOnce{}
	c := &upConn{conn: conn, raw: conn, limit: -1}
	c.br = bufio.NewReaderSize(c, upReadBufferSize)
	b := &upBody{rc: io.NopCloser(c.br), c: c, t: newUpstream(time.Second, 0), ctx: context.Background(), stop: func() bool { return true }}
	b.waitData()
	if _, err := b.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a failed wait = %v, want the reset", err)
	}
}

// endStreams may run while a stream's relay is between two chunks, before
// the stream waits on its node again: that wait must end at once too, not
// when the node next speaks.
func TestUpstreamEndStreamsBeforeTheWait(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := newUpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	u := newTestUpstream(t, 0)
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := resp.Body.(*upBody)
	b.waitData()
	first := make([]byte, 64)
	if n, err := b.Read(first); err != nil || string(first[:n]) != "first\n" {
		t.Fatalf("first chunk %q, %v", first[:n], err)
	}

	u.endStreams() // the relay is writing the first chunk to its client
	done := make(chan error, 1)
	go func() {
		b.waitData()
		_, err := b.Read(make([]byte, 64))
		done <- err
	}()
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Fatalf("Read after endStreams = %v, want the wake-up's timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stream that waited after endStreams was never woken")
	}
}
