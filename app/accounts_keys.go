package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// keyView is a key as the API shows it: usage included, hash never.
type keyView struct {
	account.Key
	Revoked bool `json:"revoked"`
	// Plaintext is set only in the answer to the key's creation.
	Plaintext string `json:"key,omitempty"`
}

func (h *Handler) handleKeyList(w http.ResponseWriter, r *http.Request) {
	st := h.ext.auth
	keys, err := st.store.Keys(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	out := make([]keyView, len(keys))
	for i, k := range keys {
		// Add what was used but not yet written, so the list is current.
		st.usage.addPending(&k)
		out[i] = keyView{Key: k, Revoked: k.Revoked()}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleKeyCreate answers 201 with the key's plaintext, the only time it is
// ever shown.
func (h *Handler) handleKeyCreate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name     string `json:"name"`
		RPMLimit int    `json:"rpm_limit"`
	}
	if !h.readAccountJSON(w, r, &body) {
		return
	}
	plain, prefix, hash := account.NewKey()
	k, err := h.ext.auth.store.CreateKey(r.Context(), account.Key{Name: body.Name, Prefix: prefix, Hash: hash, RPMLimit: body.RPMLimit})
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	h.log.Info("api key created", "key_id", k.ID, "name", k.Name, "prefix", k.Prefix, "by", principalFrom(r.Context()).Username)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, keyView{Key: k, Plaintext: plain})
}

func (h *Handler) handleKeyRevoke(w http.ResponseWriter, r *http.Request) {
	id, ok := accountPathID(w, r, "key")
	if !ok {
		return
	}
	st := h.ext.auth
	if err := st.store.RevokeKey(r.Context(), id); err != nil {
		writeAccountErr(w, r, "key", id, err)
		return
	}
	st.keys.forget(id)
	h.log.Info("api key revoked", "key_id", id, "by", principalFrom(r.Context()).Username)
	if rv := h.deps.Revocations; rv != nil {
		if err := rv.Revoked(r.Context(), id); err != nil {
			h.log.Warn("other replicas were not told of the revoked key yet; telling them again until Redis answers",
				"key_id", id, "err", err.Error())
			go h.announceRevocation(rv, id)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// announceRevocation tells the other replicas of a revoked key once Redis
// answers again, trying every second for as long as their caches could hold
// it: one that heard nothing of the break would trust its cache meanwhile.
func (h *Handler) announceRevocation(rv KeyRevocations, id int64) {
	st := h.ext.auth
	for deadline := time.Now().Add(st.keys.ttl); time.Now().Before(deadline); {
		time.Sleep(revocationRetry)
		if err := rv.Revoked(context.Background(), id); err == nil {
			h.log.Info("other replicas told of the revoked key", "key_id", id)
			return
		}
	}
	h.log.Warn("other replicas were never told of the revoked key; their caches have expired it by now", "key_id", id)
}

// revocationRetry is how often a failed announcement is sent again.
const revocationRetry = time.Second

// KeyRevocations announces revoked API keys to every replica.
// ListeningSince reports whether this replica would hear such an
// announcement now, and since when it has without a break. A cached key is
// trusted only if it was cached since then: one revoked elsewhere during a
// break (Redis down or hanging) was not heard, and while the break lasts
// every key is checked against the store.
type KeyRevocations interface {
	Revoked(ctx context.Context, keyID int64) error
	ListeningSince() (since time.Time, ok bool)
}

// ForgetKey drops a revoked key from this replica's cache, so that its
// next use is checked against the store: the hook for revocations made
// elsewhere (another replica, the CLI).
func (h *Handler) ForgetKey(keyID int64) {
	if st := h.ext.auth; st != nil && st.keys != nil {
		st.keys.forget(keyID)
	}
}

// requireAPIKey guards an inference route. The key comes from
// "Authorization: Bearer <key>" (what OpenAI clients send) or X-API-Key.
//
// With Auth.RequireAPIKey, a request needs a valid, unrevoked key, or a
// logged-in user (access token or session cookie, for the web UI); else 401
// in the route's own error shape. Without it the route is open: a missing
// key, a dummy one ("ollama", "sk-…") or an unknown one is ignored, since
// OpenAI clients always send some key (the upstream answered them 401).
//
// A valid key is held to its requests-per-minute limit (429 with
// Retry-After) and its usage is recorded after the response ends, in the
// background.
func (h *Handler) requireAPIKey(d dialect, next http.Handler) http.Handler {
	st := h.ext.auth
	if st.store == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The key is checked apart, so that this frame, which stays on
		// the stack for the whole stream, is small (see tail).
		keyID, r, ok := h.admitKey(d, w, r)
		if !ok {
			return
		}
		next.ServeHTTP(w, r)
		if keyID != 0 {
			h.countKeyUse(r, keyID)
		}
	})
}

// adminIfUser refuses a logged-in user who is not an admin, where one
// stands in for an API key (requireAPIKey); keys and open deployments pass.
func (h *Handler) adminIfUser(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p := principalFrom(r.Context()); p != nil && p.Role != account.RoleAdmin {
			writeError(w, ollamaDialect, http.StatusForbidden, "admin role required")
			return
		}
		next(w, r)
	}
}

// admitKey decides whether a request may go on, and as whom. It returns
// the API key's id (0 for none) and the request to serve, which carries
// the logged-in user when one stands in for a key; when ok is false it has
// answered the request.
func (h *Handler) admitKey(d dialect, w http.ResponseWriter, r *http.Request) (keyID int64, _ *http.Request, ok bool) {
	st := h.ext.auth
	raw, key, found, err := h.lookupKey(r)
	if err != nil {
		if st.required {
			writeErr(w, r, d, err)
			return 0, r, false
		}
		h.log.Warn("api key lookup failed; serving the request without its key", "err", err.Error())
	}
	if !found {
		if !st.required {
			return 0, r, true
		}
		r, ok = h.admitUser(d, w, r, raw != "")
		return 0, r, ok
	}
	if wait := h.takeKeyLimit(r.Context(), key); wait > 0 {
		w.Header().Set("Retry-After", retryAfterSecs(wait))
		writeError(w, d, http.StatusTooManyRequests,
			"rate limit exceeded: this API key may make "+strconv.Itoa(key.RPMLimit)+" requests per minute")
		return 0, r, false
	}
	if a := accessFrom(r.Context()); a != nil {
		a.who, a.apiKeyID = "key:"+key.Name, key.ID
	}
	return key.ID, r, true
}

// lookupKey finds the valid, unrevoked API key the request carries. raw is
// what it sent as a key, if anything looked like one.
func (h *Handler) lookupKey(r *http.Request) (raw string, _ account.Key, found bool, _ error) {
	// Either header may carry the key; some clients send both, one of
	// them a placeholder (x-api-key: dummy next to the real bearer).
	raw = r.Header.Get("X-API-Key")
	if bearer, _ := bearerToken(r); raw == "" || !account.LooksLikeKey(raw) && account.LooksLikeKey(bearer) {
		raw = bearer
	}
	if !account.LooksLikeKey(raw) {
		return raw, account.Key{}, false, nil
	}
	// A cached key may have been revoked unheard during a break in the
	// revocations.
	var since time.Time
	useCache := true
	if rv := h.deps.Revocations; rv != nil {
		since, useCache = rv.ListeningSince()
	}
	st := h.ext.auth
	key, found, err := st.keys.lookup(r.Context(), st.store, raw, st.now(), since, useCache)
	return raw, key, found, err
}

// requireKeyOrUser lets through a valid API key or a logged-in user: for
// /metrics with --metrics-private, where a scraper sends a fixed
// credential (Prometheus' authorization.credentials) and cannot refresh a
// login token.
func (h *Handler) requireKeyOrUser(next http.Handler) http.Handler {
	user := h.requireUser(next)
	if h.ext.auth.store == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, key, found, err := h.lookupKey(r)
		if err != nil {
			writeErr(w, r, ollamaDialect, err)
			return
		}
		if !found {
			user.ServeHTTP(w, r)
			return
		}
		if a := accessFrom(r.Context()); a != nil {
			a.who, a.apiKeyID = "key:"+key.Name, key.ID
		}
		next.ServeHTTP(w, r)
	})
}

// countKeyUse records a served request, and its tokens, against its key.
func (h *Handler) countKeyUse(r *http.Request, keyID int64) {
	st := h.ext.auth
	u := account.Usage{KeyID: keyID, Requests: 1, LastUsedAt: st.now()}
	if a := accessFrom(r.Context()); a != nil {
		u.PromptTokens, u.CompletionTokens = a.promptTok, a.evalTok
	}
	st.usage.add(u)
}

// admitUser lets a request without a valid key through when it comes from
// a logged-in user (an access token, or the web UI's session cookie).
func (h *Handler) admitUser(d dialect, w http.ResponseWriter, r *http.Request, sentKey bool) (*http.Request, bool) {
	p, err := h.authenticate(r)
	switch {
	case errors.Is(err, errUnauthenticated):
		msg := "API key required: send Authorization: Bearer <key> or X-API-Key"
		if sentKey {
			msg = "invalid or revoked API key"
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="aivonx"`)
		writeError(w, d, http.StatusUnauthorized, msg)
		return r, false
	case err != nil:
		writeErr(w, r, d, err)
		return r, false
	}
	if p.Cookie {
		if err := h.ext.auth.cop.Check(r); err != nil {
			writeError(w, d, http.StatusForbidden, "cross-origin request refused")
			return r, false
		}
	}
	if a := accessFrom(r.Context()); a != nil {
		a.who = "user:" + p.Username
	}
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p)), true
}

// keyCache keeps key lookups (found or not) in memory, so that the hot
// path makes no database round trip per request. Safe for concurrent use.
type keyCache struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[string]keyEntry // by hash
}

type keyEntry struct {
	key   account.Key
	found bool
	at    time.Time
}

const keyCacheMax = 10000

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{ttl: ttl, m: map[string]keyEntry{}}
}

// lookup returns the unrevoked key with this plaintext; found is false for
// an unknown or revoked key. A cached answer serves only when useCache is
// set and it was cached at or after since.
func (c *keyCache) lookup(ctx context.Context, store AccountStore, plaintext string, now, since time.Time, useCache bool) (account.Key, bool, error) {
	hash := account.HashKey(plaintext)
	c.mu.Lock()
	e, ok := c.m[hash]
	c.mu.Unlock()
	if ok && useCache && !e.at.Before(since) && now.Sub(e.at) < c.ttl {
		return e.key, e.found, nil
	}
	k, err := store.KeyByHash(ctx, hash)
	found := err == nil && !k.Revoked()
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return account.Key{}, false, err
	}
	c.mu.Lock()
	if len(c.m) >= keyCacheMax {
		clear(c.m) // a flood of made-up keys must not grow memory
	}
	c.m[hash] = keyEntry{key: k, found: found, at: now}
	c.mu.Unlock()
	return k, found, nil
}

// forget drops the key with this ID, so that its revocation takes effect
// at once in this process.
func (c *keyCache) forget(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.m {
		if e.key.ID == id {
			delete(c.m, h)
		}
	}
}

// keyLimiters holds the requests-per-minute bucket of each key, in this
// process: with several replicas each enforces the limit on its own.
type keyLimiters struct {
	mu sync.Mutex
	m  map[int64]*keyLimiter
}

type keyLimiter struct {
	rpm int
	lim *rate.Limiter
}

// takeKeyLimit spends one request of the key's per-minute budget, or
// returns how long to wait.
func (h *Handler) takeKeyLimit(ctx context.Context, k account.Key) time.Duration {
	if k.RPMLimit <= 0 {
		return 0
	}
	st := h.ext.auth
	return h.takeLimit(ctx, "key:"+strconv.FormatInt(k.ID, 10), k.RPMLimit, k.RPMLimit,
		func() time.Duration { return st.keyLimits.take(k, st.now()) })
}

// takeLimit spends one request of a named budget shared by every replica
// when a shared limiter is configured, else of this process's own (local).
// While the shared limiter fails each replica limits on its own (the
// deployment then allows up to the limit per replica), which is logged
// once each way.
func (h *Handler) takeLimit(ctx context.Context, name string, perMinute, burst int, local func() time.Duration) time.Duration {
	return h.sharedLimit(ctx, RateLimiter.Take, name, perMinute, burst, local)
}

// spendLimit is takeLimit that also returns a function that gives the
// request back to the budget it was taken from (the shared one, or the
// replica's own, local, under key), for a request that turns out not to
// count.
func (h *Handler) spendLimit(ctx context.Context, name string, perMinute, burst int, local *limiterSet, key string) (time.Duration, func()) {
	st := h.ext.auth
	refund := func() {
		if err := st.shared.Refund(context.WithoutCancel(ctx), name, perMinute, burst); err != nil {
			h.log.Warn("give back a rate limit", "name", name, "err", err.Error())
		}
	}
	wait := h.takeLimit(ctx, name, perMinute, burst, func() time.Duration {
		refund = func() { local.refund(key, st.now()) }
		return local.take(key, st.now())
	})
	return wait, refund
}

func (h *Handler) sharedLimit(ctx context.Context, op func(RateLimiter, context.Context, string, int, int) (time.Duration, error),
	name string, perMinute, burst int, local func() time.Duration) time.Duration {
	st := h.ext.auth
	if st.shared != nil {
		wait, err := op(st.shared, ctx, name, perMinute, burst)
		if err == nil {
			if st.sharedDown.Swap(false) {
				h.log.Info("shared rate limits available again")
			}
			return wait
		}
		if !st.sharedDown.Swap(true) {
			h.log.Warn("shared rate limits unavailable; each replica limits on its own until they are back", "err", err.Error())
		}
	}
	return local()
}

// take spends one request of the key's budget, or returns how long to wait.
func (l *keyLimiters) take(k account.Key, now time.Time) time.Duration {
	if k.RPMLimit <= 0 {
		return 0
	}
	l.mu.Lock()
	kl := l.m[k.ID]
	if kl == nil || kl.rpm != k.RPMLimit {
		kl = &keyLimiter{rpm: k.RPMLimit, lim: rate.NewLimiter(rate.Limit(float64(k.RPMLimit)/60), k.RPMLimit)}
		l.m[k.ID] = kl
	}
	l.mu.Unlock()
	res := kl.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d
	}
	return 0
}

// usageBatcher collects key usage and writes it in batches, at most one
// write per flush interval, off the request path. It runs no goroutine
// while idle: the first record arms a timer. Safe for concurrent use.
type usageBatcher struct {
	store AccountStore
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	pending map[int64]*account.Usage
	timer   *time.Timer
	writing sync.Mutex // one write at a time
}

// usageMaxPending bounds what is kept while the store cannot be written.
const usageMaxPending = 100000

func (b *usageBatcher) add(u account.Usage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.merge(u)
	if b.timer == nil {
		b.timer = time.AfterFunc(b.every, func() { b.flush(context.Background()) })
	}
}

func (b *usageBatcher) merge(u account.Usage) {
	p := b.pending[u.KeyID]
	if p == nil {
		if len(b.pending) >= usageMaxPending {
			return
		}
		b.pending[u.KeyID] = &u
		return
	}
	merged := account.MergeUsage([]account.Usage{*p, u})[0]
	*p = merged
}

// addPending adds to k the usage not yet written.
func (b *usageBatcher) addPending(k *account.Key) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[k.ID]
	if p == nil {
		return
	}
	k.Requests += p.Requests
	k.PromptTokens += p.PromptTokens
	k.CompletionTokens += p.CompletionTokens
	if k.LastUsedAt == nil || p.LastUsedAt.After(*k.LastUsedAt) {
		t := p.LastUsedAt
		k.LastUsedAt = &t
	}
}

// flush writes what is pending. On failure the usage is kept for the next
// flush, which a timer schedules.
func (b *usageBatcher) flush(ctx context.Context) error {
	b.writing.Lock()
	defer b.writing.Unlock()
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	batch := make([]account.Usage, 0, len(b.pending))
	for _, u := range b.pending {
		batch = append(batch, *u)
	}
	clear(b.pending)
	b.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := b.store.RecordUsage(ctx, batch)
	if err == nil {
		return nil
	}
	b.log.Warn("record api key usage; will retry", "keys", len(batch), "err", err.Error())
	b.mu.Lock()
	for _, u := range batch {
		b.merge(u)
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(max(b.every, 5*time.Second), func() { b.flush(context.Background()) })
	}
	b.mu.Unlock()
	return err
}

// FlushUsage writes the API key usage recorded so far and not yet written
// (it is otherwise written about once a second). Call it on shutdown, after
// the server stopped serving. It is a no-op without an account store.
func (h *Handler) FlushUsage(ctx context.Context) error {
	st := h.ext.auth
	if st == nil || st.store == nil {
		return nil
	}
	return st.usage.flush(ctx)
}
