package app

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// Login answers use the upstream's {"detail": …} shape.
func writeDetail(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, map[string]string{"detail": detail})
}

const maxAuthBody = 64 << 10

// loginCredentials reads username (alias account) and password (alias
// passwd) from a JSON, urlencoded or multipart body. A JSON body is
// recognised by its first character whatever its Content-Type (curl -d sends
// JSON as a form). Credentials in the URL are ignored.
func loginCredentials(w http.ResponseWriter, r *http.Request) (user, pass string, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAuthBody)
	pick := func(get func(string) string) (string, string) {
		return cmp.Or(get("username"), get("account")), cmp.Or(get("password"), get("passwd"))
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		if err := r.ParseMultipartForm(maxAuthBody); err != nil {
			return "", "", err
		}
		user, pass = pick(r.PostForm.Get)
		return strings.TrimSpace(user), pass, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return "", "", err
	}
	if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '{' {
		var body map[string]any
		if err := json.Unmarshal(trimmed, &body); err != nil {
			return "", "", err
		}
		user, pass = pick(func(k string) string { v, _ := body[k].(string); return v })
	} else {
		form, err := url.ParseQuery(string(b))
		if err != nil {
			return "", "", err
		}
		user, pass = pick(form.Get)
	}
	return strings.TrimSpace(user), pass, nil
}

// checkLogin verifies credentials under the login rate limits and writes
// the error answer itself; ok reports whether u may log in.
func (h *Handler) checkLogin(w http.ResponseWriter, r *http.Request) (u account.User, ok bool) {
	st := h.ext.auth
	now := st.now()
	ip := h.clientIP(r)
	if wait := h.takeLimit(r.Context(), "login:"+ip, loginsPerMinute, loginsPerMinute,
		func() time.Duration { return st.ipLogins.take(ip, now) }); wait > 0 {
		tooManyLogins(w, wait)
		return u, false
	}
	user, pass, err := loginCredentials(w, r)
	if err != nil {
		status, msg := h.bodyReadFailure(err)
		if status == http.StatusBadRequest {
			msg = "Malformed request body."
		}
		writeDetail(w, status, msg)
		return u, false
	}
	if user == "" || pass == "" {
		writeDetail(w, http.StatusBadRequest, "Missing credentials.")
		return u, false
	}
	// Every attempt spends one of the username's failures before the
	// password is checked, and a success gives it back: had the check come
	// first, concurrent guesses would all pass it.
	userKey := strings.ToLower(user)
	wait, succeeded := h.spendLimit(r.Context(), "loginfail:"+userKey, failuresPerMinute, failuresPerUser, st.userFails, userKey)
	if wait > 0 {
		tooManyLogins(w, wait)
		return u, false
	}
	u, err = st.store.UserByName(r.Context(), user)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		succeeded() // not the user's failure
		writeErr(w, r, ollamaDialect, err)
		return u, false
	}
	if !account.CheckPassword(u.PasswordHash, pass) {
		// A name no user has may be a password typed in the wrong box: it
		// stays out of the log, which viewers can read.
		logged := u.Username
		if logged == "" {
			logged = "(no such user)"
		}
		h.log.Info("login failed", "username", logged, "client", ip)
		writeDetail(w, http.StatusUnauthorized, "Invalid credentials.")
		return u, false
	}
	succeeded()
	if a := accessFrom(r.Context()); a != nil {
		a.who = "user:" + u.Username
	}
	return u, true
}

func tooManyLogins(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", retryAfterSecs(wait))
	writeDetail(w, http.StatusTooManyRequests, "Too many login attempts, try again later.")
}

// retryAfter renders a wait as whole seconds, rounded up, at least 1.
func retryAfterSecs(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

type tokenPair struct {
	Access  string `json:"access"`
	Refresh string `json:"refresh"`
}

func (h *Handler) writePair(w http.ResponseWriter, r *http.Request, u account.User) {
	st := h.ext.auth
	access, err := h.issueToken(u, tokenAccess, st.accessTTL)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	refresh, err := h.issueToken(u, tokenRefresh, st.refreshTTL)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenPair{Access: access, Refresh: refresh})
}

// handleLogin is the upstream's POST /api/account/login: a JWT pair.
func (h *Handler) handleLogin(w http.ResponseWriter, r *http.Request) {
	if u, ok := h.checkLogin(w, r); ok {
		h.writePair(w, r, u)
	}
}

// handleRefresh trades a refresh token for a new pair. The old refresh
// token stays valid until it expires (there is no revocation list), unless
// the user's password changes or the user is deleted.
func (h *Handler) handleRefresh(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAuthBody)
	var raw string
	if b, err := io.ReadAll(r.Body); err == nil {
		if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '{' {
			var body struct {
				Refresh string `json:"refresh"`
			}
			_ = json.Unmarshal(trimmed, &body)
			raw = body.Refresh
		} else if form, err := url.ParseQuery(string(b)); err == nil {
			raw = form.Get("refresh")
		}
	}
	if raw == "" {
		writeDetail(w, http.StatusBadRequest, "Missing refresh token.")
		return
	}
	u, err := h.userFromToken(r.Context(), raw, tokenRefresh)
	if errors.Is(err, errUnauthenticated) {
		writeDetail(w, http.StatusUnauthorized, "Invalid or expired refresh token.")
		return
	}
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	h.writePair(w, r, u)
}

type meView struct {
	ID       int64        `json:"id"`
	Username string       `json:"username"`
	Role     account.Role `json:"role"`
}

// handleSession logs a browser in: the session cookie, and who it is.
func (h *Handler) handleSession(w http.ResponseWriter, r *http.Request) {
	st := h.ext.auth
	// Login CSRF: a foreign page must not log the browser in either.
	if err := st.cop.Check(r); err != nil {
		writeError(w, ollamaDialect, http.StatusForbidden, "cross-origin request refused")
		return
	}
	u, ok := h.checkLogin(w, r)
	if !ok {
		return
	}
	tok, err := h.issueToken(u, tokenSession, st.sessionTTL)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: tok, Path: "/",
		MaxAge: int(st.sessionTTL.Seconds()), Expires: st.now().Add(st.sessionTTL),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: overTLS(r),
	})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, meView{ID: u.ID, Username: u.Username, Role: u.Role})
}

// handleLogout logs the user out everywhere: every session and token of
// the user that sent it (by cookie or bearer token) stops working, on
// every device, and the session cookie is cleared. Without valid
// credentials it only clears the cookie.
func (h *Handler) handleLogout(w http.ResponseWriter, r *http.Request) {
	st := h.ext.auth
	if err := st.cop.Check(r); err != nil {
		writeError(w, ollamaDialect, http.StatusForbidden, "cross-origin request refused")
		return
	}
	p, err := h.authenticate(r)
	switch {
	case err == nil:
		if err := st.store.EndSessions(r.Context(), p.UserID); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			writeErr(w, r, ollamaDialect, err)
			return
		}
		h.log.Info("logged out", "username", p.Username)
	case !errors.Is(err, errUnauthenticated):
		writeErr(w, r, ollamaDialect, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: overTLS(r),
	})
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) handleMe(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, meView{ID: p.UserID, Username: p.Username, Role: p.Role})
}

// handleSetup tells the UI whether an admin must be created first (then a
// login cannot succeed, and the UI shows the hint instead).
func (h *Handler) handleSetup(w http.ResponseWriter, r *http.Request) {
	users, err := h.ext.auth.store.Users(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	needs := true
	for _, u := range users {
		if u.Role == account.RoleAdmin {
			needs = false
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"needs_admin": needs, "hint": setupHint})
}

// overTLS reports whether the client reached us over HTTPS, directly or
// through a proxy that says so.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// limiterSet is a rate limit per key (a client address, a username): burst
// requests at once, then one every every. It keeps, as the shared limiter
// in Redis does (GCRA), one time per key: when the budget is whole again.
// Keys are forgotten once whole. Safe for concurrent use.
type limiterSet struct {
	mu        sync.Mutex
	burst     int
	every     time.Duration
	full      map[string]time.Time // when each key's budget is whole again
	lastSweep time.Time
}

func newLimiterSet(burst int, every time.Duration) *limiterSet {
	return &limiterSet{burst: burst, every: every, full: map[string]time.Time{}}
}

// take spends one request; it returns how long to wait when none is left
// (and then spends nothing).
func (s *limiterSet) take(key string, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	full := s.full[key]
	if full.Before(now) {
		full = now
	}
	if wait := full.Add(s.every - time.Duration(s.burst)*s.every).Sub(now); wait > 0 {
		return wait
	}
	s.full[key] = full.Add(s.every)
	return 0
}

// refund gives back one request that take spent.
func (s *limiterSet) refund(key string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if full, ok := s.full[key]; ok {
		if full = full.Add(-s.every); full.After(now) {
			s.full[key] = full
		} else {
			delete(s.full, key)
		}
	}
}

// sweep forgets, once a minute, the keys whose budget is whole.
func (s *limiterSet) sweep(now time.Time) {
	if now.Sub(s.lastSweep) < time.Minute {
		return
	}
	for k, full := range s.full {
		if !full.After(now) {
			delete(s.full, k)
		}
	}
	s.lastSweep = now
}
