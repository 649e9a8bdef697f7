package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/infra/sqlite"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check the deployment and explain each result (run this first when something is wrong)",
		Description: `Checks, in order: the effective configuration (secrets masked), the store
(the embedded SQLite file, or Postgres and its schema), Redis, the signing
secret, every node (probed directly: reachable, latency, version, models) and
the age of the health worker's last pass. Each failure comes with a one-line
fix. Exits non-zero when any check fails. Run it with the same flags and
environment as serve.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "url", EnvVars: []string{"AIVONX_DOCTOR_URL"},
				Usage: "a running proxy, asked for the worker's last pass in the embedded mode (default: serve's --addr on this machine)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, EnvVars: []string{"AIVONX_DOCTOR_TIMEOUT"}, Usage: "bound of each check"},
		}, serveFlags()...),
		Action: runDoctor,
	}
}

// doctor prints check results.
type doctor struct {
	w       io.Writer
	failed  int
	timeout time.Duration
}

func (d *doctor) ok(name, detail string) { fmt.Fprintf(d.w, "✓ %-14s %s\n", name, detail) }
func (d *doctor) warn(name, detail, fix string) {
	fmt.Fprintf(d.w, "! %-14s %s\n", name, detail)
	if fix != "" {
		fmt.Fprintf(d.w, "  %-14s fix: %s\n", "", fix)
	}
}
func (d *doctor) fail(name, detail, fix string) {
	d.failed++
	fmt.Fprintf(d.w, "✗ %-14s %s\n", name, detail)
	fmt.Fprintf(d.w, "  %-14s fix: %s\n", "", fix)
}

func (d *doctor) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, d.timeout)
}

func runDoctor(c *cli.Context) error {
	d := &doctor{w: c.App.Writer, timeout: c.Duration("timeout")}
	if d.w == nil {
		d.w = os.Stdout
	}
	dbURL, err := secret(c, databaseFlag)
	if err != nil {
		return err
	}
	redisURL, err := secret(c, redisFlag)
	if err != nil {
		return err
	}
	key, err := secret(c, secretKeyFlag)
	if err != nil {
		return err
	}
	mode := "embedded"
	if dbURL != "" || redisURL != "" {
		mode = "shared"
	}

	// Configuration.
	cfg := []string{"mode=" + mode}
	if mode == "embedded" {
		cfg = append(cfg, "data-dir="+dataDir(c))
	} else {
		cfg = append(cfg, "database-url="+maskURL(dbURL), "redis-url="+maskURL(redisURL), "redis-prefix="+c.String(redisPrefixFlag.Name))
	}
	cfg = append(cfg, "log-level="+c.String(logLevelFlag.Name), "health-interval="+c.Duration(healthEveryFlag.Name).String())
	if f := c.String(logFileFlag.Name); f != "" {
		cfg = append(cfg, "log-file="+f)
	} else {
		cfg = append(cfg, "log-file=(stdout only)")
	}
	if key != "" {
		cfg = append(cfg, "secret-key=***")
	}
	if cidrs := c.StringSlice(nodeAllowFlag.Name); len(cidrs) > 0 {
		cfg = append(cfg, "node-allow-cidr="+strings.Join(cidrs, ","))
	}
	if mode == "shared" && (dbURL == "" || redisURL == "") {
		d.fail("configuration", strings.Join(cfg, " "), "the shared mode needs both DATABASE_URL and REDIS_URL; unset both for the embedded mode")
		return d.result()
	}
	if err := checkServeFlags(c); err != nil {
		d.fail("configuration", strings.Join(cfg, " "), "serve would refuse to start: "+err.Error())
		return d.result()
	}
	d.ok("configuration", strings.Join(cfg, " "))

	// Store, schema, Redis; then the nodes and the last pass from the store.
	var nodes []fleet.Node
	nodesRead := false // a failed store is reported as such, not as an empty fleet
	var lastPass time.Time
	lastPassKnown := false
	switch mode {
	case "embedded":
		dir := dataDir(c)
		path := filepath.Join(dir, sqlite.FileName)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			d.warn("store", "no embedded store at "+path+" yet", "start `aivonx serve` once (it creates it), or pass the --data-dir serve uses")
			break
		}
		ctx, cancel := d.ctx(c.Context)
		store, err := sqlite.Open(ctx, dir, upgradeUnlessServed(dir))
		if err == nil {
			nodes, err = store.Nodes(ctx)
			store.Close()
		}
		cancel()
		if err != nil {
			d.fail("store", err.Error(), "the message says why; otherwise check that "+path+" is readable and writable by this user, and not damaged (sqlite3 "+path+" 'PRAGMA integrity_check')")
		} else {
			nodesRead = true
			d.ok("store", fmt.Sprintf("%s, %d node(s)", path, len(nodes)))
		}
		d.ok("redis", "not used in the embedded mode")
	case "shared":
		ctx, cancel := d.ctx(c.Context)
		pool, err := postgres.Open(ctx, dbURL)
		if err != nil {
			d.fail("database", err.Error(), "start Postgres or correct DATABASE_URL; test with: psql \"$DATABASE_URL\" -c 'SELECT 1'")
		} else {
			d.ok("database", "reachable")
			if err := postgres.SchemaCurrent(ctx, pool); err != nil {
				d.fail("schema", err.Error(), "run `aivonx migrate up` (serve and worker never migrate by themselves)")
			} else {
				d.ok("schema", "current")
				store := postgres.NewStore(pool)
				if nodes, err = store.Nodes(ctx); err != nil {
					d.fail("nodes", err.Error(), "see the database check above")
				} else {
					nodesRead = true
				}
				if statuses, err := store.Statuses(ctx); err == nil {
					lastPass, lastPassKnown = fleet.LastPass(statuses), true
				}
			}
			pool.Close()
		}
		cancel()
		ctx, cancel = d.ctx(c.Context)
		rc, err := redis.Open(ctx, redisURL)
		if err != nil {
			d.fail("redis", err.Error(), "start Redis or correct REDIS_URL; test with: redis-cli -u \"$REDIS_URL\" ping")
		} else {
			d.ok("redis", "reachable")
			cache := redis.NewStatusCache(rc, c.String(redisPrefixFlag.Name), time.Minute, nil)
			if t, err := cache.LastPass(ctx); err == nil && t.After(lastPass) {
				lastPass, lastPassKnown = t, true
			}
			rc.Close()
		}
		cancel()
	}

	// Secret.
	switch {
	case key != "":
		if len(key) < minSecretLen {
			d.fail("secret", fmt.Sprintf("AIVONX_SECRET_KEY is shorter than %d characters: serve refuses it", minSecretLen),
				"use 32 or more random characters: openssl rand -base64 48")
		} else {
			d.ok("secret", "AIVONX_SECRET_KEY is set")
		}
	case mode == "shared":
		d.fail("secret", "AIVONX_SECRET_KEY is not set (required in the shared mode: every replica signs with it)",
			"export AIVONX_SECRET_KEY=$(openssl rand -hex 32), or mount it and set AIVONX_SECRET_KEY_FILE")
	default:
		path := filepath.Join(dataDir(c), secretFileName)
		if _, err := os.Stat(path); err == nil {
			d.ok("secret", "generated secret in "+path)
		} else {
			d.ok("secret", "not set; serve generates one into "+path+" on first start")
		}
	}

	// Nodes, probed directly.
	if nodesRead && len(nodes) == 0 {
		d.warn("nodes", "no node configured", "add one: aivonx nodes add http://HOST:11434 (or POST /api/proxy/nodes)")
	}
	// Redirects are not followed, as the worker follows none.
	client := &http.Client{Timeout: d.timeout, Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, n := range nodes {
		d.probeNode(c.Context, client, n)
	}

	// The health worker's last pass.
	if !lastPassKnown && mode == "embedded" {
		lastPass, lastPassKnown = d.lastPassFromServe(c.Context, client, serveURL(c))
	}
	maxAge := 3 * c.Duration(healthEveryFlag.Name)
	switch {
	case !lastPassKnown:
		d.warn("worker", "last pass unknown: no running serve answered at "+serveURL(c), "start `aivonx serve`, or pass --url of a running one")
	case lastPass.IsZero():
		if len(nodes) > 0 {
			d.fail("worker", "no pass recorded yet", workerFix(mode))
		} else {
			d.ok("worker", "no pass yet (no nodes)")
		}
	default:
		age := time.Since(lastPass).Round(time.Second)
		if age > maxAge {
			d.fail("worker", fmt.Sprintf("last pass %s ago (stale after %s)", age, maxAge), workerFix(mode))
		} else {
			d.ok("worker", fmt.Sprintf("last pass %s ago", age))
		}
	}
	return d.result()
}

func workerFix(mode string) string {
	if mode == "embedded" {
		return "the embedded serve runs its own checks: make sure serve is running (and look at its log)"
	}
	return "start `aivonx worker` (or serve --with-worker); force one pass with `aivonx worker --once`"
}

func (d *doctor) result() error {
	if d.failed > 0 {
		return cli.Exit(fmt.Sprintf("%d check(s) failed\n", d.failed), 1)
	}
	fmt.Fprintln(d.w, "all checks passed")
	return nil
}

// probeNode checks one node as the worker does: liveness with latency,
// then its version and models.
func (d *doctor) probeNode(ctx context.Context, client *http.Client, n fleet.Node) {
	name := "node " + n.Name
	state := ""
	if !n.Enabled {
		state = " (disabled)"
	}
	get := func(path string, into any) (int, time.Duration, error) {
		ctx, cancel := d.ctx(ctx)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.BaseURL+path, nil)
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		took := time.Since(start)
		if into != nil && resp.StatusCode == http.StatusOK {
			err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(into)
		}
		return resp.StatusCode, took, err
	}
	status, latency, err := get("/", nil)
	fix := "check that Ollama runs on " + n.BaseURL + " and that this host can reach it (firewall, OLLAMA_HOST=0.0.0.0 on the node)"
	switch {
	case err != nil:
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		if n.Enabled {
			d.fail(name, n.BaseURL+state+": "+msg, fix)
		} else {
			d.warn(name, n.BaseURL+state+": "+msg, "")
		}
		return
	case status == http.StatusForbidden:
		d.fail(name, n.BaseURL+state+": HTTP 403", "Ollama refuses the Host header: let it listen on a non-loopback address (OLLAMA_HOST=0.0.0.0) or reach it by IP")
		return
	case status != http.StatusOK:
		d.fail(name, fmt.Sprintf("%s%s: HTTP %d at /", n.BaseURL, state, status), "is this an Ollama server? GET / should answer \"Ollama is running\"")
		return
	}
	var version struct {
		Version string `json:"version"`
	}
	var tags struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	_, _, _ = get("/api/version", &version)
	if _, _, err := get("/api/tags", &tags); err != nil {
		d.fail(name, n.BaseURL+state+": models unreadable: "+err.Error(), "check the node's Ollama log; GET /api/tags must answer JSON")
		return
	}
	models := make([]string, len(tags.Models))
	for i, m := range tags.Models {
		models[i] = m.Name
	}
	sort.Strings(models)
	list := strings.Join(models, ", ")
	if len(models) == 0 {
		list = "no models (pull one: POST /api/pull through the proxy)"
	}
	d.ok(name, fmt.Sprintf("%s%s: %s, Ollama %s, %s", n.BaseURL, state, latency.Round(100*time.Microsecond), orUnknown(version.Version), list))
}

func orUnknown(s string) string {
	if s == "" {
		return "version unknown"
	}
	return s
}

// lastPassFromServe asks a running proxy's /api/health.
func (d *doctor) lastPassFromServe(ctx context.Context, client *http.Client, base string) (time.Time, bool) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/health", nil)
	if err != nil {
		return time.Time{}, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return time.Time{}, false
	}
	defer resp.Body.Close()
	var body struct {
		Worker struct {
			LastPass *time.Time `json:"last_pass"`
		} `json:"worker"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return time.Time{}, false
	}
	if body.Worker.LastPass == nil {
		return time.Time{}, true
	}
	return *body.Worker.LastPass, true
}

// serveURL is where doctor finds a running serve: --url, else serve's own
// listen address (--addr, AIVONX_ADDR) on this machine.
func serveURL(c *cli.Context) string {
	if u := c.String("url"); u != "" {
		return u
	}
	host, port, err := net.SplitHostPort(c.String(addrFlag.Name))
	if err != nil {
		return "http://127.0.0.1:8000"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// maskURL hides the passwords in a URL (its user info and any *password*
// query parameter) or in a key=value connection string, which pgx accepts
// as well ("host=db user=app password=…").
func maskURL(raw string) string {
	if raw == "" {
		return "(unset)"
	}
	scheme := ""
	if !strings.Contains(raw, "://") {
		if !strings.ContainsAny(raw, "@") || strings.Contains(raw, "=") {
			return dsnPassword.ReplaceAllString(raw, "${1}***")
		}
		// user:password@host with no scheme, as --node takes it.
		scheme = "http://"
		raw = scheme + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable, hidden)"
	}
	const mask = "AIVONX-MASKED" // a placeholder url.URL escapes as it is
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), mask)
	}
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			if strings.Contains(strings.ToLower(k), "password") {
				q.Set(k, mask)
			}
		}
		u.RawQuery = q.Encode()
	}
	return strings.TrimPrefix(strings.ReplaceAll(u.String(), mask, "***"), scheme)
}

// dsnPassword is a password=value pair of a key=value connection string,
// the value bare or single-quoted.
var dsnPassword = regexp.MustCompile(`(?i)(\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)

// checkServeFlags checks what serve checks of its flags before it starts,
// so that doctor, run with serve's flags, does not pass a configuration
// serve refuses. The log file is created if missing, as serve would.
func checkServeFlags(c *cli.Context) error {
	if _, err := newLogger(c, io.Discard); err != nil {
		return err
	}
	if f := c.String(logFileFlag.Name); f != "" {
		if err := checkLogFile(f); err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
	}
	if _, err := observeConfig(c); err != nil {
		return err
	}
	if _, err := manageConfig(c); err != nil {
		return err
	}
	if _, err := trustedProxies(c); err != nil {
		return err
	}
	if s := c.String("strategy"); s != "" {
		if _, err := fleet.ParseStrategy(s); err != nil {
			return fmt.Errorf("--strategy: %w", err)
		}
	}
	for _, u := range nodeFlagURLs(c) {
		if _, err := fleet.NormalizeURL(u); err != nil {
			return fmt.Errorf("--node %q: %w", maskURL(u), err)
		}
	}
	return nil
}
