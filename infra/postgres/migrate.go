package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"path"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/aivonx/aivonx/migrations"
)

// ErrSchemaOutdated is returned (wrapped) by [SchemaCurrent] when migrations
// are pending. Its message tells the operator what to do.
var ErrSchemaOutdated = errors.New("database schema is out of date: run `aivonx migrate up`")

// versionTable is goose's bookkeeping table. It is unqualified on purpose:
// it lives in the first schema of the connection's search_path, next to the
// tables it describes, so that a schema per tenant or per test works.
const versionTable = "goose_db_version"

// Migration is one migration file and its state in the database.
type Migration struct {
	Version int64
	// Name is the file name, for example "00001_create_nodes.sql".
	Name    string
	Applied bool
	// AppliedAt is zero when the migration is pending (and for results of
	// MigrateDown).
	AppliedAt time.Time
}

// MigrateUp applies every pending migration, each in its own transaction,
// and returns the ones it applied (none when the schema is current; on an
// error, those applied before the failing one).
// Concurrent runs against the same schema are serialised by a PostgreSQL
// advisory lock: the second waits, then finds nothing to do.
func MigrateUp(ctx context.Context, dsn string) ([]Migration, error) {
	var out []Migration
	err := withProvider(ctx, dsn, func(p *goose.Provider) error {
		res, err := p.Up(ctx)
		if pe := (*goose.PartialError)(nil); errors.As(err, &pe) {
			res = pe.Applied
		}
		for _, r := range res {
			if r.Error == nil {
				out = append(out, Migration{Version: r.Source.Version, Name: path.Base(r.Source.Path), Applied: true})
			}
		}
		return err
	})
	if err != nil {
		return out, translate("migrate up", err, "")
	}
	return out, nil
}

// MigrateDown rolls back the most recently applied migration and returns
// it. It returns an error when no migration is applied.
func MigrateDown(ctx context.Context, dsn string) (Migration, error) {
	var out Migration
	err := withProvider(ctx, dsn, func(p *goose.Provider) error {
		r, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return errors.New("no migration is applied")
		}
		if err != nil {
			return err
		}
		out = Migration{Version: r.Source.Version, Name: path.Base(r.Source.Path)}
		return nil
	})
	return out, translate("migrate down", err, "")
}

// MigrationStatus lists every migration this build knows, in order, with
// whether it is applied.
func MigrationStatus(ctx context.Context, dsn string) ([]Migration, error) {
	var out []Migration
	err := withProvider(ctx, dsn, func(p *goose.Provider) error {
		sts, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range sts {
			out = append(out, Migration{
				Version:   s.Source.Version,
				Name:      path.Base(s.Source.Path),
				Applied:   s.State == goose.StateApplied,
				AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	return out, translate("migration status", err, "")
}

// SchemaCurrent returns nil when every migration of this build is applied
// in the pool's schema, and an error wrapping [ErrSchemaOutdated] otherwise
// (including on a database that was never migrated). It only reads: it
// never creates goose's version table nor takes the migration lock, so it is
// safe at every start-up, concurrently with a running `migrate up`. A schema
// newer than this build (applied by a newer release) counts as current.
func SchemaCurrent(ctx context.Context, pool *pgxpool.Pool) error {
	// The same test goose makes: the table in the current schema.
	const q = `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1)`
	var exists bool
	if err := pool.QueryRow(ctx, q, versionTable).Scan(&exists); err != nil {
		return translate("check schema", err, "")
	}
	if !exists {
		return fmt.Errorf("check schema: no migration applied: %w", ErrSchemaOutdated)
	}
	db := stdlib.OpenDBFromPool(pool) // closing db leaves the pool open
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return translate("check schema", err, "")
	}
	if pending {
		current, target, err := p.GetVersions(ctx)
		if err != nil {
			return translate("check schema", err, "")
		}
		return fmt.Errorf("check schema: database at version %d, this build needs %d: %w", current, target, ErrSchemaOutdated)
	}
	return nil
}

// withProvider opens a database/sql handle for dsn (goose works with
// database/sql; pgx's stdlib driver provides it) and runs fn with a goose
// provider over the embedded migrations, which runs migrations and status
// under a session advisory lock.
func withProvider(ctx context.Context, dsn string, fn func(*goose.Provider) error) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return errors.New("invalid database URL")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	locker, err := sessionLocker(ctx, db)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return err
	}
	return fn(p)
}

// sessionLocker returns goose's advisory-lock locker with a lock ID of this
// database and schema: runs against the same schema are serialised, while
// runs against other schemas (other deployments sharing a server, parallel
// tests) do not wait for each other. goose polls for the lock once a second
// (its minimum) for up to five minutes.
func sessionLocker(ctx context.Context, db *sql.DB) (lock.SessionLocker, error) {
	var where string
	err := db.QueryRowContext(ctx, "SELECT current_database() || '.' || coalesce(current_schema(), '')").Scan(&where)
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte("aivonx migrations " + where))
	return lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64())),
		lock.WithLockTimeout(1, 300),
		lock.WithUnlockTimeout(1, 60),
	)
}
