package postgres_test

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/internal/testenv"
	"github.com/aivonx/aivonx/migrations"
)

func migrationFiles(t *testing.T) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v, %v", files, err)
	}
	return files
}

// tables lists the tables of the connection's own schema.
func tables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, _ := pool.Query(testCtx(t), `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	files := migrationFiles(t)
	dsn := testenv.Postgres(t)
	pool := open(t, dsn)

	t.Run("StatusFresh", func(t *testing.T) {
		st, err := postgres.MigrationStatus(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != len(files) {
			t.Fatalf("status lists %d migrations, want %d", len(st), len(files))
		}
		for i, m := range st {
			if m.Applied || m.Name != files[i] || m.Version != int64(i+1) {
				t.Errorf("status[%d] = %+v, want %s pending", i, m, files[i])
			}
		}
	})

	t.Run("SchemaCurrentFresh", func(t *testing.T) {
		err := postgres.SchemaCurrent(ctx, pool)
		if !errors.Is(err, postgres.ErrSchemaOutdated) || !strings.Contains(err.Error(), "aivonx migrate up") {
			t.Fatalf("SchemaCurrent on a fresh schema = %v, want ErrSchemaOutdated", err)
		}
	})

	t.Run("Up", func(t *testing.T) {
		applied, err := postgres.MigrateUp(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != len(files) {
			t.Fatalf("applied %v, want all of %v", applied, files)
		}
		// goose's table lives next to ours, in the search_path schema.
		want := []string{"api_keys", "goose_db_version", "node_status", "nodes", "request_log", "settings", "users"}
		if got := tables(t, pool); !slices.Equal(got, want) {
			t.Fatalf("tables after up = %v, want %v", got, want)
		}
		if err := postgres.SchemaCurrent(ctx, pool); err != nil {
			t.Fatalf("SchemaCurrent after up: %v", err)
		}
		st, err := postgres.MigrationStatus(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st {
			if !m.Applied || m.AppliedAt.IsZero() {
				t.Errorf("after up: %+v, want applied", m)
			}
		}
	})

	t.Run("UpAgainDoesNothing", func(t *testing.T) {
		applied, err := postgres.MigrateUp(ctx, dsn)
		if err != nil || len(applied) != 0 {
			t.Fatalf("second up applied %v, %v; want nothing", applied, err)
		}
	})

	t.Run("Down", func(t *testing.T) {
		for i := len(files) - 1; i >= 0; i-- {
			m, err := postgres.MigrateDown(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != files[i] {
				t.Fatalf("down rolled back %s, want %s", m.Name, files[i])
			}
			// An old schema is refused.
			err = postgres.SchemaCurrent(ctx, pool)
			if !errors.Is(err, postgres.ErrSchemaOutdated) || !strings.Contains(err.Error(), "aivonx migrate up") {
				t.Fatalf("SchemaCurrent after down = %v, want ErrSchemaOutdated", err)
			}
		}
		if got := tables(t, pool); !slices.Equal(got, []string{"goose_db_version"}) {
			t.Fatalf("tables after down = %v, want only goose_db_version", got)
		}
		if _, err := postgres.MigrateDown(ctx, dsn); err == nil {
			t.Fatal("down with nothing applied: want an error")
		}
	})

	t.Run("UpAfterDown", func(t *testing.T) {
		applied, err := postgres.MigrateUp(ctx, dsn)
		if err != nil || len(applied) != len(files) {
			t.Fatalf("up after down applied %v, %v", applied, err)
		}
		if err := postgres.SchemaCurrent(ctx, pool); err != nil {
			t.Fatal(err)
		}
		s := postgres.NewStore(pool)
		if _, err := s.CreateNode(ctx, fleet.Node{BaseURL: "gpu-1", Enabled: true}); err != nil {
			t.Fatalf("CreateNode after up, down, up: %v", err)
		}
	})

	// During a rolling deploy the new release migrates first; replicas of
	// the old one must keep starting.
	t.Run("NewerSchemaIsCurrent", func(t *testing.T) {
		if _, err := pool.Exec(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, true)`); err != nil {
			t.Fatal(err)
		}
		if err := postgres.SchemaCurrent(ctx, pool); err != nil {
			t.Fatalf("SchemaCurrent on a newer schema = %v, want nil", err)
		}
	})
}

// Several `aivonx migrate up` at once (replicas of a deploy job) are
// serialised by the advisory lock: exactly one applies each migration, none
// fails, and the schema ends current.
func TestMigrateUp_Concurrent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	files := migrationFiles(t)
	dsn := testenv.Postgres(t)

	const runs = 3
	var wg sync.WaitGroup
	results := make([][]postgres.Migration, runs)
	errs := make([]error, runs)
	for i := range runs {
		wg.Go(func() { results[i], errs[i] = postgres.MigrateUp(ctx, dsn) })
	}
	wg.Wait()
	applied := 0
	for i := range runs {
		if errs[i] != nil {
			t.Errorf("run %d: %v", i, errs[i])
		}
		applied += len(results[i])
	}
	if applied != len(files) {
		t.Errorf("%d migrations applied in total, want %d (each exactly once)", applied, len(files))
	}
	pool := open(t, dsn)
	if err := postgres.SchemaCurrent(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var versions int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&versions); err != nil || versions != len(files) {
		t.Fatalf("goose_db_version has %d versions, %v; want %d", versions, err, len(files))
	}
}

// SchemaCurrent only reads: on a database that was never migrated it must
// not create goose's table (serve never migrates implicitly).
func TestSchemaCurrent_ReadOnly(t *testing.T) {
	t.Parallel()
	pool := open(t, testenv.Postgres(t))
	if err := postgres.SchemaCurrent(testCtx(t), pool); !errors.Is(err, postgres.ErrSchemaOutdated) {
		t.Fatalf("SchemaCurrent = %v, want ErrSchemaOutdated", err)
	}
	if got := tables(t, pool); len(got) != 0 {
		t.Fatalf("SchemaCurrent created %v", got)
	}
}
