package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// AuthConfig configures logins, API keys and CORS. Zero values mean the
// documented defaults.
type AuthConfig struct {
	// SecretKey signs the login tokens and session cookies (HS256). It is
	// required, at least 32 bytes, when Deps.Accounts is set.
	SecretKey []byte
	// RequireAPIKey makes every inference route require a valid API key (or
	// a logged-in user). When false, as in the upstream, those routes are
	// open and a missing, unknown or dummy key is ignored; a valid key is
	// still rate limited and its usage recorded. It needs Deps.Accounts.
	RequireAPIKey bool
	// CORSOrigins lists the origins whose browsers may call the API besides
	// those Ollama allows by default (local pages on any port and desktop
	// apps): "https://app.example.com", "https://*.example.com",
	// "chrome-extension://*", or "*" for any.
	CORSOrigins []string
	// TrustedProxies are the load balancers and reverse proxies in front of
	// the proxy. A request that comes from one of them is attributed to the
	// client its X-Forwarded-For names: in login rate limits, the access
	// log and the request history. Empty means the connection's address is
	// the client, and X-Forwarded-For, which any client can write, is not
	// believed.
	TrustedProxies []netip.Prefix
	// AccessTTL is the lifetime of an access token. Zero means 15m.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a refresh token. Zero means 7 days.
	RefreshTTL time.Duration
	// SessionTTL is the lifetime of a web UI session. Zero means 12h.
	SessionTTL time.Duration
	// KeyCacheTTL is how long an API key lookup is reused. A key revoked in
	// another process stops working after at most this long (at once in the
	// process that revoked it). Zero means 30s.
	KeyCacheTTL time.Duration
	// UsageFlushEvery is how often recorded API key usage is written to the
	// store. Zero means 1s.
	UsageFlushEvery time.Duration
	// Now is the clock of token expiry and rate limits. Nil means time.Now.
	Now func() time.Time
}

// AccountStore keeps users and API keys: the embedded store and Postgres
// implement it. Methods return errors matching fleet.ErrNotFound for a
// missing record, fleet.ErrConflict for a taken username, a
// *fleet.ValidationError for bad input, and fleet.ErrUnavailable when the
// database cannot be reached. Safe for concurrent use.
type AccountStore interface {
	// Users returns every user ordered by ID (never nil).
	Users(ctx context.Context) ([]account.User, error)
	// User returns the user with the given ID.
	User(ctx context.Context, id int64) (account.User, error)
	// UserByName returns the user with the given username, compared without
	// regard to case.
	UserByName(ctx context.Context, username string) (account.User, error)
	// CountUsers returns how many users exist.
	CountUsers(ctx context.Context) (int, error)
	// CreateUser validates and inserts a user (username, role, password
	// hash) and returns it with its ID and times.
	CreateUser(ctx context.Context, u account.User) (account.User, error)
	// UpdateUser replaces the role and password hash of user u.ID; the
	// username never changes. It refuses to demote the last admin with
	// account.ErrLastAdmin, checked in the write's own transaction.
	UpdateUser(ctx context.Context, u account.User) (account.User, error)
	// DeleteUser deletes a user, but not the last admin
	// (account.ErrLastAdmin, as UpdateUser).
	DeleteUser(ctx context.Context, id int64) error
	// EndSessions increments the user's token epoch, which voids every
	// token and session issued before.
	EndSessions(ctx context.Context, id int64) error

	// Keys returns every API key, revoked ones included, with its usage,
	// ordered by ID (never nil).
	Keys(ctx context.Context) ([]account.Key, error)
	// CreateKey inserts a key (name, display prefix, hash, RPM limit).
	CreateKey(ctx context.Context, k account.Key) (account.Key, error)
	// KeyByHash returns the key with the given hash, revoked or not.
	KeyByHash(ctx context.Context, hash string) (account.Key, error)
	// RevokeKey marks a key revoked; revoking twice is not an error.
	RevokeKey(ctx context.Context, id int64) error
	// RecordUsage adds each record to its key's totals (requests, tokens)
	// and moves its last use forward. Unknown keys are ignored.
	RecordUsage(ctx context.Context, usage []account.Usage) error
}

// sessionCookie holds the web UI's signed session token.
const sessionCookie = "aivonx_session"

// setupHint tells an operator how to create the first admin.
const setupHint = "run, where serve runs and with its --data-dir (or, shared, its DATABASE_URL): aivonx users create --username admin --role admin --password-stdin"

// RateLimiter keeps named budgets shared by every replica: perMinute
// requests a minute, burst of them at once. Take spends one request, or
// returns how long to wait when none is left (spending nothing); Refund
// gives back one that Take spent.
type RateLimiter interface {
	Take(ctx context.Context, name string, perMinute, burst int) (wait time.Duration, err error)
	Refund(ctx context.Context, name string, perMinute, burst int) error
}

// loginsPerMinute bounds login attempts per client address, failed or
// not: as many at once, then as many a minute.
const loginsPerMinute = 10

// A username is locked after failuresPerUser failed logins, and may fail
// again failuresPerMinute times a minute.
const (
	failuresPerUser   = 5
	failuresPerMinute = 3
)

type authState struct {
	store      AccountStore // nil: no accounts, guarded routes are open
	secret     []byte
	now        func() time.Time
	accessTTL  time.Duration
	refreshTTL time.Duration
	sessionTTL time.Duration
	required   bool
	cop        *http.CrossOriginProtection
	ipLogins   *limiterSet // every login attempt, per client address
	userFails  *limiterSet // failed logins, per username
	keys       *keyCache
	keyLimits  *keyLimiters
	shared     RateLimiter // nil: the per-process limiters only
	sharedDown atomic.Bool // the shared limiter failed last; logged once
	usage      *usageBatcher
	cors       corsPolicy
}

func (h *Handler) initAuth() error {
	c := h.cfg.Auth
	st := &authState{
		store:      h.deps.Accounts,
		secret:     c.SecretKey,
		now:        c.Now,
		accessTTL:  orDuration(c.AccessTTL, 15*time.Minute),
		refreshTTL: orDuration(c.RefreshTTL, 7*24*time.Hour),
		sessionTTL: orDuration(c.SessionTTL, 12*time.Hour),
		required:   c.RequireAPIKey,
		cop:        http.NewCrossOriginProtection(),
		cors:       newCORSPolicy(c.CORSOrigins),
	}
	if st.now == nil {
		st.now = time.Now
	}
	switch {
	case st.store == nil && c.RequireAPIKey:
		return errors.New("app.New: Auth.RequireAPIKey needs Deps.Accounts")
	case st.store != nil && len(st.secret) < 32:
		return errors.New("app.New: Auth.SecretKey must be at least 32 bytes when accounts are enabled")
	case st.store == nil:
		h.log.Warn("no account store: management and state routes are open to anyone")
	}
	st.ipLogins = newLimiterSet(loginsPerMinute, time.Minute/loginsPerMinute) // 10 at once, then 10 a minute
	st.userFails = newLimiterSet(failuresPerUser, time.Minute/failuresPerMinute)
	st.keys = newKeyCache(orDuration(c.KeyCacheTTL, 30*time.Second))
	st.keyLimits = &keyLimiters{m: map[int64]*keyLimiter{}}
	st.shared = h.deps.Limits
	st.usage = &usageBatcher{store: st.store, log: h.log, every: orDuration(c.UsageFlushEvery, time.Second), pending: map[int64]*account.Usage{}}
	h.ext.auth = st
	return nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// principal is the logged-in user behind a request.
type principal struct {
	UserID   int64
	Username string
	Role     account.Role
	// Cookie is true when the session cookie, not a bearer token,
	// authenticated the request.
	Cookie bool
}

type principalKey struct{}

// principalFrom returns the user that requireUser or requireAdmin let
// through, or nil (open routes, or no account store).
func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

// access levels of guarded routes.
type authLevel int

const (
	anyRole     authLevel = iota // any logged-in user
	adminWrites                  // any user may read (GET, HEAD), only admins write
	adminOnly                    // admins only, reads included
)

// requireUser lets through any logged-in user (admin or viewer), with an
// access token (Authorization: Bearer) or the session cookie. Without
// credentials, or with a bad or expired token, it answers 401
// {"error":"authentication required"}. Cookie-authenticated state-changing
// requests must come from the same origin (403 otherwise). Without an
// account store it lets everything through.
func (h *Handler) requireUser(next http.Handler) http.Handler { return h.authGuard(anyRole, next) }

// requireAdmin guards a management route: any logged-in user may read it
// (GET, HEAD), only admins may change anything (403 {"error":"admin role
// required"} for a viewer). Otherwise as [Handler.requireUser].
func (h *Handler) requireAdmin(next http.Handler) http.Handler { return h.authGuard(adminWrites, next) }

// requireAdminAll lets only admins through, reads included (users, keys).
func (h *Handler) requireAdminAll(next http.Handler) http.Handler {
	return h.authGuard(adminOnly, next)
}

func (h *Handler) authGuard(lv authLevel, next http.Handler) http.Handler {
	st := h.ext.auth
	if st.store == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.authenticate(r)
		if err != nil {
			h.writeAuthError(w, r, ollamaDialect, err)
			return
		}
		if p.Cookie {
			if err := st.cop.Check(r); err != nil {
				writeError(w, ollamaDialect, http.StatusForbidden, "cross-origin request refused")
				return
			}
		}
		if a := accessFrom(r.Context()); a != nil {
			a.who = "user:" + p.Username // refused or not: the history says who tried
		}
		safe := r.Method == http.MethodGet || r.Method == http.MethodHead
		if p.Role != account.RoleAdmin && (lv == adminOnly || lv == adminWrites && !safe) {
			writeError(w, ollamaDialect, http.StatusForbidden, "admin role required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// errUnauthenticated is a missing, bad or expired credential, or one whose
// user is gone or changed password: all answer 401 the same way.
var errUnauthenticated = errors.New("authentication required")

// authenticate finds the user behind the bearer token or, without an
// Authorization header, the session cookie. The user is read from the store
// on each request, so a deleted user, a changed role or a changed password
// takes effect at once.
func (h *Handler) authenticate(r *http.Request) (*principal, error) {
	var raw, typ string
	cookie := false
	if tok, ok := bearerToken(r); ok {
		raw, typ = tok, tokenAccess
	} else if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		raw, typ, cookie = c.Value, tokenSession, true
	} else {
		return nil, errUnauthenticated
	}
	u, err := h.userFromToken(r.Context(), raw, typ)
	if err != nil {
		return nil, err
	}
	return &principal{UserID: u.ID, Username: u.Username, Role: u.Role, Cookie: cookie}, nil
}

// writeAuthError answers 401 for a credential problem and maps store
// errors (503 when the database is down) otherwise.
func (h *Handler) writeAuthError(w http.ResponseWriter, r *http.Request, d dialect, err error) {
	if errors.Is(err, errUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="aivonx"`)
		writeError(w, d, http.StatusUnauthorized, "authentication required")
		return
	}
	writeErr(w, r, d, err)
}

// bearer returns the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(v[7:])
	return tok, tok != ""
}

// Token types, in the "token_type" claim as SimpleJWT names them.
const (
	tokenAccess  = "access"
	tokenRefresh = "refresh"
	tokenSession = "session"
)

const tokenIssuer = "aivonx"

// claims are a token's contents. PV ties a token to the password and the
// token epoch it was issued under: changing the password, or logging out,
// ends every older token of the user.
type claims struct {
	jwt.RegisteredClaims
	Type     string       `json:"token_type"`
	UserID   int64        `json:"user_id"`
	Username string       `json:"username"`
	Role     account.Role `json:"role"`
	PV       string       `json:"pv"`
}

func tokenVersion(u account.User) string {
	v := u.PasswordHash
	if u.TokenEpoch != 0 {
		// Epoch 0 keeps the version of tokens issued before epochs
		// existed, so an upgrade logs nobody out.
		v += "\x00" + strconv.FormatInt(u.TokenEpoch, 10)
	}
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:6])
}

func (h *Handler) issueToken(u account.User, typ string, ttl time.Duration) (string, error) {
	st := h.ext.auth
	now := st.now()
	var jti [12]byte
	rand.Read(jti[:])
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   strconv.FormatInt(u.ID, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        hex.EncodeToString(jti[:]),
		},
		Type: typ, UserID: u.ID, Username: u.Username, Role: u.Role, PV: tokenVersion(u),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(st.secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// userFromToken verifies a token of the given type and returns its user as
// the store has it now. Every verification failure is errUnauthenticated.
func (h *Handler) userFromToken(ctx context.Context, raw, typ string) (account.User, error) {
	st := h.ext.auth
	var c claims
	_, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return st.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(st.now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(tokenIssuer),
	)
	if err != nil || c.Type != typ || c.UserID == 0 {
		return account.User{}, errUnauthenticated
	}
	u, err := st.store.User(ctx, c.UserID)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return account.User{}, errUnauthenticated
	case err != nil:
		return account.User{}, err
	case tokenVersion(u) != c.PV:
		return account.User{}, errUnauthenticated
	}
	return u, nil
}

// accountRoutes registers logins, users and API keys. Without an account
// store they answer 501.
func (h *Handler) accountRoutes(mux *routeMux) {
	route := func(pattern string, hf http.Handler) {
		if h.ext.auth.store == nil {
			hf = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				writeError(w, ollamaDialect, http.StatusNotImplemented, "accounts are not configured")
			})
		}
		mux.Handle(pattern, hf)
	}
	route("POST /api/account/login", http.HandlerFunc(h.handleLogin))
	route("POST /api/account/refresh", http.HandlerFunc(h.handleRefresh))
	route("POST /api/account/session", http.HandlerFunc(h.handleSession))
	route("POST /api/account/logout", http.HandlerFunc(h.handleLogout))
	route("GET /api/account/me", h.requireUser(http.HandlerFunc(h.handleMe)))
	route("GET /api/account/setup", http.HandlerFunc(h.handleSetup))

	route("GET /api/account/users", h.requireAdminAll(http.HandlerFunc(h.handleUserList)))
	route("POST /api/account/users", h.requireAdminAll(http.HandlerFunc(h.handleUserCreate)))
	route("PATCH /api/account/users/{id}", h.requireAdminAll(http.HandlerFunc(h.handleUserUpdate)))
	route("DELETE /api/account/users/{id}", h.requireAdminAll(http.HandlerFunc(h.handleUserDelete)))

	route("GET /api/keys", h.requireAdminAll(http.HandlerFunc(h.handleKeyList)))
	route("POST /api/keys", h.requireAdminAll(http.HandlerFunc(h.handleKeyCreate)))
	route("DELETE /api/keys/{id}", h.requireAdminAll(http.HandlerFunc(h.handleKeyRevoke)))
}
