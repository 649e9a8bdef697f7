// Package fakeollama is a wire-faithful stand-in for an Ollama server (v0.17.4
// by default), used by the tests and load benchmarks of the proxy.
//
// It answers the native /api/* endpoints and the OpenAI-compatible /v1/*
// endpoints with the same shapes, content types, status codes and error
// wordings as a real Ollama (see /work/shared/reference/ollama-wire.md), streams
// NDJSON and SSE one flushed line per token, and keeps a small in-memory model
// store so pull, create, copy and delete show up in /api/tags.
//
// On top of that it offers what a real server cannot: faults switchable at run
// time (busy 503s, cut connections, runner crashes, slow liveness probes, a
// node that dies and comes back on the same address), a gate that releases
// tokens one by one, and counters a test can assert on.
//
// The request path is kept cheap (no logging, no goroutines beyond the
// handler's, one reused buffer per stream) because the same server backs
// benchmarks with thousands of concurrent streams.
package fakeollama

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// Options configure a fake server. The zero value is usable: no models, five
// tokens per answer, no delay.
type Options struct {
	// Models are the installed models, spelled as /api/tags lists them
	// ("llama3:latest"); a missing tag is shown as ":latest". Names containing
	// "embed" are embedding-only models (chat and generate answer 400 "does
	// not support chat/generate", as Ollama does).
	Models []string
	// Loaded is what /api/ps lists, in order. Duplicates are kept, as a real
	// /api/ps can list a name twice. Generations do not change it.
	Loaded []string
	// Version is reported by /api/version. Default "0.17.4".
	Version string
	// SignedOut makes POST /api/me answer as a node not signed in to
	// ollama.com: 401 with a sign-in link for the node.
	SignedOut bool
	// Tokens is the number of tokens in every generated answer. Default 5.
	// A smaller options.num_predict (or max_tokens on /v1) shortens the
	// answer, which then ends with done_reason "length".
	Tokens int
	// TokenDelay is slept before each generated token (so an answer takes
	// about Tokens*TokenDelay). Can be changed later with SetTokenDelay.
	TokenDelay time.Duration
	// EmbeddingDims is the length of embedding vectors. Default 8.
	EmbeddingDims int
	// CheckHost emulates Ollama's Host-header check for loopback listeners
	// (ollama-wire.md §3.4.1): 403 with an empty body unless Host is
	// localhost, this machine's hostname, a loopback/private/unspecified or
	// local-interface IP, or ends in .localhost, .local or .internal.
	CheckHost bool
	// CheckOrigin emulates Ollama's CORS check with OLLAMA_ORIGINS unset
	// (ollama-wire.md §3.4.2): a request whose Origin is not a local page
	// (localhost, 127.0.0.1, 0.0.0.0) or a desktop app gets 403 with an
	// empty body.
	CheckOrigin bool
	// Gate, when non-nil, must deliver one value per generated token: before
	// producing each token the handler waits to receive from Gate (or for the
	// client to go away). Final lines are not gated. It lets a test check that
	// token N reached the client before the fake produced token N+1.
	//
	// As in Ollama, the status line and headers of a stream go out with the
	// first token, so an HTTP client's Do returns only after the first value
	// was received: give Gate a buffer and put the first value in before
	// sending the request.
	Gate chan struct{}
	// Control adds the /_fake/* control endpoints (see control.go) for
	// processes that drive the fake over HTTP, such as Node.js tests. Off by
	// default because a real Ollama answers 404 there.
	Control bool
}

// Server is a fake Ollama. It is an http.Handler; Listen or Start also serve
// it on a TCP address that survives Stop/Restart.
type Server struct {
	opts     Options
	hostname string

	tokenDelay    atomic.Int64 // time.Duration
	busy          atomic.Bool
	dropAfter     atomic.Int64 // < 0: off
	errorAfter    atomic.Int64 // < 0: off
	livenessDelay atomic.Int64 // time.Duration

	active    atomic.Int64
	cancelled atomic.Int64

	statsMu sync.Mutex
	stats   map[string]*pathStats

	mu     sync.Mutex // guards models, loaded, blobs
	models []modelEntry
	loaded []string
	blobs  map[string]bool

	lnMu   sync.Mutex
	addr   string // bound address, fixed by the first Listen
	srv    *http.Server
	served chan struct{} // closed when the current srv.Serve returns
	closed bool
}

type pathStats struct {
	count  int
	header http.Header
	body   []byte
	host   string
}

// New returns a fake server that is not listening yet.
func New(opts Options) *Server {
	if opts.Version == "" {
		opts.Version = "0.17.4"
	}
	if opts.Tokens <= 0 {
		opts.Tokens = 5
	}
	if opts.EmbeddingDims <= 0 {
		opts.EmbeddingDims = 8
	}
	s := &Server{
		opts:  opts,
		stats: make(map[string]*pathStats),
		blobs: make(map[string]bool),
	}
	s.hostname, _ = os.Hostname()
	s.tokenDelay.Store(int64(opts.TokenDelay))
	s.dropAfter.Store(-1)
	s.errorAfter.Store(-1)

	// Most recently modified first, as /api/tags sorts.
	base := time.Now().UTC().Add(-time.Hour)
	for i, name := range opts.Models {
		s.models = append(s.models, newModelEntry(name, base.Add(-time.Duration(i)*time.Minute)))
	}
	s.loaded = append([]string(nil), opts.Loaded...)
	return s
}

// Start starts a fake on 127.0.0.1 with a random port and stops it when the
// test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := New(opts)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		tb.Fatalf("fakeollama: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Listen binds addr (host:port, port 0 picks one) and serves in the
// background. The bound address is kept for Restart.
func (s *Server) Listen(addr string) error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return errors.New("fakeollama: server closed")
	}
	if s.srv != nil {
		return errors.New("fakeollama: already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return nil
}

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	done := make(chan struct{})
	s.srv, s.served = srv, done
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns ErrServerClosed on Stop
	}()
}

// Addr is the bound host:port ("" before Listen).
func (s *Server) Addr() string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	return s.addr
}

// URL is the base URL, e.g. "http://127.0.0.1:41234". It stays the same
// across Stop and Restart. An unspecified listen host is shown as 127.0.0.1.
func (s *Server) URL() string {
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return ""
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Stop makes the node die: the listener is closed (new connections are
// refused) and every open connection, including running streams, is cut.
// Restart brings it back on the same address.
func (s *Server) Stop() {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.srv == nil {
		return
	}
	_ = s.srv.Close()
	<-s.served
	s.srv, s.served = nil, nil
}

// Restart listens again on the address of the first Listen, after Stop. It
// is a no-op if the server is running.
func (s *Server) Restart() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return errors.New("fakeollama: server closed")
	}
	if s.addr == "" {
		return errors.New("fakeollama: Restart before Listen")
	}
	if s.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.serve(ln)
	return nil
}

// Close stops the server for good.
func (s *Server) Close() {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.stopLocked()
	s.closed = true
}

// ---- faults ----

// SetBusy makes every inference request (chat, generate, embed, embeddings
// and their /v1 forms) answer 503 "server busy, please try again.  maximum
// pending requests exceeded", as Ollama does when its queue is full. Unknown
// models still get their 404 first, as in Ollama.
func (s *Server) SetBusy(on bool) { s.busy.Store(on) }

// SetDropAfter makes generations cut the connection (no final line, no
// chunked terminator) after n tokens were flushed, like a killed `ollama
// serve`; n >= Tokens cuts just before the final line. n < 0 turns it off.
// With n = 0 the connection closes before any response byte. Applies to
// chat, generate, /v1/chat/completions and /v1/completions.
func (s *Server) SetDropAfter(n int) { s.dropAfter.Store(int64(n)) }

// SetErrorAfter makes generations fail like a crashed runner after n tokens:
// status 200, n lines, then {"error":"an error was encountered while running
// the model: unexpected EOF"} and a clean end (on /v1 SSE: an empty chunk with
// "model":"" and no [DONE]). With n = 0, or with stream:false, the answer is a
// 500 with that error instead, as Ollama does when nothing was sent yet.
// n < 0 turns it off.
func (s *Server) SetErrorAfter(n int) { s.errorAfter.Store(int64(n)) }

// SetLivenessDelay makes GET / and HEAD / sleep d before answering.
func (s *Server) SetLivenessDelay(d time.Duration) { s.livenessDelay.Store(int64(d)) }

// SetTokenDelay changes the pause before each generated token.
func (s *Server) SetTokenDelay(d time.Duration) { s.tokenDelay.Store(int64(d)) }

// ClearFaults turns off busy, drop, error and liveness delay (TokenDelay is
// left as it is).
func (s *Server) ClearFaults() {
	s.busy.Store(false)
	s.dropAfter.Store(-1)
	s.errorAfter.Store(-1)
	s.livenessDelay.Store(0)
}

// ---- observability ----

// Requests is how many requests arrived for the exact URL path (any method,
// including ones rejected by the Host check or answered 404).
func (s *Server) Requests(path string) int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if st := s.stats[path]; st != nil {
		return st.count
	}
	return 0
}

// TotalRequests is the number of requests on all paths.
func (s *Server) TotalRequests() int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	n := 0
	for _, st := range s.stats {
		n += st.count
	}
	return n
}

// LastRequest returns the headers, body and Host of the last request for the
// exact URL path, or nils if there was none. Blob uploads are not kept (the
// body is nil).
func (s *Server) LastRequest(path string) (http.Header, []byte, string) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.stats[path]
	if st == nil {
		return nil, nil, ""
	}
	return st.header.Clone(), bytes.Clone(st.body), st.host
}

// ResetStats forgets request counts and last requests, and zeroes Cancelled.
func (s *Server) ResetStats() {
	s.statsMu.Lock()
	clear(s.stats)
	s.statsMu.Unlock()
	s.cancelled.Store(0)
}

// Active is the number of generations (chat, generate and their /v1 forms)
// running right now.
func (s *Server) Active() int { return int(s.active.Load()) }

// Cancelled is the number of generations that stopped because the client
// went away (its context was done or a write failed) before the answer was
// complete.
func (s *Server) Cancelled() int { return int(s.cancelled.Load()) }

func (s *Server) record(r *http.Request, body []byte) {
	s.statsMu.Lock()
	st := s.stats[r.URL.Path]
	if st == nil {
		st = &pathStats{}
		s.stats[r.URL.Path] = st
	}
	st.count++
	st.header = r.Header // not modified after this point; cloned on read
	st.body = body
	st.host = r.Host
	s.statsMu.Unlock()
}

// ---- routing ----

type handlerFunc func(s *Server, w http.ResponseWriter, r *http.Request, body []byte)

type route struct {
	methods []string // in gin's tree order: HEAD, GET, POST, DELETE
	h       handlerFunc
}

var routes = map[string]route{
	"/":                      {[]string{http.MethodHead, http.MethodGet}, (*Server).handleRoot},
	"/api/version":           {[]string{http.MethodHead, http.MethodGet}, (*Server).handleVersion},
	"/api/tags":              {[]string{http.MethodHead, http.MethodGet}, (*Server).handleTags},
	"/api/status":            {[]string{http.MethodGet}, (*Server).handleStatus},
	"/api/me":                {[]string{http.MethodPost}, (*Server).handleMe},
	"/api/ps":                {[]string{http.MethodGet}, (*Server).handlePs},
	"/api/show":              {[]string{http.MethodPost}, (*Server).handleShow},
	"/api/chat":              {[]string{http.MethodPost}, (*Server).handleChat},
	"/api/generate":          {[]string{http.MethodPost}, (*Server).handleGenerate},
	"/api/embed":             {[]string{http.MethodPost}, (*Server).handleEmbed},
	"/api/embeddings":        {[]string{http.MethodPost}, (*Server).handleEmbeddings},
	"/api/pull":              {[]string{http.MethodPost}, (*Server).handlePull},
	"/api/push":              {[]string{http.MethodPost}, (*Server).handlePush},
	"/api/create":            {[]string{http.MethodPost}, (*Server).handleCreate},
	"/api/copy":              {[]string{http.MethodPost}, (*Server).handleCopy},
	"/api/delete":            {[]string{http.MethodDelete}, (*Server).handleDelete},
	"/v1/models":             {[]string{http.MethodGet}, (*Server).handleOAIModels},
	"/v1/chat/completions":   {[]string{http.MethodPost}, (*Server).handleOAIChat},
	"/v1/completions":        {[]string{http.MethodPost}, (*Server).handleOAICompletions},
	"/v1/embeddings":         {[]string{http.MethodPost}, (*Server).handleOAIEmbeddings},
	"/v1/images/generations": {[]string{http.MethodPost}, (*Server).handleOAIImageGenerations},
	"/v1/images/edits":       {[]string{http.MethodPost}, (*Server).handleOAIImageEdits},
}

var (
	blobRoute     = route{[]string{http.MethodHead, http.MethodPost}, (*Server).handleBlob}
	oaiModelRoute = route{[]string{http.MethodGet}, (*Server).handleOAIModel}
)

func lookupRoute(path string) (route, bool) {
	if rt, ok := routes[path]; ok {
		return rt, true
	}
	// gin's ":digest" matches one non-empty segment.
	if d, ok := strings.CutPrefix(path, "/api/blobs/"); ok && d != "" && !strings.Contains(d, "/") {
		return blobRoute, true
	}
	// Ollama's route is /v1/models/:model (one segment); namespaced names
	// such as hf.co/user/model are accepted here too.
	if m, ok := strings.CutPrefix(path, "/v1/models/"); ok && m != "" && !strings.HasSuffix(m, "/") {
		return oaiModelRoute, true
	}
	return route{}, false
}

func (rt route) allows(method string) bool {
	for _, m := range rt.methods {
		if m == method {
			return true
		}
	}
	return false
}

// ServeHTTP records the request, applies the Host check and dispatches like
// Ollama's gin router (405 with Allow for a wrong method, trailing-slash
// redirects, text 404 otherwise).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Control && strings.HasPrefix(r.URL.Path, controlPrefix) {
		s.handleControl(w, r)
		return
	}

	rt, found := lookupRoute(r.URL.Path)

	var body []byte
	if r.ContentLength != 0 && !isBlobUpload(r) { // blob bodies are hashed as they stream in
		var err error
		if body, err = readBody(r); err != nil {
			return // client went away while sending
		}
	}
	s.record(r, body)

	if origin := r.Header.Get("Origin"); s.opts.CheckOrigin && origin != "" && !ollamaOriginAllowed(origin) {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if s.opts.CheckHost {
		ok, byName := s.hostAllowed(r.Host)
		if !ok {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusForbidden)
			return
		}
		// Quirk of allowedHostsMiddleware: preflights are answered for
		// hosts allowed by name (not by IP).
		if byName && r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}

	if found && rt.allows(r.Method) {
		rt.h(s, w, r, body)
		return
	}
	if !found && r.URL.Path != "/" && strings.HasSuffix(r.URL.Path, "/") && r.Method != http.MethodConnect {
		if rt2, ok := lookupRoute(strings.TrimSuffix(r.URL.Path, "/")); ok && rt2.allows(r.Method) {
			code := http.StatusMovedPermanently
			if r.Method != http.MethodGet {
				code = http.StatusTemporaryRedirect
			}
			u := *r.URL
			u.Path = strings.TrimSuffix(r.URL.Path, "/")
			http.Redirect(w, r, u.String(), code)
			return
		}
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/plain"}
	if found {
		h.Set("Allow", strings.Join(rt.methods, ", "))
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, "405 method not allowed")
		return
	}
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, "404 page not found")
}

func isBlobUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/blobs/")
}

func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n < 64<<20 {
		b := make([]byte, n)
		_, err := io.ReadFull(r.Body, b)
		return b, err
	}
	return io.ReadAll(r.Body)
}

// hostAllowed mirrors allowedHostsMiddleware for a loopback listener.
// ollamaOriginAllowed is Ollama's default origin list: http and https on
// localhost, 127.0.0.1 and 0.0.0.0 (any port), and the app, file, tauri,
// vscode-webview and vscode-file schemes.
func ollamaOriginAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "http", "https":
		switch u.Hostname() {
		case "localhost", "127.0.0.1", "0.0.0.0":
			return true
		}
	case "app", "file", "tauri", "vscode-webview", "vscode-file":
		return true
	}
	return false
}

func (s *Server) hostAllowed(hostport string) (ok, byName bool) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || isLocalIP(ip) {
			return true, false
		}
	}
	host = strings.ToLower(host)
	if host == "" || host == "localhost" || (s.hostname != "" && host == strings.ToLower(s.hostname)) {
		return true, true
	}
	for _, tld := range []string{".localhost", ".local", ".internal"} {
		if strings.HasSuffix(host, tld) {
			return true, true
		}
	}
	return false, false
}

func isLocalIP(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip.Unmap() {
			return true
		}
	}
	return false
}

// ---- response helpers ----

const (
	ctJSON     = "application/json; charset=utf-8" // gin c.JSON
	ctJSONBare = "application/json"                // waitForStream, streamResponse errors, /v1
	ctNDJSON   = "application/x-ndjson"
	ctSSE      = "text/event-stream"
)

func writeBytes(w http.ResponseWriter, status int, contentType string, b []byte) {
	w.Header()["Content-Type"] = []string{contentType}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeJSON answers like gin's c.JSON: json.Marshal, no trailing newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBytes(w, status, ctJSON, b)
}

// writeError answers {"error":msg} like gin's c.JSON.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeBytes(w, status, ctJSON, appendErrorJSON(nil, msg))
}

// decode parses the body like gin's ShouldBindJSON and answers Ollama's 400
// when it fails.
func decode(w http.ResponseWriter, body []byte, v any) bool {
	err := json.NewDecoder(bytes.NewReader(body)).Decode(v)
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "missing request body")
	default:
		writeError(w, http.StatusBadRequest, err.Error())
	}
	return false
}

// Error strings of a real Ollama.
const (
	msgBusy        = "server busy, please try again.  maximum pending requests exceeded"
	msgRunnerCrash = "an error was encountered while running the model: unexpected EOF"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request, _ []byte) {
	if d := time.Duration(s.livenessDelay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	writeBytes(w, http.StatusOK, "text/plain; charset=utf-8", []byte("Ollama is running"))
}

// handleStatus is Ollama's cloud status, with OLLAMA_NO_CLOUD unset.
func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request, _ []byte) {
	writeJSON(w, http.StatusOK, api.StatusResponse{Cloud: api.CloudStatus{Disabled: false, Source: "none"}})
}

// handleMe answers as a node signed in to ollama.com as a user named after
// the fake's host name, or, SignedOut, as Ollama 0.17's WhoamiHandler
// answers for a node that is not.
func (s *Server) handleMe(w http.ResponseWriter, _ *http.Request, _ []byte) {
	if s.opts.SignedOut {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized",
			"signin_url": "https://ollama.com/connect?name=" + url.QueryEscape(s.hostname) + "&key=fake-public-key"})
		return
	}
	writeJSON(w, http.StatusOK, api.UserResponse{Name: "fake-" + s.hostname, Email: "fake@example.com"})
}

func (s *Server) handleVersion(w http.ResponseWriter, _ *http.Request, _ []byte) {
	writeJSON(w, http.StatusOK, struct {
		Version string `json:"version"`
	}{s.opts.Version})
}
