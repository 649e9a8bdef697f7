// Package app is Aivonx's one http.Handler: the Ollama- and OpenAI-compatible
// proxy plus its operational routes. The same handler runs under net/http
// (`aivonx serve`) and under AWS Lambda.
//
// The life of a proxied request:
//
//	access log → read body (bounded) → model → candidates (fleet snapshot,
//	cached ~1 s) → strategy narrows → InFlight.Acquire picks the least loaded
//	and takes its slot → forward → relay the response as it streams →
//	release the slot
//
// A node that cannot be reached, or answers 503 busy, before any byte went to
// the client is skipped and the next candidate takes the same (buffered)
// request. Once bytes were sent nothing is retried: a stream that breaks ends
// with an error line the client can see.
package app

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

// Config holds the handler's settings. Zero values mean the documented
// defaults.
type Config struct {
	// Version is the proxy's own version, sent in the X-Aivonx-Version
	// header and in /api/proxy/state.
	Version string
	// Mode names the deployment ("embedded", "shared", "lambda") for
	// /api/health. Zero means "embedded".
	Mode string
	// MaxBodyBytes caps request bodies (413 above it). Zero means 64 MiB:
	// base64 images are large.
	MaxBodyBytes int64
	// MaxHeaderBytes caps the request line and headers (431 in the route's
	// error shape above it). Zero means 64 KiB. The HTTP server in front
	// must accept more (ServerHeaderBytes), or it answers first, in plain
	// text.
	MaxHeaderBytes int
	// FirstByteTimeout bounds the wait for a streamed answer's first token
	// (its response head). It is long because a node may have to load a
	// model first. An answer that comes whole (stream false, embeddings)
	// has no such bound: it is sent only once done. Zero means 5m.
	FirstByteTimeout time.Duration
	// BodyIdleTimeout bounds each pause while a request body arrives (as
	// nginx's client_body_timeout): a body that stalls longer ends its
	// request. The server's ReadHeaderTimeout covers only the head. Zero
	// means 60s.
	BodyIdleTimeout time.Duration
	// DialTimeout bounds connecting to a node. Zero means 5s.
	DialTimeout time.Duration
	// StatusMaxAge is how old a node status may be and still count as
	// fresh. Zero means 30s (three health intervals).
	StatusMaxAge time.Duration
	// RefreshEvery is how long the handler reuses the fleet (nodes,
	// settings, statuses) it read last; a change in the store is seen within
	// two periods. Zero means 500ms, so changes reach every replica within a
	// second.
	RefreshEvery time.Duration
	// MarkFor is how long a passive "unreachable" mark excludes a node when
	// no newer health check has passed. Zero means 30s.
	MarkFor time.Duration
	// Transport forwards requests to nodes. Nil means a tuned transport
	// shared by all requests.
	Transport http.RoundTripper
	// Dependencies are checked by /api/health (Postgres, Redis...).
	Dependencies []Dependency
	// Auth configures logins, API keys and CORS (auth.go).
	Auth AuthConfig
	// Manage configures the management API (manage.go).
	Manage ManageConfig
	// Observe configures logs and metrics (observe.go).
	Observe ObserveConfig
}

// ServerHeaderBytes is what the HTTP server should accept for a request's
// head (http.Server.MaxHeaderBytes) so that the handler, not the server,
// answers heads above Config.MaxHeaderBytes: four times the handler's cap.
// Heads larger still are answered by net/http itself, in plain text.
func ServerHeaderBytes(c Config) int {
	c.setDefaults()
	return 4 * c.MaxHeaderBytes
}

// Dependency is something /api/health reports on.
type Dependency struct {
	Name  string
	Check func(ctx context.Context) error
}

func (c *Config) setDefaults() {
	c.Mode = cmp.Or(c.Mode, "embedded")
	c.Version = cmp.Or(c.Version, "dev")
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, 64<<20)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, 64<<10)
	c.FirstByteTimeout = cmp.Or(c.FirstByteTimeout, 5*time.Minute)
	c.BodyIdleTimeout = cmp.Or(c.BodyIdleTimeout, 60*time.Second)
	c.DialTimeout = cmp.Or(c.DialTimeout, 5*time.Second)
	c.StatusMaxAge = cmp.Or(c.StatusMaxAge, 30*time.Second)
	c.RefreshEvery = cmp.Or(c.RefreshEvery, 500*time.Millisecond)
	c.MarkFor = cmp.Or(c.MarkFor, 30*time.Second)
}

func (c *Config) validate() error {
	switch {
	case c.MaxBodyBytes < 0, c.MaxHeaderBytes < 0:
		return errors.New("MaxBodyBytes and MaxHeaderBytes must not be negative")
	case c.FirstByteTimeout < 0, c.BodyIdleTimeout < 0, c.DialTimeout < 0, c.StatusMaxAge < 0, c.RefreshEvery < 0, c.MarkFor < 0:
		return errors.New("durations must not be negative")
	}
	return nil
}

// Deps are the handler's collaborators. Fleet, Statuses, InFlight and Log
// are required; New reports a missing one. The others switch features on:
// without Admin the management API answers 501, without Accounts there are
// no logins or API keys, and so on. A struct rather than a long argument
// list, because the optional ones outnumber the required.
type Deps struct {
	Fleet    FleetStore
	Statuses StatusSource
	InFlight InFlight
	Log      *slog.Logger

	// Admin writes nodes and settings (the management API).
	Admin AdminStore
	// Accounts keeps users and API keys.
	Accounts AccountStore
	// Refresher re-probes a node at once, e.g. after a pull, so a new model
	// is routable without waiting for the next pass.
	Refresher NodeRefresher
	// Logs reads the JSON log files for /api/logs.
	Logs LogReader
	// Requests keeps the request log of /api/requests (requestlog.go).
	Requests RequestLog
	// Revocations tells the other replicas when an API key is revoked, so
	// that they drop it from their caches at once (see ForgetKey). Nil
	// means they notice within Auth.KeyCacheTTL.
	Revocations KeyRevocations
	// Limits keeps API key and login rate limits where every replica
	// spends the same budget (Redis). Nil, or failing, means per-process
	// limits.
	Limits RateLimiter
}

// Handler is the proxy. Build it with [New]; it is safe for concurrent use.
type Handler struct {
	cfg       Config
	store     FleetStore
	statuses  StatusSource
	inflight  InFlight
	log       *slog.Logger
	deps      Deps
	transport http.RoundTripper
	mux       *http.ServeMux
	router    http.Handler // mux behind the CORS answer
	view      viewCache
	marks     sync.Map // node ID → time.Time of a passive "unreachable" mark
	// rechecks is, per node, when recheck last probed it and whether a
	// probe is due, so that a burst of failures probes a node once.
	recheckMu sync.Mutex
	rechecks  map[int64]recheckState
	// refreshTurn lets one refreshNode probe at a time (see there).
	refreshTurn chan struct{}
	bufs        sync.Pool
	now         func() time.Time
	patterns    []string // every route, see Patterns
	ext         extensions
	ending      atomic.Bool // EndStreams was called
	// ended is cancelled by EndStreams, for the work that a request runs
	// on its own rather than through the relay (the merged pulls).
	ended    context.Context
	endWaits context.CancelFunc
}

// New builds the handler. It does no I/O; the first request, or Warm,
// reads the fleet.
func New(cfg Config, deps Deps) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Fleet == nil || deps.Statuses == nil || deps.InFlight == nil || deps.Log == nil {
		return nil, errors.New("app.New: Fleet, Statuses, InFlight and Log are required")
	}
	h := &Handler{
		cfg:       cfg,
		store:     deps.Fleet,
		statuses:  deps.Statuses,
		inflight:  deps.InFlight,
		log:       deps.Log,
		deps:      deps,
		transport: cfg.Transport,
		now:       time.Now,

		refreshTurn: make(chan struct{}, 1),
	}
	h.ended, h.endWaits = context.WithCancel(context.Background())
	if h.transport == nil {
		h.transport = NewTransport(cfg.DialTimeout, cfg.FirstByteTimeout)
	}
	// Relay buffers are held for a whole stream; tokens are small.
	h.bufs.New = func() any { b := make([]byte, 4<<10); return &b }
	h.view.load = h.loadView
	h.view.every = cfg.RefreshEvery
	if err := h.initExtensions(); err != nil {
		return nil, err
	}
	h.mux = h.routes()
	h.router = h.withCORS(h.mux)
	return h, nil
}

// Warm reads the fleet now and reports what could not be read. A replica
// that reads it at start routes from memory through a later outage of its
// store even before its first request: else it would meet the outage with
// nothing to route by. The first request still reads the fleet again, as
// it would have without Warm: statuses may have changed since (a worker's
// first pass).
func (h *Handler) Warm(ctx context.Context) error {
	v := h.view.get(ctx, h.now())
	h.view.invalidate()
	return errors.Join(v.storeErr, v.statusErr)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.serveLogged(w, r)
}

// NewTransport returns the transport used to reach nodes: a lean HTTP/1.1
// client (upstream.go) that runs each exchange on the caller's goroutine,
// with kept-alive connections (many per node, since each stream holds one,
// 4 KiB of buffer each), a bounded dial, no compression (bodies pass
// through untouched), never a proxy, and a bound on the wait for response
// headers. It has a CloseIdleConnections method.
func NewTransport(dialTimeout, firstByteTimeout time.Duration) http.RoundTripper {
	return newUpstream(dialTimeout, firstByteTimeout)
}

// routing returns the inputs of candidate selection for a request now.
func (h *Handler) routing() fleet.Routing {
	now := h.now()
	return fleet.Routing{Now: now, MaxAge: h.cfg.StatusMaxAge, Excluded: func(id int64, st fleet.Status) bool {
		v, ok := h.marks.Load(id)
		if !ok {
			return false
		}
		at := v.(time.Time)
		return now.Sub(at) < h.cfg.MarkFor && fleet.MarkHolds(at, st)
	}}
}

// markUnreachable is the passive health check: after a failed connection the
// node is avoided at once by this process and, through the status source,
// by every replica, until a newer health check passes. That check is made
// now (recheck), so that a node which only dropped a connection rejoins
// within a probe, not a pass, and a dead one has its failure counted.
func (h *Handler) markUnreachable(ctx context.Context, n fleet.Node, cause error) {
	h.marks.Store(n.ID, h.now())
	h.log.Warn("node unreachable", "node", n.Name, "node_id", n.ID, "url", n.BaseURL, "err", cause.Error())
	defer h.recheck(n.ID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
	defer cancel()
	if err := h.statuses.MarkUnreachable(ctx, n.ID, shortReason(cause)); err != nil {
		h.log.Debug("share unreachable mark", "node_id", n.ID, "err", err.Error())
	}
}

// recheckEvery is how often one node may be re-probed by recheck.
const recheckEvery = 2 * time.Second

// recheckState is one node's re-probes: the last one's start, and whether
// another is scheduled.
type recheckState struct {
	last    time.Time
	pending bool
}

// recheck re-probes a node in the background: after a passive check, after
// the node answered that it lacks a model its list still names, after a
// load or unload. At most one probe per node every recheckEvery: a call
// within that time is not dropped but deferred to its end (one pending per
// node), since a passive mark is lifted only by a probe that passes after
// it. Best effort, like refreshSoon.
func (h *Handler) recheck(id int64) {
	if h.deps.Refresher == nil {
		return
	}
	now := h.now()
	h.recheckMu.Lock()
	defer h.recheckMu.Unlock()
	if h.rechecks == nil {
		h.rechecks = map[int64]recheckState{}
	}
	st := h.rechecks[id]
	if st.pending {
		return
	}
	wait := recheckEvery - now.Sub(st.last)
	if st.last.IsZero() || wait <= 0 {
		h.rechecks[id] = recheckState{last: now}
		go h.refreshNode(context.Background(), id)
		return
	}
	h.rechecks[id] = recheckState{last: st.last, pending: true}
	time.AfterFunc(wait, func() {
		h.recheckMu.Lock()
		h.rechecks[id] = recheckState{last: h.now()}
		h.recheckMu.Unlock()
		h.refreshNode(context.Background(), id)
	})
}
