package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/internal/testenv"
	"github.com/aivonx/aivonx/worker"
)

var testSecret = []byte("test-secret-key-0123456789-abcdefghijkl")

// fakeClock is the clock of token expiry and rate limits.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// authEnv is the handler with accounts in the embedded SQLite store, in
// front of one fake node.
type authEnv struct {
	t     *testing.T
	url   string
	store *sqlite.Store
	clock *fakeClock
	h     *app.Handler
}

func newAuthEnv(t *testing.T, mod func(*app.AuthConfig)) *authEnv {
	t.Helper()
	return newAuthEnvWith(t, mod, nil)
}

// newAuthEnvWith is newAuthEnv with optional dependencies set by deps.
func newAuthEnvWith(t *testing.T, mod func(*app.AuthConfig), deps func(*app.Deps)) *authEnv {
	t.Helper()
	return newAuthEnvConfig(t, func(cfg *app.Config) {
		if mod != nil {
			mod(&cfg.Auth)
		}
	}, deps)
}

// newAuthEnvConfig is newAuthEnv with the whole configuration open to mod.
func newAuthEnvConfig(t *testing.T, mod func(*app.Config), deps func(*app.Deps)) *authEnv {
	t.Helper()
	ctx := context.Background()
	node := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	store, err := sqlite.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := &staticStore{settings: fleet.DefaultSettings(),
		nodes: []fleet.Node{{ID: 1, Name: "nodeA", BaseURL: node.URL(), Enabled: true}}}
	board := memory.NewStatusBoard()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1, ProbeTimeout: time.Second}, fs, board, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	cfg := app.Config{RefreshEvery: time.Millisecond, Auth: app.AuthConfig{SecretKey: testSecret, Now: clock.Now, UsageFlushEvery: 20 * time.Millisecond}}
	if mod != nil {
		mod(&cfg)
	}
	d := app.Deps{Fleet: fs, Statuses: board, InFlight: memory.NewInFlight(), Log: log, Accounts: store}
	if deps != nil {
		deps(&d)
	}
	h, err := app.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.FlushUsage(context.Background())
		store.Close()
	})
	return &authEnv{t: t, url: srv.URL, store: store, clock: clock, h: h}
}

func (e *authEnv) user(name string, role account.Role, password string) account.User {
	e.t.Helper()
	// The lowest cost keeps the tests fast under the race detector;
	// CheckPassword reads the cost from the hash.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.store.CreateUser(context.Background(), account.User{Username: name, Role: role, PasswordHash: string(hash)})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// do sends a request; hdr are header name/value pairs.
func (e *authEnv) do(method, path, body string, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := testClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, readAll(e.t, resp)
}

func (e *authEnv) login(username, password string) (access, refresh string) {
	e.t.Helper()
	resp, body := e.do("POST", "/api/account/login", `{"username":"`+username+`","password":"`+password+`"}`)
	if resp.StatusCode != 200 {
		e.t.Fatalf("login %s: %d %s", username, resp.StatusCode, body)
	}
	var pair struct{ Access, Refresh string }
	if err := json.Unmarshal([]byte(body), &pair); err != nil || pair.Access == "" || pair.Refresh == "" {
		e.t.Fatalf("login body %s: %v", body, err)
	}
	return pair.Access, pair.Refresh
}

func expect(t *testing.T, resp *http.Response, body string, status int, want string) {
	t.Helper()
	if resp.StatusCode != status || !strings.Contains(body, want) {
		t.Fatalf("got %d %s; want %d with %s", resp.StatusCode, strings.TrimSpace(body), status, want)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")

	for name, body := range map[string]string{"Empty": "", "NoPassword": `{"username":"alice"}`, "NoUser": `{"password":"x"}`} {
		t.Run("ErrMissing"+name, func(t *testing.T) {
			resp, got := e.do("POST", "/api/account/login", body)
			expect(t, resp, got, 400, `{"detail":"Missing credentials."}`)
		})
	}
	t.Run("ErrInvalid", func(t *testing.T) {
		resp, got := e.do("POST", "/api/account/login", `{"username":"alice","password":"wrong horse"}`)
		expect(t, resp, got, 401, `{"detail":"Invalid credentials."}`)
		resp, got = e.do("POST", "/api/account/login", `{"username":"nobody","password":"wrong horse"}`)
		expect(t, resp, got, 401, `{"detail":"Invalid credentials."}`)
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		// The size, not a "malformed" body, is what is wrong.
		resp, got := e.do("POST", "/api/account/login", `{"username":"alice","password":"`+strings.Repeat("x", 70<<10)+`"}`)
		expect(t, resp, got, 413, `{"detail":"request body is larger than`)
	})
	t.Run("FormAliases", func(t *testing.T) {
		form := url.Values{"account": {"ALICE"}, "passwd": {"correct horse"}}.Encode()
		resp, got := e.do("POST", "/api/account/login", form, "Content-Type", "application/x-www-form-urlencoded")
		expect(t, resp, got, 200, `"access":"`)
	})
	t.Run("JSONSentAsForm", func(t *testing.T) {
		// What curl -d '{…}' sends.
		resp, got := e.do("POST", "/api/account/login", `{"account":"alice","passwd":"correct horse"}`, "Content-Type", "application/x-www-form-urlencoded")
		expect(t, resp, got, 200, `"access":"`)
	})
	t.Run("Multipart", func(t *testing.T) {
		body := "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n" +
			"--XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\ncorrect horse\r\n--XX--\r\n"
		resp, got := e.do("POST", "/api/account/login", body, "Content-Type", "multipart/form-data; boundary=XX")
		expect(t, resp, got, 200, `"access":"`)
	})
	t.Run("OK", func(t *testing.T) {
		access, refresh := e.login("alice", "correct horse")
		resp, got := e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+access)
		expect(t, resp, got, 200, `"username":"alice","role":"admin"`)
		// The claims the upstream's clients may read.
		var c jwt.MapClaims
		if _, _, err := jwt.NewParser().ParseUnverified(access, &c); err != nil {
			t.Fatal(err)
		}
		if c["token_type"] != "access" || c["user_id"] == nil || c["exp"] == nil {
			t.Fatalf("claims %v", c)
		}
		exp, _ := c.GetExpirationTime()
		if d := exp.Sub(e.clock.Now()); d < 14*time.Minute || d > 15*time.Minute {
			t.Fatalf("access token lives %v, want 15m", d)
		}
		_, _, _ = jwt.NewParser().ParseUnverified(refresh, &c)
		exp, _ = c.GetExpirationTime()
		if d := exp.Sub(e.clock.Now()); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour {
			t.Fatalf("refresh token lives %v, want 7 days", d)
		}
	})
}

func TestRequireUserAndAdmin(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	e.user("victor", account.RoleViewer, "viewer pass")
	admin, _ := e.login("alice", "correct horse")
	viewer, _ := e.login("victor", "viewer pass")

	forged := func(secret []byte, mod func(jwt.MapClaims)) string {
		// Copy the password version of alice's real token.
		real := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(admin, real); err != nil {
			t.Fatal(err)
		}
		c := jwt.MapClaims{"iss": "aivonx", "token_type": "access", "user_id": real["user_id"], "pv": real["pv"],
			"exp": e.clock.Now().Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	for _, path := range []string{"/api/proxy/state", "/api/proxy/active-requests", "/api/account/me", "/api/keys", "/api/account/users"} {
		t.Run("ErrNoToken"+path, func(t *testing.T) {
			resp, got := e.do("GET", path, "")
			expect(t, resp, got, 401, `{"error":"authentication required"}`)
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate header")
			}
		})
	}
	bad := map[string]string{
		"Garbage":       "Bearer not-a-jwt",
		"OtherSecret":   "Bearer " + forged([]byte("another-secret-another-secret-0123456"), nil),
		"RefreshAsAuth": "Bearer " + forged(testSecret, func(c jwt.MapClaims) { c["token_type"] = "refresh" }),
		"NoExpiry":      "Bearer " + forged(testSecret, func(c jwt.MapClaims) { delete(c, "exp") }),
		"UnknownUser":   "Bearer " + forged(testSecret, func(c jwt.MapClaims) { c["user_id"] = 999 }),
		"AlgNone": "Bearer " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": "aivonx", "token_type": "access", "user_id": 1,
				"exp": e.clock.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}(),
	}
	for name, auth := range bad {
		t.Run("ErrBadToken"+name, func(t *testing.T) {
			resp, got := e.do("GET", "/api/proxy/state", "", "Authorization", auth)
			expect(t, resp, got, 401, `{"error":"authentication required"}`)
		})
	}
	t.Run("ForgedWithRightSecretWorks", func(t *testing.T) {
		// Guards the table above: the same token with the right secret passes.
		resp, got := e.do("GET", "/api/proxy/state", "", "Authorization", "Bearer "+forged(testSecret, nil))
		expect(t, resp, got, 200, `"nodes"`)
	})

	t.Run("ViewerReads", func(t *testing.T) {
		for _, path := range []string{"/api/proxy/state", "/api/proxy/active-requests", "/api/account/me"} {
			resp, got := e.do("GET", path, "", "Authorization", "Bearer "+viewer)
			expect(t, resp, got, 200, "{")
		}
	})
	t.Run("ErrViewerWrites", func(t *testing.T) {
		resp, got := e.do("POST", "/api/keys", `{"name":"x"}`, "Authorization", "Bearer "+viewer)
		expect(t, resp, got, 403, `{"error":"admin role required"}`)
		resp, got = e.do("POST", "/api/account/users", `{"username":"x","password":"12345678","role":"admin"}`, "Authorization", "Bearer "+viewer)
		expect(t, resp, got, 403, `{"error":"admin role required"}`)
		// Keys and users are not even readable by a viewer.
		resp, got = e.do("GET", "/api/keys", "", "Authorization", "Bearer "+viewer)
		expect(t, resp, got, 403, `admin role required`)
	})
	t.Run("AdminAll", func(t *testing.T) {
		resp, got := e.do("GET", "/api/proxy/state", "", "Authorization", "Bearer "+admin)
		expect(t, resp, got, 200, `"nodes"`)
		resp, got = e.do("GET", "/api/keys", "", "Authorization", "bearer "+admin)
		expect(t, resp, got, 200, `[]`)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		e2 := newAuthEnv(t, nil)
		e2.user("alice", account.RoleAdmin, "correct horse")
		tok, _ := e2.login("alice", "correct horse")
		e2.clock.Advance(14 * time.Minute)
		resp, got := e2.do("GET", "/api/proxy/state", "", "Authorization", "Bearer "+tok)
		expect(t, resp, got, 200, `"nodes"`)
		e2.clock.Advance(2 * time.Minute)
		resp, got = e2.do("GET", "/api/proxy/state", "", "Authorization", "Bearer "+tok)
		expect(t, resp, got, 401, `authentication required`)
	})
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	alice := e.user("alice", account.RoleAdmin, "correct horse")
	access, refresh := e.login("alice", "correct horse")

	t.Run("OK", func(t *testing.T) {
		e.clock.Advance(20 * time.Minute) // the access token has expired
		resp, got := e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+access)
		expect(t, resp, got, 401, "authentication required")
		resp, got = e.do("POST", "/api/account/refresh", `{"refresh":"`+refresh+`"}`)
		expect(t, resp, got, 200, `"refresh":"`)
		var pair struct{ Access, Refresh string }
		json.Unmarshal([]byte(got), &pair)
		resp, got = e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+pair.Access)
		expect(t, resp, got, 200, `"username":"alice"`)
	})
	t.Run("ErrAccessAsRefresh", func(t *testing.T) {
		fresh, _ := e.login("alice", "correct horse")
		resp, got := e.do("POST", "/api/account/refresh", `{"refresh":"`+fresh+`"}`)
		expect(t, resp, got, 401, `Invalid or expired refresh token.`)
	})
	t.Run("ErrMissing", func(t *testing.T) {
		resp, got := e.do("POST", "/api/account/refresh", `{}`)
		expect(t, resp, got, 400, `Missing refresh token.`)
	})
	t.Run("ErrPasswordChanged", func(t *testing.T) {
		_, r2 := e.login("alice", "correct horse")
		hash, _ := bcrypt.GenerateFromPassword([]byte("battery staple"), bcrypt.MinCost)
		alice.PasswordHash = string(hash)
		if _, err := e.store.UpdateUser(context.Background(), alice); err != nil {
			t.Fatal(err)
		}
		resp, got := e.do("POST", "/api/account/refresh", `{"refresh":"`+r2+`"}`)
		expect(t, resp, got, 401, `Invalid or expired refresh token.`)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		_, r3 := e.login("alice", "battery staple")
		e.clock.Advance(7*24*time.Hour + time.Second)
		resp, got := e.do("POST", "/api/account/refresh", `{"refresh":"`+r3+`"}`)
		expect(t, resp, got, 401, `Invalid or expired refresh token.`)
	})
}

func sessionCookieOf(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == "aivonx_session" {
			return c
		}
	}
	t.Fatalf("no aivonx_session cookie in %v", resp.Header.Values("Set-Cookie"))
	return nil
}

func TestSession(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	e.user("victor", account.RoleViewer, "viewer pass")

	resp, got := e.do("POST", "/api/account/session", `{"username":"alice","password":"correct horse"}`)
	expect(t, resp, got, 200, `"username":"alice","role":"admin"`)
	c := sessionCookieOf(t, resp)
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Lax, not Secure over plain HTTP, Path=/", c)
	}
	cookie := c.Name + "=" + c.Value

	t.Run("SecureBehindTLS", func(t *testing.T) {
		form := url.Values{"username": {"alice"}, "password": {"correct horse"}}.Encode()
		resp, _ := e.do("POST", "/api/account/session", form, "Content-Type", "application/x-www-form-urlencoded", "X-Forwarded-Proto", "https")
		if c := sessionCookieOf(t, resp); !c.Secure {
			t.Fatalf("cookie %+v behind HTTPS: want Secure", c)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		resp, got := e.do("POST", "/api/account/session", `{"username":"alice","password":"nope nope"}`)
		expect(t, resp, got, 401, "Invalid credentials.")
		if len(resp.Cookies()) != 0 {
			t.Fatal("a failed login set a cookie")
		}
	})
	t.Run("Me", func(t *testing.T) {
		resp, got := e.do("GET", "/api/account/me", "", "Cookie", cookie)
		expect(t, resp, got, 200, `"username":"alice"`)
	})
	t.Run("SameOriginWrite", func(t *testing.T) {
		resp, got := e.do("POST", "/api/keys", `{"name":"ui"}`, "Cookie", cookie, "Sec-Fetch-Site", "same-origin", "Origin", e.url)
		expect(t, resp, got, 201, `"key":"aivx_`)
	})
	t.Run("ErrCrossOriginWrite", func(t *testing.T) {
		resp, got := e.do("POST", "/api/keys", `{"name":"evil"}`, "Cookie", cookie, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
		expect(t, resp, got, 403, "cross-origin request refused")
		// Old browsers send only Origin.
		resp, got = e.do("POST", "/api/keys", `{"name":"evil"}`, "Cookie", cookie, "Origin", "https://evil.example")
		expect(t, resp, got, 403, "cross-origin request refused")
		// A login from a foreign page is refused too.
		resp, got = e.do("POST", "/api/account/session", `{"username":"alice","password":"correct horse"}`, "Sec-Fetch-Site", "cross-site")
		expect(t, resp, got, 403, "cross-origin request refused")
		keys, _ := e.store.Keys(context.Background())
		for _, k := range keys {
			if k.Name == "evil" {
				t.Fatal("the cross-origin request created a key")
			}
		}
	})
	t.Run("CrossOriginReadAllowed", func(t *testing.T) {
		resp, got := e.do("GET", "/api/account/me", "", "Cookie", cookie, "Sec-Fetch-Site", "cross-site")
		expect(t, resp, got, 200, `"username":"alice"`)
	})
	t.Run("BearerNeedsNoOriginCheck", func(t *testing.T) {
		access, _ := e.login("alice", "correct horse")
		resp, got := e.do("POST", "/api/keys", `{"name":"script"}`, "Authorization", "Bearer "+access, "Sec-Fetch-Site", "cross-site")
		expect(t, resp, got, 201, `"key":"aivx_`)
	})
	t.Run("ViewerSession", func(t *testing.T) {
		resp, _ := e.do("POST", "/api/account/session", `{"username":"victor","password":"viewer pass"}`)
		vc := sessionCookieOf(t, resp)
		resp, got := e.do("DELETE", "/api/keys/1", "", "Cookie", vc.Name+"="+vc.Value, "Sec-Fetch-Site", "same-origin")
		expect(t, resp, got, 403, "admin role required")
	})
	t.Run("Logout", func(t *testing.T) {
		resp, got := e.do("POST", "/api/account/logout", "", "Cookie", cookie, "Sec-Fetch-Site", "cross-site")
		expect(t, resp, got, 403, "cross-origin")
		resp, _ = e.do("POST", "/api/account/logout", "", "Cookie", cookie)
		if resp.StatusCode != 204 {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if c := sessionCookieOf(t, resp); c.MaxAge >= 0 || c.Value != "" {
			t.Fatalf("logout cookie %+v: want it cleared", c)
		}
		resp, got = e.do("GET", "/api/account/logout", "")
		if resp.StatusCode != 405 {
			t.Fatalf("GET logout: %d %s, want 405 (logout is a POST)", resp.StatusCode, got)
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		e.clock.Advance(13 * time.Hour)
		resp, got := e.do("GET", "/api/account/me", "", "Cookie", cookie)
		expect(t, resp, got, 401, "authentication required")
	})
}

// Logging out ends every session and token of the user, on every device,
// and leaves other users alone; without credentials it only clears the
// cookie.
func TestLogoutEndsEverySession(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	e.user("bob", account.RoleViewer, "battery staple")
	resp, _ := e.do("POST", "/api/account/session", `{"username":"alice","password":"correct horse"}`)
	c := sessionCookieOf(t, resp)
	cookie := c.Name + "=" + c.Value
	access, refresh := e.login("alice", "correct horse")
	bobAccess, _ := e.login("bob", "battery staple")

	resp, got := e.do("POST", "/api/account/logout", "")
	if resp.StatusCode != 204 {
		t.Fatalf("logout without credentials: %d %s", resp.StatusCode, got)
	}
	resp, got = e.do("GET", "/api/account/me", "", "Cookie", cookie)
	expect(t, resp, got, 200, `"username":"alice"`) // nobody was logged out

	resp, got = e.do("POST", "/api/account/logout", "", "Authorization", "Bearer "+access)
	if resp.StatusCode != 204 {
		t.Fatalf("logout: %d %s", resp.StatusCode, got)
	}
	resp, got = e.do("GET", "/api/account/me", "", "Cookie", cookie)
	expect(t, resp, got, 401, "authentication required")
	resp, got = e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+access)
	expect(t, resp, got, 401, "authentication required")
	resp, got = e.do("POST", "/api/account/refresh", `{"refresh":"`+refresh+`"}`)
	expect(t, resp, got, 401, "Invalid or expired refresh token.")
	resp, got = e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+bobAccess)
	expect(t, resp, got, 200, `"username":"bob"`)

	// A new login works at once.
	access, _ = e.login("alice", "correct horse")
	resp, got = e.do("GET", "/api/account/me", "", "Authorization", "Bearer "+access)
	expect(t, resp, got, 200, `"username":"alice"`)
}

func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	try := func(user, pw string) (*http.Response, string) {
		return e.do("POST", "/api/account/login", `{"username":"`+user+`","password":"`+pw+`"}`)
	}
	for i := range 5 {
		resp, got := try("alice", "guess "+strconv.Itoa(i))
		expect(t, resp, got, 401, "Invalid credentials.")
	}
	// Five failures lock the username, even with the right password...
	resp, got := try("alice", "correct horse")
	expect(t, resp, got, 429, "Too many login attempts")
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 20 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// ...but not other users (from the same address, up to its own limit).
	for i := range 4 {
		resp, got := try("bob", "guess "+strconv.Itoa(i))
		expect(t, resp, got, 401, "Invalid credentials.")
	}
	// Ten attempts from one address exhaust it.
	resp, got = try("carol", "whatever1")
	expect(t, resp, got, 429, "Too many login attempts")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	e.clock.Advance(time.Minute)
	resp, got = try("alice", "correct horse")
	expect(t, resp, got, 200, `"access"`)
}

// A failed login names the user in the log, but not a name no user has:
// that may be a password typed into the wrong box, and viewers read logs.
func TestLoginFailureLogLeavesOutUnknownNames(t *testing.T) {
	t.Parallel()
	var logs testenv.Buffer
	e := newAuthEnvWith(t, nil, func(d *app.Deps) { d.Log = slog.New(slog.NewJSONHandler(&logs, nil)) })
	e.user("alice", account.RoleAdmin, "correct horse")
	for _, user := range []string{"alice", "MyS3cretPassw0rd!"} {
		resp, got := e.do("POST", "/api/account/login", `{"username":"`+user+`","password":"wrong"}`)
		expect(t, resp, got, 401, "Invalid credentials.")
	}
	out := logs.String()
	if !strings.Contains(out, `"username":"alice"`) || !strings.Contains(out, `"username":"(no such user)"`) || strings.Contains(out, "S3cret") {
		t.Fatalf("log:\n%s", out)
	}
}

// Guesses sent at once from many addresses get no more than the
// username's five failures; a successful login does not spend one.
func TestLoginLockoutConcurrent(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, func(c *app.AuthConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	})
	e.user("alice", account.RoleAdmin, "correct horse")
	try := func(pw string, client int) (*http.Response, string) {
		return e.do("POST", "/api/account/login", `{"username":"alice","password":"`+pw+`"}`,
			"X-Forwarded-For", fmt.Sprintf("203.0.113.%d", client))
	}
	for i := range 4 {
		resp, got := try("guess", i)
		expect(t, resp, got, 401, "Invalid credentials.")
	}
	resp, got := try("correct horse", 4)
	expect(t, resp, got, 200, `"access"`)

	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			resp, _ := try("guess", 10+i)
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[401] != 1 || codes[429] != 19 {
		t.Fatalf("20 concurrent guesses after 4 failures: %v; want one 401 (the fifth failure), the rest 429", codes)
	}
}

// Behind a load balancer every client comes from its address: the login
// limit per address must then count the client it forwards for, and only
// when the balancer is trusted (else any client could write the header).
func TestLoginRateLimitBehindProxy(t *testing.T) {
	t.Parallel()
	try := func(e *authEnv, client string, i int) (*http.Response, string) {
		return e.do("POST", "/api/account/login", `{"username":"user`+strconv.Itoa(i)+`","password":"x"}`,
			"X-Forwarded-For", client)
	}
	t.Run("trusted", func(t *testing.T) {
		e := newAuthEnv(t, func(c *app.AuthConfig) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		})
		for i := range 10 {
			resp, got := try(e, "203.0.113.9", i)
			expect(t, resp, got, 401, "Invalid credentials.")
		}
		resp, got := try(e, "203.0.113.9", 10)
		expect(t, resp, got, 429, "Too many login attempts")
		// Another client behind the same balancer is not locked out.
		resp, got = try(e, "198.51.100.4", 11)
		expect(t, resp, got, 401, "Invalid credentials.")
	})
	t.Run("not trusted", func(t *testing.T) {
		e := newAuthEnv(t, nil)
		for i := range 10 {
			resp, got := try(e, "203.0.113."+strconv.Itoa(i), i)
			expect(t, resp, got, 401, "Invalid credentials.")
		}
		// A new X-Forwarded-For per attempt does not buy more attempts.
		resp, got := try(e, "198.51.100.4", 10)
		expect(t, resp, got, 429, "Too many login attempts")
	})
}

func TestSetup(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	resp, got := e.do("GET", "/api/account/setup", "")
	expect(t, resp, got, 200, `"needs_admin":true`)
	if !strings.Contains(got, "aivonx users create --username admin --role admin --password-stdin") {
		t.Fatalf("setup %s: want the hint", got)
	}
	e.user("victor", account.RoleViewer, "viewer pass")
	resp, got = e.do("GET", "/api/account/setup", "")
	expect(t, resp, got, 200, `"needs_admin":true`)
	e.user("alice", account.RoleAdmin, "correct horse")
	resp, got = e.do("GET", "/api/account/setup", "")
	expect(t, resp, got, 200, `"needs_admin":false`)
}

func TestUsersAPI(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	alice := e.user("alice", account.RoleAdmin, "correct horse")
	tok, _ := e.login("alice", "correct horse")
	auth := []string{"Authorization", "Bearer " + tok}
	do := func(method, path, body string) (*http.Response, string) { return e.do(method, path, body, auth...) }

	resp, got := do("POST", "/api/account/users", `{"username":"bob","password":"bob password","role":"viewer"}`)
	expect(t, resp, got, 201, `"username":"bob","role":"viewer"`)
	var bob account.User
	json.Unmarshal([]byte(got), &bob)

	t.Run("ListHasNoHashes", func(t *testing.T) {
		resp, got := do("GET", "/api/account/users", "")
		expect(t, resp, got, 200, `"username":"bob"`)
		if strings.Contains(got, "$2a$") || strings.Contains(strings.ToLower(got), "password") {
			t.Fatalf("user list leaks a hash: %s", got)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, c := range []struct{ body, want string }{
			{`{"username":"BOB","password":"bob password","role":"viewer"}`, "409"},
			{`{"username":"carol","password":"short","role":"viewer"}`, "400"},
			{`{"username":"carol","password":"long enough","role":"root"}`, "400"},
			{`{"username":"","password":"long enough","role":"admin"}`, "400"},
			{`{"username":"carol","password":"long enough","role":"admin","extra":1}`, "400"},
		} {
			resp, got := do("POST", "/api/account/users", c.body)
			if strconv.Itoa(resp.StatusCode) != c.want || !strings.Contains(got, `"error":`) {
				t.Errorf("create %s = %d %s, want %s", c.body, resp.StatusCode, got, c.want)
			}
		}
		resp, got := do("PATCH", "/api/account/users/999", `{"role":"admin"}`)
		expect(t, resp, got, 404, `{"error":"user not found: 999"}`)
		resp, got = do("DELETE", "/api/account/users/999", "")
		expect(t, resp, got, 404, `{"error":"user not found: 999"}`)
		resp, got = do("DELETE", "/api/account/users/abc", "")
		expect(t, resp, got, 404, `"error"`)
	})
	t.Run("Patch", func(t *testing.T) {
		resp, got := do("PATCH", "/api/account/users/"+strconv.FormatInt(bob.ID, 10), `{"password":"new bob password","role":"admin"}`)
		expect(t, resp, got, 200, `"role":"admin"`)
		e.login("bob", "new bob password")
	})
	t.Run("LastAdmin", func(t *testing.T) {
		resp, got := do("DELETE", "/api/account/users/"+strconv.FormatInt(bob.ID, 10), "")
		if resp.StatusCode != 204 {
			t.Fatalf("delete bob: %d %s", resp.StatusCode, got)
		}
		id := strconv.FormatInt(alice.ID, 10)
		resp, got = do("PATCH", "/api/account/users/"+id, `{"role":"viewer"}`)
		expect(t, resp, got, 409, "last admin")
		resp, got = do("DELETE", "/api/account/users/"+id, "")
		expect(t, resp, got, 409, "last admin")
	})
}

// With --metrics-private, a scraper's fixed credential, an API key, reads
// /metrics as a login does; nothing else does.
func TestMetricsPrivate(t *testing.T) {
	t.Parallel()
	e := newAuthEnvConfig(t, func(cfg *app.Config) { cfg.Observe.MetricsPrivate = true }, nil)
	e.user("alice", account.RoleViewer, "correct horse")
	e.user("root", account.RoleAdmin, "correct horse")
	viewer, refresh := e.login("alice", "correct horse")
	admin, _ := e.login("root", "correct horse")
	id, key := createKey(t, e, admin, `{"name":"prometheus"}`)
	for name, hdr := range map[string][]string{
		"Bearer key":   {"Authorization", "Bearer " + key},
		"X-API-Key":    {"X-API-Key", key},
		"Viewer login": {"Authorization", "Bearer " + viewer},
	} {
		resp, got := e.do("GET", "/metrics", "", hdr...)
		if resp.StatusCode != 200 || !strings.Contains(got, "aivonx_requests_total") {
			t.Errorf("%s: %d %.200s", name, resp.StatusCode, got)
		}
	}
	for name, hdr := range map[string][]string{
		"Nothing":       nil,
		"Unknown key":   {"Authorization", "Bearer aivx_" + strings.Repeat("A", 32)},
		"Refresh token": {"Authorization", "Bearer " + refresh},
		"Dummy key":     {"X-API-Key", "ollama"},
	} {
		resp, got := e.do("GET", "/metrics", "", hdr...)
		if resp.StatusCode != 401 {
			t.Errorf("%s: %d %.200s; want 401", name, resp.StatusCode, got)
		}
	}
	resp, got := e.do("DELETE", fmt.Sprintf("/api/keys/%d", id), "", "Authorization", "Bearer "+admin)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, got)
	}
	resp, got = e.do("GET", "/metrics", "", "Authorization", "Bearer "+key)
	expect(t, resp, got, 401, "authentication required")
}

// createKey creates a key through the API and returns its ID and plaintext.
func createKey(t *testing.T, e *authEnv, admin, body string) (id int64, plaintext string) {
	t.Helper()
	resp, got := e.do("POST", "/api/keys", body, "Authorization", "Bearer "+admin)
	expect(t, resp, got, 201, `"key":"aivx_`)
	var k struct {
		ID  int64
		Key string
	}
	json.Unmarshal([]byte(got), &k)
	return k.ID, k.Key
}

const chatBody = `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":false}`

func TestAPIKeysOptional(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	id, key := createKey(t, e, admin, `{"name":"ci","rpm_limit":100}`)
	if !account.LooksLikeKey(key) {
		t.Fatalf("key %q", key)
	}

	t.Run("BadInput", func(t *testing.T) {
		for body, want := range map[string]string{
			`{"name":"web","rpm_limit":"5"}`: `"errors":{"rpm_limit":["must be an integer"]}`,
			`{"name":"web","rpm":5}`:         `"errors":{"rpm":["is not a known field"]}`,
			`{"name":7}`:                     `"errors":{"name":["must be a string"]}`,
			`{"name":"evil\u001b[31mRED\r"}`: `"error":"name: must not contain control characters"`,
			`name=web`:                       `"error":"request body must be a JSON object"`,
			"{\"name\":\"\xff\xfe\"}":        `"error":"request body must be valid UTF-8"`,
		} {
			resp, got := e.do("POST", "/api/keys", body, "Authorization", "Bearer "+admin)
			expect(t, resp, got, 400, want)
		}
	})
	t.Run("ListShowsNoSecret", func(t *testing.T) {
		resp, got := e.do("GET", "/api/keys", "", "Authorization", "Bearer "+admin)
		expect(t, resp, got, 200, `"name":"ci"`)
		for _, want := range []string{`"prefix":"` + key[:9] + `"`, `"rpm_limit":100`, `"revoked":false`, `"requests":0`, `"prompt_tokens":0`, `"completion_tokens":0`, `"last_used_at":null`, `"created_at":"`} {
			if !strings.Contains(got, want) {
				t.Errorf("list %s lacks %s", got, want)
			}
		}
		if strings.Contains(got, key) || strings.Contains(got, account.HashKey(key)) || strings.Contains(got, `"key"`) {
			t.Fatalf("list %s shows the key or its hash", got)
		}
	})
	for name, hdr := range map[string][]string{
		"NoKey":      nil,
		"DummyKey":   {"Authorization", "Bearer ollama"},
		"OpenAIKey":  {"Authorization", "Bearer sk-proj-0123456789"},
		"UnknownKey": {"X-API-Key", "aivx_" + strings.Repeat("A", 32)},
	} {
		t.Run("Open"+name, func(t *testing.T) {
			resp, got := e.do("POST", "/api/chat", chatBody, hdr...)
			expect(t, resp, got, 200, `"done":true`)
			resp, got = e.do("GET", "/v1/models", "", hdr...)
			expect(t, resp, got, 200, `llama3`)
		})
	}
	t.Run("UsageRecorded", func(t *testing.T) {
		resp, got := e.do("POST", "/api/chat", chatBody, "Authorization", "Bearer "+key)
		expect(t, resp, got, 200, `"done":true`)
		var final struct {
			PromptEvalCount int64 `json:"prompt_eval_count"`
			EvalCount       int64 `json:"eval_count"`
		}
		json.Unmarshal([]byte(got), &final)
		if final.EvalCount == 0 {
			t.Fatalf("the fake node reported no tokens: %s", got)
		}
		var k account.Key
		waitFor(t, "usage in the store", func() bool {
			keys, err := e.store.Keys(context.Background())
			if err != nil || len(keys) != 1 {
				return false
			}
			k = keys[0]
			return k.Requests == 1
		})
		if k.ID != id || k.PromptTokens != final.PromptEvalCount || k.CompletionTokens != final.EvalCount || k.LastUsedAt == nil {
			t.Fatalf("usage %+v, want 1 request, %d+%d tokens, a last use", k, final.PromptEvalCount, final.EvalCount)
		}
	})
	t.Run("RevokedKeyIgnored", func(t *testing.T) {
		resp, got := e.do("DELETE", "/api/keys/"+strconv.FormatInt(id, 10), "", "Authorization", "Bearer "+admin)
		if resp.StatusCode != 204 {
			t.Fatalf("revoke: %d %s", resp.StatusCode, got)
		}
		resp, got = e.do("POST", "/api/chat", chatBody, "Authorization", "Bearer "+key)
		expect(t, resp, got, 200, `"done":true`)
		e.h.FlushUsage(context.Background())
		keys, _ := e.store.Keys(context.Background())
		if keys[0].Requests != 1 || !keys[0].Revoked() {
			t.Fatalf("after revoke: %+v, want usage unchanged", keys[0])
		}
		resp, got = e.do("DELETE", "/api/keys/999", "", "Authorization", "Bearer "+admin)
		expect(t, resp, got, 404, `{"error":"key not found: 999"}`)
	})
}

func TestAPIKeysRequired(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, func(c *app.AuthConfig) { c.RequireAPIKey = true })
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	id, key := createKey(t, e, admin, `{"name":"ci"}`)

	for name, hdr := range map[string][]string{
		"NoKey":      nil,
		"DummyKey":   {"Authorization", "Bearer ollama"},
		"UnknownKey": {"Authorization", "Bearer aivx_" + strings.Repeat("A", 32)},
	} {
		t.Run("Err"+name, func(t *testing.T) {
			resp, got := e.do("POST", "/api/chat", chatBody, hdr...)
			expect(t, resp, got, 401, `{"error":"`)
			resp, got = e.do("POST", "/v1/chat/completions", chatBody, hdr...)
			expect(t, resp, got, 401, `{"error":{`)
			resp, got = e.do("GET", "/api/tags", "", hdr...)
			expect(t, resp, got, 401, `{"error":"`)
		})
	}
	t.Run("Bearer", func(t *testing.T) {
		resp, got := e.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		expect(t, resp, got, 200, `"chat.completion"`)
	})
	t.Run("XAPIKey", func(t *testing.T) {
		resp, got := e.do("POST", "/api/chat", chatBody, "X-API-Key", key)
		expect(t, resp, got, 200, `"done":true`)
	})
	t.Run("KeyNextToAPlaceholder", func(t *testing.T) {
		// Clients that send both headers, one of them a placeholder.
		resp, got := e.do("POST", "/api/chat", chatBody, "X-API-Key", "dummy", "Authorization", "Bearer "+key)
		expect(t, resp, got, 200, `"done":true`)
		resp, got = e.do("POST", "/api/chat", chatBody, "X-API-Key", key, "Authorization", "Bearer sk-placeholder")
		expect(t, resp, got, 200, `"done":true`)
	})
	t.Run("LoggedInUser", func(t *testing.T) {
		resp, _ := e.do("POST", "/api/account/session", `{"username":"alice","password":"correct horse"}`)
		c := sessionCookieOf(t, resp)
		resp, got := e.do("GET", "/api/tags", "", "Cookie", c.Name+"="+c.Value)
		expect(t, resp, got, 200, `llama3`)
	})
	t.Run("ErrViewerChangesModels", func(t *testing.T) {
		// A viewer standing in for a key may use models, not change them.
		e.user("victor", account.RoleViewer, "viewer pass")
		viewer, _ := e.login("victor", "viewer pass")
		auth := []string{"Authorization", "Bearer " + viewer}
		resp, got := e.do("POST", "/api/chat", chatBody, auth...)
		expect(t, resp, got, 200, `"done":true`)
		resp, got = e.do("HEAD", "/api/blobs/sha256:"+strings.Repeat("0", 64), "", auth...)
		if resp.StatusCode == 401 || resp.StatusCode == 403 {
			t.Fatalf("a viewer's blob check: %d %s", resp.StatusCode, got)
		}
		for _, c := range [][3]string{
			{"POST", "/api/pull", `{"model":"llama3","stream":false}`},
			{"DELETE", "/api/delete", `{"model":"llama3"}`},
			{"POST", "/api/copy", `{"source":"llama3","destination":"mine"}`},
			{"POST", "/api/create", `{"model":"mine","from":"llama3"}`},
			{"POST", "/api/push", `{"model":"llama3"}`},
			{"POST", "/api/blobs/sha256:" + strings.Repeat("0", 64), "x"},
		} {
			resp, got := e.do(c[0], c[1], c[2], auth...)
			expect(t, resp, got, 403, `{"error":"admin role required"}`)
		}
		// An admin may, as a key may.
		resp, got = e.do("POST", "/api/copy", `{"source":"llama3","destination":"mine"}`, "Authorization", "Bearer "+admin)
		expect(t, resp, got, 200, "")
		resp, got = e.do("POST", "/api/copy", `{"source":"llama3","destination":"mine2"}`, "Authorization", "Bearer "+key)
		expect(t, resp, got, 200, "")
	})
	t.Run("ErrRevoked", func(t *testing.T) {
		resp, got := e.do("DELETE", "/api/keys/"+strconv.FormatInt(id, 10), "", "Authorization", "Bearer "+admin)
		if resp.StatusCode != 204 {
			t.Fatalf("revoke: %d %s", resp.StatusCode, got)
		}
		resp, got = e.do("POST", "/api/chat", chatBody, "Authorization", "Bearer "+key)
		expect(t, resp, got, 401, `invalid or revoked API key`)
	})
	t.Run("OpenRoutesStayOpen", func(t *testing.T) {
		resp, got := e.do("GET", "/api/health", "")
		expect(t, resp, got, 200, "{")
	})
}

// sharedLimits stands in for Redis: it counts calls and answers with wait
// or err.
type sharedLimits struct {
	mu    sync.Mutex
	calls []string
	wait  time.Duration
	err   error
}

func (l *sharedLimits) Take(_ context.Context, name string, perMinute, burst int) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf("%s %d/min burst %d", name, perMinute, burst))
	return l.wait, l.err
}

func (l *sharedLimits) Refund(ctx context.Context, name string, perMinute, burst int) error {
	_, err := l.Take(ctx, "refund "+name, perMinute, burst)
	return err
}

// With a shared limiter every replica spends one budget; when it fails
// each replica limits on its own, and says so once.
func TestAPIKeyRateLimitShared(t *testing.T) {
	t.Parallel()
	limits := &sharedLimits{}
	var logs testenv.Buffer
	e := newAuthEnvWith(t, nil, func(d *app.Deps) {
		d.Limits = limits
		d.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	id, key := createKey(t, e, admin, `{"name":"slow","rpm_limit":2}`)
	auth := []string{"Authorization", "Bearer " + key}

	resp, got := e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 200, "llama3")
	limits.mu.Lock()
	limits.wait = 1500 * time.Millisecond // another replica spent the rest
	limits.mu.Unlock()
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 429, `"message":"rate limit exceeded`)
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q, want 2 (1.5 s rounded up)", ra)
	}
	// The login spent the address's shared budget and one of the
	// username's failures, which it gave back once the password matched;
	// each request spent the key's.
	key1 := fmt.Sprintf("key:%d 2/min burst 2", id)
	if want := []string{"login:127.0.0.1 10/min burst 10", "loginfail:alice 3/min burst 5", "refund loginfail:alice 3/min burst 5", key1, key1}; !slices.Equal(limits.calls, want) {
		t.Fatalf("shared limiter calls %q, want %q", limits.calls, want)
	}

	limits.mu.Lock()
	limits.wait, limits.err = 0, errors.New("redis: connection refused")
	limits.mu.Unlock()
	for range 2 { // the replica's own budget of 2
		resp, got = e.do("GET", "/v1/models", "", auth...)
		expect(t, resp, got, 200, "llama3")
	}
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 429, "rate limit exceeded")
	if n := strings.Count(logs.String(), "shared rate limits unavailable"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	limits.mu.Lock()
	limits.err = nil
	limits.mu.Unlock()
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 200, "llama3")
	if !strings.Contains(logs.String(), "shared rate limits available again") {
		t.Fatalf("no recovery line:\n%s", logs.String())
	}
}

func TestAPIKeyRateLimit(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, nil)
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	_, key := createKey(t, e, admin, `{"name":"slow","rpm_limit":2}`)
	auth := []string{"Authorization", "Bearer " + key}

	for range 2 {
		resp, got := e.do("GET", "/v1/models", "", auth...)
		expect(t, resp, got, 200, "llama3")
	}
	resp, got := e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 429, `"message":"rate limit exceeded`)
	if !strings.HasPrefix(got, `{"error":{`) {
		t.Fatalf("429 on an OpenAI route in the Ollama shape: %s", got)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 30 {
		t.Fatalf("Retry-After %q, want 1..30 s", resp.Header.Get("Retry-After"))
	}
	resp, got = e.do("POST", "/api/chat", chatBody, auth...)
	expect(t, resp, got, 429, `{"error":"rate limit exceeded`)
	// Without the key the open route still answers (the limit is the key's).
	resp, got = e.do("GET", "/v1/models", "")
	expect(t, resp, got, 200, "llama3")

	e.clock.Advance(30 * time.Second)
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 200, "llama3")
	// Rejected requests are not counted as usage.
	e.h.FlushUsage(context.Background())
	keys, _ := e.store.Keys(context.Background())
	if keys[0].Requests != 3 {
		t.Fatalf("requests %d, want 3 (the 429s do not count)", keys[0].Requests)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	store, err := sqlite.Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	deps := app.Deps{Fleet: &staticStore{}, Statuses: memory.NewStatusBoard(), InFlight: memory.NewInFlight(),
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	if _, err := app.New(app.Config{Auth: app.AuthConfig{RequireAPIKey: true}}, deps); err == nil {
		t.Error("RequireAPIKey without an account store: want an error")
	}
	deps.Accounts = store
	if _, err := app.New(app.Config{Auth: app.AuthConfig{SecretKey: []byte("short")}}, deps); err == nil {
		t.Error("a short secret: want an error")
	}
}

// deafRevocations is a revocation channel whose listening is set by the
// test; announcements fail while failing is set, else go nowhere.
type deafRevocations struct {
	mu        sync.Mutex
	since     time.Time
	listening bool
	failing   bool
	announced []int64
}

func (d *deafRevocations) Revoked(_ context.Context, id int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failing {
		return errors.New("announce revoked key: unavailable: connection refused")
	}
	d.announced = append(d.announced, id)
	return nil
}

func (d *deafRevocations) ListeningSince() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.since, d.listening
}

func (d *deafRevocations) set(since time.Time, listening, failing bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.since, d.listening, d.failing = since, listening, failing
}

// A key revoked on another replica during a break in the revocations
// (Redis down or hanging) must stop working at once: while the break lasts
// the cache is not used, and after it what was cached before it is not
// trusted. Without a break the cache serves.
func TestAPIKeyCacheTrustedOnlyWhileListening(t *testing.T) {
	t.Parallel()
	rv := &deafRevocations{}
	e := newAuthEnvWith(t, func(c *app.AuthConfig) { c.RequireAPIKey = true }, func(d *app.Deps) { d.Revocations = rv })
	rv.set(e.clock.Now().Add(-time.Minute), true, false)
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	revokeElsewhere := func() (string, []string) {
		t.Helper()
		id, key := createKey(t, e, admin, `{"name":"elsewhere"}`)
		auth := []string{"Authorization", "Bearer " + key}
		resp, got := e.do("GET", "/v1/models", "", auth...)
		expect(t, resp, got, 200, "llama3") // now cached
		// Revoked by another replica, straight in the shared store; the
		// announcement does not arrive.
		if err := e.store.RevokeKey(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return key, auth
	}

	_, auth := revokeElsewhere()
	resp, got := e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 200, "llama3") // cached, and trusted: no break
	rv.set(time.Time{}, false, false)   // the break
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 401, "")

	// Revoked unheard, then the channel is back with nothing to say:
	// what was cached before the break is not trusted.
	rv.set(e.clock.Now().Add(-time.Minute), true, false)
	_, auth = revokeElsewhere()
	rv.set(e.clock.Now().Add(time.Millisecond), true, false) // listening again, from after the break
	resp, got = e.do("GET", "/v1/models", "", auth...)
	expect(t, resp, got, 401, "")
}

// A revocation that could not be announced is announced again once Redis
// answers.
func TestKeyRevocationAnnouncedAgain(t *testing.T) {
	t.Parallel()
	rv := &deafRevocations{failing: true, listening: true}
	e := newAuthEnvWith(t, nil, func(d *app.Deps) { d.Revocations = rv })
	e.user("alice", account.RoleAdmin, "correct horse")
	admin, _ := e.login("alice", "correct horse")
	id, _ := createKey(t, e, admin, `{"name":"x"}`)
	resp, got := e.do("DELETE", fmt.Sprintf("/api/keys/%d", id), "", "Authorization", "Bearer "+admin)
	expect(t, resp, got, 204, "")
	time.Sleep(1500 * time.Millisecond) // one retry, still failing
	rv.set(time.Time{}, true, false)
	waitFor(t, "the revocation announced again", func() bool {
		rv.mu.Lock()
		defer rv.mu.Unlock()
		return slices.Contains(rv.announced, id)
	})
}
