package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/worker"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the proxy (the Lambda handler when AWS_LAMBDA_RUNTIME_API is set)",
		Description: `With no database and Redis URLs, serve runs on the embedded default: nodes and
settings in a SQLite file under --data-dir, node status in memory, health checks
in-process. With DATABASE_URL and REDIS_URL it reads the fleet that the worker
keeps in Postgres and Redis, and shares in-flight counts with every replica.`,
		Flags:  serveFlags(),
		Action: runServe,
	}
}

// serveFlags are serve's flags; doctor takes them all too, so that it runs
// with the same command line as serve.
func serveFlags() []cli.Flag {
	return []cli.Flag{
		addrFlag,
		&cli.StringSliceFlag{Name: "node", EnvVars: []string{"AIVONX_NODES"},
			Usage: "an Ollama node URL to add to the store if missing (repeat, or comma-separated in the env var); with none and an empty store, http://127.0.0.1:11434"},
		&cli.StringFlag{Name: "strategy", EnvVars: []string{"AIVONX_STRATEGY"},
			Usage: "least_active or lowest_latency; saved as the runtime setting when given"},
		&cli.Int64Flag{Name: "max-body-bytes", Value: 64 << 20, EnvVars: []string{"AIVONX_MAX_BODY_BYTES"}, Usage: "largest request body accepted (413 above)"},
		&cli.DurationFlag{Name: "first-byte-timeout", Value: 5 * time.Minute, EnvVars: []string{"AIVONX_FIRST_BYTE_TIMEOUT"},
			Usage: "how long a node may take to send a stream's first token (model loads are slow), to take a request's body, or to fall silent mid-stream; answers that come whole are not bounded"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: 60 * time.Second, EnvVars: []string{"AIVONX_SHUTDOWN_TIMEOUT"},
			Usage: "on SIGTERM, how long in-flight streams may run before they are cut"},
		&cli.DurationFlag{Name: "read-header-timeout", Value: 10 * time.Second, EnvVars: []string{"AIVONX_READ_HEADER_TIMEOUT"},
			Usage: "how long a client may take to send its request headers (slow-loris guard)"},
		&cli.DurationFlag{Name: "body-idle-timeout", Value: 60 * time.Second, EnvVars: []string{"AIVONX_BODY_IDLE_TIMEOUT"},
			Usage: "how long a request body may stop arriving before the request ends with a 408 (a slow but steady upload is not cut)"},
		&cli.BoolFlag{Name: "with-worker", EnvVars: []string{"AIVONX_WITH_WORKER"},
			Usage: "in the shared mode, also run the health worker in this process (one-VM deployments)"},
		&cli.StringFlag{Name: "lambda-front", Value: "function-url", EnvVars: []string{"AIVONX_LAMBDA_FRONT"},
			Usage: "under Lambda: function-url (streaming), http-api or alb"},
		&cli.StringFlag{Name: "pprof-addr", EnvVars: []string{"AIVONX_PPROF_ADDR"},
			Usage: "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off by default"},
		dataDirFlag, databaseFlag, redisFlag, redisPrefixFlag, logLevelFlag,
		healthEveryFlag, modelsEveryFlag, riseFlag, fallFlag, lockTTLFlag, leaseTTLFlag,
		secretKeyFlag, requireAPIKeyFlag, corsOriginFlag, trustedProxyFlag, adminPasswordFlag,
		logFileFlag, nodeAllowFlag, metricsPrivateFlag, requestLogDaysFlag, requestLogMaxRowsFlag,
	}
}

func runServe(c *cli.Context) error {
	log, logs, closeLog, err := serveLogger(c)
	if err != nil {
		return err
	}
	defer closeLog()
	manage, err := manageConfig(c)
	if err != nil {
		return err
	}
	observe, err := observeConfig(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	b, err := openBackend(c, log)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.releaseDataDir != nil {
		// Released when shutdown starts, not at exit: a new serve may take
		// over (a restart) while this one drains, accepting nothing.
		stop := context.AfterFunc(c.Context, b.releaseDataDir)
		defer stop()
	}
	auth, err := authConfig(c, b, log)
	if err != nil {
		return err
	}
	if err := seedStore(c, b.store, b.mode == "embedded", log); err != nil {
		return err
	}

	cfg := app.Config{
		Version:          version,
		Mode:             b.mode,
		MaxBodyBytes:     c.Int64("max-body-bytes"),
		FirstByteTimeout: c.Duration("first-byte-timeout"),
		BodyIdleTimeout:  c.Duration("body-idle-timeout"),
		StatusMaxAge:     3 * c.Duration(healthEveryFlag.Name),
		Dependencies:     b.deps,
		Auth:             auth,
		Manage:           manage,
		Observe:          observe,
	}
	if inLambda() {
		cfg.Mode = "lambda"
	}
	deps := app.Deps{Fleet: b.store, Statuses: b.statuses, InFlight: b.inflight, Log: log, Admin: b.store, Accounts: b.accounts, Logs: logs, Requests: b.requests, Limits: b.limits}
	if b.revoked != nil {
		deps.Revocations = b.revoked
	}
	// Every mode can re-probe one node at once (after a pull); only the
	// embedded mode, or --with-worker, schedules whole passes here.
	w, err := newWorker(c, b, log)
	if err != nil {
		return err
	}
	deps.Refresher = w
	h, err := app.New(cfg, deps)
	if err != nil {
		return err
	}
	if b.revoked != nil {
		go b.revoked.Listen(ctx, h.ForgetKey) // keys revoked on other replicas or by the CLI
	}
	if inLambda() {
		// No background work between invocations: the status comes from the
		// scheduled worker function through Redis and Postgres. The batches
		// kept since the last flush are written when Lambda's SIGTERM ends
		// ctx, as at the end of a server's life.
		warm(ctx, h, log)
		err := startLambda(ctx, h, c.String("lambda-front"))
		flushAtExit(b, h, log)
		return err
	}

	// The embedded mode checks its own nodes; the shared mode leaves that to
	// `aivonx worker` unless asked to do both.
	if b.mode == "embedded" || c.Bool("with-worker") {
		// Its first pass runs before listening, so the first request has a
		// fleet.
		stop := w.Schedule(ctx, c.Duration(healthEveryFlag.Name))
		defer stop()
	}
	warm(ctx, h, log) // after the first pass: the view holds its statuses
	if addr := c.String("pprof-addr"); addr != "" {
		go servePprof(addr, log)
	}
	err = listen(ctx, c, h, app.ServerHeaderBytes(cfg), log)
	flushAtExit(b, h, log)
	return err
}

// warm reads the fleet before the first request, so that a replica can
// route from memory through a store outage that begins before it served.
func warm(ctx context.Context, h *app.Handler, log *slog.Logger) {
	if err := h.Warm(ctx); err != nil {
		log.Warn("the fleet could not be read at start; requests will read it again", "err", err.Error())
	}
}

// flushAtExit writes what the process still holds in memory: the release
// of its leases (other replicas stop counting them now, not after their
// TTL), API key usage and the request log.
func flushAtExit(b *backend, h *app.Handler, log *slog.Logger) {
	if f, ok := b.inflight.(interface{ Flush() }); ok {
		f.Flush()
	}
	if err := h.FlushUsage(context.Background()); err != nil {
		log.Warn("api key usage not written at shutdown", "err", err.Error())
	}
	if err := h.FlushRequests(context.Background()); err != nil {
		log.Warn("request log not written at shutdown", "err", err.Error())
	}
}

// servePprof exposes the runtime profiles on a separate listener, never on
// the proxy's own port.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof listening", "addr", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof", "err", err.Error())
	}
}

// listen serves HTTP until ctx ends, then stops accepting, lets in-flight
// streams finish up to the shutdown timeout, and cuts the rest.
// streamEnder is a handler whose streams can be told to end (app.Handler).
type streamEnder interface {
	http.Handler
	EndStreams()
}

// streamEndGrace is how long streams have, once told to end at the
// shutdown timeout, to write their last error line before the server
// closes: a stream notices at its next chunk.
const streamEndGrace = 3 * time.Second

func listen(ctx context.Context, c *cli.Context, h streamEnder, maxHeaderBytes int, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.Duration("read-header-timeout"),
		// Above the handler's own cap, so that it answers in the route's
		// error shape.
		MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout:    2 * time.Minute,
		// No WriteTimeout: a stream may run for many minutes.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ln, err := net.Listen("tcp", c.String(addrFlag.Name))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String(), "version", version)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	timeout := c.Duration("shutdown-timeout")
	log.Info("shutting down; waiting for in-flight requests", "timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Streams still running end with an error their clients see,
		// rather than a cut that looks like a complete answer.
		log.Warn("shutdown timeout: ending the streams still running", "timeout", timeout.String())
		h.EndStreams()
		gctx, gcancel := context.WithTimeout(context.Background(), streamEndGrace)
		defer gcancel()
		if err := srv.Shutdown(gctx); err != nil {
			log.Warn("in-flight requests cut", "err", err.Error())
			srv.Close()
		}
	}
	log.Info("stopped")
	return nil
}

func newWorker(c *cli.Context, b *backend, log *slog.Logger) (*worker.Worker, error) {
	return worker.New(worker.Config{
		ModelsEvery: c.Duration(modelsEveryFlag.Name),
		Rise:        c.Int(riseFlag.Name),
		Fall:        c.Int(fallFlag.Name),
	}, b.store, b.passes, b.lock, nil, log)
}

// localOllama is the node the embedded mode starts with when given none.
const localOllama = "http://127.0.0.1:11434"

// nodeFlagURLs are the URLs --node gives: repeated, or comma-separated in
// the environment variable.
func nodeFlagURLs(c *cli.Context) []string {
	var urls []string
	for _, v := range c.StringSlice("node") {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
	}
	return urls
}

// seedStore adds the --node URLs that the store lacks, saves --strategy when
// given, and in the embedded mode falls back to a local Ollama when the
// store has no node at all.
func seedStore(c *cli.Context, store nodeStore, embedded bool, log *slog.Logger) error {
	ctx := c.Context
	urls := nodeFlagURLs(c)
	existing, err := store.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("read nodes: %w", err)
	}
	if len(urls) == 0 && len(existing) == 0 && embedded {
		urls = []string{localOllama}
		// It is saved like any node, so say how to undo it: a later
		// --node adds to it rather than replacing it.
		log.Info("no node given and none stored: adding the local Ollama; remove it with `aivonx nodes rm ID` if there is none", "url", localOllama)
	}
	have := map[string]bool{}
	for _, n := range existing {
		have[n.BaseURL] = true
	}
	for _, u := range urls {
		norm, err := fleet.NormalizeURL(u)
		if err != nil {
			return fmt.Errorf("--node %q: %w", maskURL(u), err) // never echo a password
		}
		if have[norm] {
			continue
		}
		n, err := store.CreateNode(ctx, fleet.Node{BaseURL: norm, Enabled: true})
		if err != nil && !errors.Is(err, fleet.ErrConflict) {
			return fmt.Errorf("add node %s: %w", norm, err)
		}
		have[norm] = true
		log.Info("node added", "node", n.Name, "url", norm)
	}
	if s := c.String("strategy"); s != "" {
		strategy, err := fleet.ParseStrategy(s)
		if err != nil {
			return fmt.Errorf("--strategy: %w", err)
		}
		settings, err := store.Settings(ctx)
		if err != nil {
			return fmt.Errorf("read settings: %w", err)
		}
		settings.Strategy = strategy
		if _, err := store.SaveSettings(ctx, settings); err != nil {
			return fmt.Errorf("save settings: %w", err)
		}
	}
	return nil
}
