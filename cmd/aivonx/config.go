package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/infra/sqlite"
	"github.com/aivonx/aivonx/worker"
)

// Flags shared by several commands.
var (
	addrFlag    = &cli.StringFlag{Name: "addr", Value: ":8000", EnvVars: []string{"AIVONX_ADDR"}, Usage: "listen address"}
	dataDirFlag = &cli.StringFlag{Name: "data-dir", Value: defaultDataDir, EnvVars: []string{"AIVONX_DATA_DIR"},
		Usage: "directory of the embedded store (used when no database URL is set)"}
	databaseFlag = &cli.StringFlag{Name: "database-url", EnvVars: []string{"DATABASE_URL", "AIVONX_DATABASE_URL"},
		Usage: "Postgres URL of the shared mode (serve and worker need --redis-url too; also read from DATABASE_URL_FILE)"}
	redisFlag = &cli.StringFlag{Name: "redis-url", EnvVars: []string{"REDIS_URL", "AIVONX_REDIS_URL"},
		Usage: "Redis URL for shared node status and in-flight leases (also read from REDIS_URL_FILE)"}
	redisPrefixFlag = &cli.StringFlag{Name: "redis-prefix", Value: "aivonx:", EnvVars: []string{"AIVONX_REDIS_PREFIX"},
		Usage: "prefix of every Redis key this deployment owns"}
	logLevelFlag = &cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"AIVONX_LOG_LEVEL"},
		Usage: "debug, info, warn or error"}
	healthEveryFlag = &cli.DurationFlag{Name: "health-interval", Value: 10 * time.Second, EnvVars: []string{"AIVONX_HEALTH_INTERVAL"},
		Usage: "how often nodes are probed for liveness and loaded models"}
	modelsEveryFlag = &cli.DurationFlag{Name: "models-interval", Value: 60 * time.Second, EnvVars: []string{"AIVONX_MODELS_INTERVAL"},
		Usage: "how often each node's model list and version are refreshed"}
	riseFlag = &cli.IntFlag{Name: "rise", Value: 2, EnvVars: []string{"AIVONX_RISE"},
		Usage: "passed probes in a row that bring an unhealthy node back"}
	fallFlag = &cli.IntFlag{Name: "fall", Value: 2, EnvVars: []string{"AIVONX_FALL"},
		Usage: "failed probes in a row that take a healthy node out"}
	leaseTTLFlag = &cli.DurationFlag{Name: "lease-ttl", Value: 30 * time.Second, EnvVars: []string{"AIVONX_LEASE_TTL"},
		Usage: "shared mode: an in-flight lease left by a killed process expires after this (live streams renew theirs)"}
	lockTTLFlag = &cli.DurationFlag{Name: "lock-ttl", Value: 30 * time.Second, EnvVars: []string{"AIVONX_LOCK_TTL"},
		Usage: "shared mode: another worker takes over the health passes this long after the lock holder died"}
)

func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String(logLevelFlag.Name))); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// secret returns the flag's value, or the content of the file named by
// <ENV>_FILE (Docker and Kubernetes secrets), for each of the flag's
// environment variables.
func secret(c *cli.Context, f *cli.StringFlag) (string, error) {
	if v := c.String(f.Name); v != "" {
		return v, nil
	}
	for _, env := range f.EnvVars {
		if path := os.Getenv(env + "_FILE"); path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("read %s_FILE: %w", env, err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", nil
}

// nodeStore is what the CLI and serve need of either store.
type nodeStore interface {
	app.FleetStore
	Node(ctx context.Context, id int64) (fleet.Node, error)
	CreateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
	UpdateNode(ctx context.Context, n fleet.Node) (fleet.Node, error)
	DeleteNode(ctx context.Context, id int64) error
	SaveSettings(ctx context.Context, s fleet.Settings) (fleet.Settings, error)
}

// backend is the storage of one deployment mode, wired to the interfaces of
// app and worker.
type backend struct {
	mode     string
	store    nodeStore
	accounts app.AccountStore
	requests app.RequestLog
	statuses app.StatusSource
	inflight app.InFlight
	limits   app.RateLimiter // nil: per-process limits
	revoked  *redis.KeyRevocations
	passes   worker.StatusStore
	lock     worker.Lock
	deps     []app.Dependency
	closers  []func()
	// releaseDataDir lets another serve take the embedded store (nil in
	// the shared mode); Close releases it too.
	releaseDataDir func()
}

func (b *backend) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

// openBackend opens the embedded store, or Postgres and Redis when both URLs
// are set. The schema must be current: serve and worker never migrate.
func openBackend(c *cli.Context, log *slog.Logger) (*backend, error) {
	dbURL, err := secret(c, databaseFlag)
	if err != nil {
		return nil, err
	}
	redisURL, err := secret(c, redisFlag)
	if err != nil {
		return nil, err
	}
	switch {
	case dbURL != "" && redisURL != "":
		return openShared(c, log, dbURL, redisURL)
	case dbURL != "" || redisURL != "":
		return nil, errors.New("the shared mode needs both --database-url (DATABASE_URL) and --redis-url (REDIS_URL)")
	}
	return openEmbedded(c, log)
}

// openEmbedded takes the data directory's serve lock, then opens the store
// (migrating it: the lock says no other serve is using it).
func openEmbedded(c *cli.Context, log *slog.Logger) (*backend, error) {
	dir := dataDir(c)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	unlock, err := lockDataDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, sqlite.FileName)
	wiped := emptyStore(path)
	store, err := sqlite.Open(c.Context, dir, nil)
	if err != nil {
		unlock()
		return nil, err
	}
	if wiped {
		log.Warn("the store was an empty file: started a new one; its nodes, users, keys and history are gone unless restored from a backup", "path", path)
	}
	board := memory.NewStatusBoard()
	var once sync.Once
	release := func() { once.Do(unlock) }
	return &backend{
		mode: "embedded", store: store, accounts: store, requests: store, statuses: board, inflight: memory.NewInFlight(), passes: board,
		deps:           []app.Dependency{{Name: "store", Check: store.Ping}},
		closers:        []func(){release, func() { store.Close() }},
		releaseDataDir: release,
	}, nil
}

// openStore opens only the admin store, for the CLI commands.
func openStore(c *cli.Context, log *slog.Logger) (nodeStore, func(), error) {
	dbURL, err := secret(c, databaseFlag)
	if err != nil {
		return nil, nil, err
	}
	if dbURL != "" {
		return openPostgresStore(c, log, dbURL)
	}
	dir := dataDir(c)
	path := filepath.Join(dir, sqlite.FileName)
	_, statErr := os.Stat(path)
	wiped := emptyStore(path)
	store, err := sqlite.Open(c.Context, dir, upgradeUnlessServed(dir))
	if err != nil {
		return nil, nil, err
	}
	if wiped {
		fmt.Fprintf(c.App.ErrWriter, "aivonx: the store at %s was an empty file: started a new one; restore it from a backup if it held nodes\n", path)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// Most likely the wrong directory (./data is relative to where the
		// command runs): say so, as what is written here serve never sees
		// unless it runs on this directory.
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		fmt.Fprintf(c.App.ErrWriter, "aivonx: no store was at %s: created a new one; serve uses it only with --data-dir %s\n", path, shellQuote(filepath.Dir(path)))
	}
	return store, func() { store.Close() }, nil
}

// emptyStore reports whether the store at path exists but holds no byte.
// SQLite takes such a file for a new database and says nothing; but the
// store is never left empty once opened (its schema is written at once), so
// an empty one was truncated or replaced (a full disk, a bad restore), and
// the operator must hear that the nodes, users and keys are gone.
func emptyStore(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == 0
}

// dataDir is --data-dir, whose default also stands for an empty value: an
// AIVONX_DATA_DIR set to nothing (a deployment's unset variable) means the
// default, not the current directory's "".
func dataDir(c *cli.Context) string {
	if dir := c.String(dataDirFlag.Name); dir != "" {
		return dir
	}
	return defaultDataDir // not dataDirFlag.Value, which urfave/cli sets from the environment
}

const defaultDataDir = "./data"
