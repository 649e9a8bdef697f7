// Package sqlite is the embedded store of the default mode: nodes and
// runtime settings in one SQLite file under the data directory. SQLite
// (the pure-Go modernc.org/sqlite, so no cgo) is crash-safe, and in WAL mode
// several processes may open the file at once, which is what lets
// `aivonx nodes add` change the fleet of a running `aivonx serve`.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	modernc "modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Store keeps nodes and settings in SQLite. Safe for concurrent use by many
// goroutines and many processes.
type Store struct {
	db *sql.DB
}

// FileName is the database file inside the data directory.
const FileName = "aivonx.db"

// An UpgradeCheck is asked before Open migrates a store written by an
// older aivonx from schema version from to version to. Its error stops
// Open, which returns it: a CLI command must not migrate the store under an
// older serve that is running on it, which cannot use the new schema.
type UpgradeCheck func(from, to int) error

// Open opens (creating if needed) the store in dir. mayUpgrade, when not
// nil, is asked before an existing store is migrated.
func Open(ctx context.Context, dir string, mayUpgrade UpgradeCheck) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// Created here, not by SQLite, so that it is private as secret.key
	// is: SQLite would create it (and its -wal and -shm files, which take
	// the database's mode) readable by all.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f.Close()
	// The path is escaped: in SQLite's URI, % is an escape, ? starts the
	// parameters and # a fragment, and an unescaped one would put the
	// store somewhere else.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx, len(schema), mayUpgrade); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// A migration moves the schema one version on, inside the migrating
// transaction.
type migration func(ctx context.Context, tx *sql.Tx) error

// statements is a migration that is plain SQL.
func statements(query string) migration {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query)
		return err
	}
}

// schema is applied in order; PRAGMA user_version records how far.
var schema = []migration{
	statements(`CREATE TABLE nodes (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		name       TEXT NOT NULL,
		base_url   TEXT NOT NULL UNIQUE,
		enabled    INTEGER NOT NULL DEFAULT 1,
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);
	CREATE TABLE settings (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		value      TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);`),
	// 2: users and API keys (accounts.go). Times are UTC text of a fixed
	// width (accountTime), so that they compare as strings.
	statements(`CREATE TABLE users (
		id            INTEGER PRIMARY KEY AUTOINCREMENT,
		username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
		password_hash TEXT NOT NULL,
		role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
		created_at    TEXT NOT NULL,
		updated_at    TEXT NOT NULL
	);
	CREATE TABLE api_keys (
		id                INTEGER PRIMARY KEY AUTOINCREMENT,
		name              TEXT NOT NULL,
		prefix            TEXT NOT NULL,
		hash              TEXT NOT NULL UNIQUE,
		rpm_limit         INTEGER NOT NULL DEFAULT 0,
		created_at        TEXT NOT NULL,
		revoked_at        TEXT,
		requests          INTEGER NOT NULL DEFAULT 0,
		prompt_tokens     INTEGER NOT NULL DEFAULT 0,
		completion_tokens INTEGER NOT NULL DEFAULT 0,
		last_used_at      TEXT
	);`),
	// 3: the request log (rebuilt by 5). started_at is UTC text of a fixed
	// width (accountTime), so that it compares as a string.
	statements(`CREATE TABLE request_log (
		id                INTEGER PRIMARY KEY AUTOINCREMENT,
		started_at        TEXT    NOT NULL,
		request_id        TEXT    NOT NULL DEFAULT '',
		who               TEXT    NOT NULL DEFAULT '',
		client            TEXT    NOT NULL DEFAULT '',
		method            TEXT    NOT NULL,
		path              TEXT    NOT NULL,
		model             TEXT    NOT NULL DEFAULT '',
		node              TEXT    NOT NULL DEFAULT '',
		status            INTEGER NOT NULL,
		duration_ms       REAL    NOT NULL DEFAULT 0,
		ttfb_ms           REAL    NOT NULL DEFAULT 0,
		prompt_tokens     INTEGER NOT NULL DEFAULT 0,
		completion_tokens INTEGER NOT NULL DEFAULT 0,
		bytes             INTEGER NOT NULL DEFAULT 0,
		error             TEXT    NOT NULL DEFAULT ''
	);
	CREATE INDEX request_log_started_at_idx ON request_log (started_at DESC, id DESC);
	CREATE INDEX request_log_model_idx ON request_log (model, started_at DESC);
	CREATE INDEX request_log_node_idx ON request_log (node, started_at DESC);`),
	// 4: logouts void a user's earlier tokens (the token epoch).
	statements(`ALTER TABLE users ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0;`),
	// 5: the request log keyed by its start time (requests.go).
	rekeyRequestLog,
}

// migrate brings the schema to version target (len(schema) but in tests).
func (s *Store) migrate(ctx context.Context, target int, mayUpgrade UpgradeCheck) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if version > len(schema) {
		return fmt.Errorf("the data directory was written by a newer aivonx (schema %d > %d)", version, len(schema))
	}
	if version > 0 && version < target && mayUpgrade != nil {
		if err := mayUpgrade(version, target); err != nil {
			return err
		}
	}
	for ; version < target; version++ {
		if err := schema[version](ctx, tx); err != nil {
			return fmt.Errorf("migrate to %d: %w", version+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, version)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return tx.Commit()
}

const timeFormat = time.RFC3339Nano

func scanNode(row interface{ Scan(...any) error }) (fleet.Node, error) {
	var n fleet.Node
	var created, updated string
	if err := row.Scan(&n.ID, &n.Name, &n.BaseURL, &n.Enabled, &created, &updated); err != nil {
		return fleet.Node{}, err
	}
	n.CreatedAt, _ = time.Parse(timeFormat, created)
	n.UpdatedAt, _ = time.Parse(timeFormat, updated)
	return n, nil
}

const nodeColumns = `id, name, base_url, enabled, created_at, updated_at`

// Nodes returns every node ordered by ID.
func (s *Store) Nodes(ctx context.Context) ([]fleet.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, translate("list nodes", err)
	}
	defer rows.Close()
	nodes := []fleet.Node{}
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, translate("list nodes", err)
		}
		nodes = append(nodes, n)
	}
	return nodes, translate("list nodes", rows.Err())
}

// Node returns one node, or fleet.ErrNotFound.
func (s *Store) Node(ctx context.Context, id int64) (fleet.Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = ?`, id))
	return n, translate(fmt.Sprintf("node %d", id), err)
}

// CreateNode validates and inserts n. It returns a *fleet.ValidationError
// for bad input and fleet.ErrConflict when the base URL is taken.
func (s *Store) CreateNode(ctx context.Context, n fleet.Node) (fleet.Node, error) {
	if err := n.Validate(); err != nil {
		return fleet.Node{}, err
	}
	now := time.Now().UTC()
	n.CreatedAt, n.UpdatedAt = now, now
	res, err := s.db.ExecContext(ctx, `INSERT INTO nodes (name, base_url, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
		n.Name, n.BaseURL, n.Enabled, now.Format(timeFormat), now.Format(timeFormat))
	if err != nil {
		return fleet.Node{}, translate("create node "+n.BaseURL, err)
	}
	n.ID, err = res.LastInsertId()
	return n, translate("create node", err)
}

// UpdateNode validates and saves n (all fields). It returns
// fleet.ErrNotFound when n.ID does not exist.
func (s *Store) UpdateNode(ctx context.Context, n fleet.Node) (fleet.Node, error) {
	if err := n.Validate(); err != nil {
		return fleet.Node{}, err
	}
	n.UpdatedAt = time.Now().UTC()
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET name = ?, base_url = ?, enabled = ?, updated_at = ? WHERE id = ?`,
		n.Name, n.BaseURL, n.Enabled, n.UpdatedAt.Format(timeFormat), n.ID)
	if err != nil {
		return fleet.Node{}, translate("update node "+n.BaseURL, err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return fleet.Node{}, fmt.Errorf("node %d: %w", n.ID, fleet.ErrNotFound)
	}
	return s.Node(ctx, n.ID)
}

// DeleteNode removes a node, or returns fleet.ErrNotFound.
func (s *Store) DeleteNode(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM nodes WHERE id = ?`, id)
	if err != nil {
		return translate("delete node", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return fmt.Errorf("node %d: %w", id, fleet.ErrNotFound)
	}
	return nil
}

// Settings returns the saved runtime settings, or the defaults.
func (s *Store) Settings(ctx context.Context) (fleet.Settings, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE id = 1`).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.DefaultSettings(), nil
	}
	if err != nil {
		return fleet.Settings{}, translate("read settings", err)
	}
	st := fleet.DefaultSettings()
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return fleet.Settings{}, fmt.Errorf("read settings: %w", err)
	}
	return st, nil
}

// SaveSettings validates and stores the runtime settings.
func (s *Store) SaveSettings(ctx context.Context, st fleet.Settings) (fleet.Settings, error) {
	if err := st.Validate(); err != nil {
		return fleet.Settings{}, err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return fleet.Settings{}, fmt.Errorf("save settings: %w", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO settings (id, value, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		string(raw), time.Now().UTC().Format(timeFormat))
	return st, translate("save settings", err)
}

// translate maps driver errors to fleet's sentinels at this boundary.
func translate(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", op, fleet.ErrNotFound)
	case strings.Contains(err.Error(), "UNIQUE constraint failed"):
		return fmt.Errorf("%s: a node with this base URL already exists: %w", op, fleet.ErrConflict)
	case storeDown(err):
		return fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// storeDown reports whether err is the file's trouble rather than the
// query's: a full disk, an I/O error, a file made read-only or locked.
// Those are outages (503, try again), as a Postgres that is down is.
func storeDown(err error) bool {
	var se *modernc.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary result code
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}
