package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// migrated returns the DSN of a fresh, migrated schema.
func migrated(t testing.TB) string {
	t.Helper()
	dsn := testenv.Postgres(t)
	if _, err := postgres.MigrateUp(testCtx(t), dsn); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return dsn
}

// open returns a pool on dsn, closed when the test ends (before testenv
// drops the schema).
func open(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := postgres.Open(testCtx(t), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a Store on a fresh, migrated schema.
func newStore(t testing.TB) *postgres.Store {
	t.Helper()
	return postgres.NewStore(open(t, migrated(t)))
}
