package testenv_test

import (
	"context"
	"database/sql"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func pool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(ctx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func currentSchema(t *testing.T, p *pgxpool.Pool) string {
	t.Helper()
	var s string
	if err := p.QueryRow(ctx(t), "SELECT current_schema()").Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPostgresIsolatedSchema(t *testing.T) {
	dsnA := testenv.Postgres(t)
	dsnB := testenv.Postgres(t)
	a, b := pool(t, dsnA), pool(t, dsnB)

	schemaA, schemaB := currentSchema(t, a), currentSchema(t, b)
	if !strings.HasPrefix(schemaA, "t_") || !strings.HasPrefix(schemaB, "t_") || schemaA == schemaB {
		t.Fatalf("schemas %q and %q: want two different t_* schemas", schemaA, schemaB)
	}

	// Every pooled connection uses the schema, not only the first.
	conns := make([]*pgxpool.Conn, 0, 3)
	for range 3 {
		c, err := a.Acquire(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var s string
		if err := c.QueryRow(ctx(t), "SELECT current_schema()").Scan(&s); err != nil || s != schemaA {
			t.Fatalf("pooled connection schema %q, %v; want %q", s, err, schemaA)
		}
	}
	for _, c := range conns {
		c.Release()
	}

	if _, err := a.Exec(ctx(t), "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var where string
	if err := a.QueryRow(ctx(t), "SELECT table_schema FROM information_schema.tables WHERE table_name = 'items' AND table_schema = current_schema()").Scan(&where); err != nil || where != schemaA {
		t.Fatalf("items in %q, %v; want %q", where, err, schemaA)
	}
	if _, err := b.Exec(ctx(t), "SELECT * FROM items"); err == nil {
		t.Fatal("table from schema A visible through schema B's DSN")
	}

	// pgx's database/sql driver honours the DSN's search_path too.
	db, err := sql.Open("pgx", dsnA)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx(t), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 1 {
		t.Fatalf("database/sql: count %d, %v; want 1", n, err)
	}

	// A plain pgx connection as well.
	conn, err := pgx.Connect(ctx(t), dsnA)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx(t), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 1 {
		t.Fatalf("pgx.Connect: count %d, %v; want 1", n, err)
	}
}

func TestPostgresSchemaDropped(t *testing.T) {
	var dsn, schema string
	t.Run("inner", func(t *testing.T) {
		dsn = testenv.Postgres(t)
		p := pool(t, dsn)
		schema = currentSchema(t, p)
		if _, err := p.Exec(ctx(t), "CREATE TABLE x (id int)"); err != nil {
			t.Fatal(err)
		}
	})
	p := pool(t, dsn) // the connection still works, its schema is gone
	var exists bool
	if err := p.QueryRow(ctx(t), "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("schema %s still exists after its test ended", schema)
	}
}

func TestRedisPrefixCleanup(t *testing.T) {
	var url, prefix string
	var other string
	url2, prefix2 := testenv.Redis(t)
	t.Run("inner", func(t *testing.T) {
		url, prefix = testenv.Redis(t)
		if url != url2 || prefix == prefix2 || !strings.HasPrefix(prefix, "aivonxtest:") || !strings.HasSuffix(prefix, ":") {
			t.Fatalf("url %q prefix %q vs url %q prefix %q", url, prefix, url2, prefix2)
		}
		c := client(t, url)
		for i := range 2500 { // more than one SCAN page
			if err := c.Set(ctx(t), prefix+"k"+string(rune('a'+i%26))+strings.Repeat("x", i/26), "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		other = prefix2 + "keep"
		if err := c.Set(ctx(t), other, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	c := client(t, url)
	keys, err := c.Keys(ctx(t), prefix+"*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("after cleanup: %d keys with %s, %v", len(keys), prefix, err)
	}
	if n, err := c.Exists(ctx(t), other).Result(); err != nil || n != 1 {
		t.Fatalf("another test's key was deleted: %d, %v", n, err)
	}
}

func client(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStartRedisRestart(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedis(t)
	url := s.URL()
	c := client(t, url)
	if err := c.Set(ctx(t), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if conn, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0"), time.Second); err == nil {
		conn.Close()
		t.Fatal("redis still accepts connections while stopped")
	}
	s.Stop() // idempotent
	s.Start()
	if s.URL() != url {
		t.Fatalf("URL changed: %s -> %s", url, s.URL())
	}
	if err := c.Set(ctx(t), "k2", "v", 0).Err(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestStartPostgresRestart(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := testenv.StartPostgres(t)
	t.Logf("dedicated PostgreSQL %s ready in %v", s.Version, time.Since(start).Round(time.Millisecond))
	url := s.URL()
	p := pool(t, url)
	if _, err := p.Exec(ctx(t), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := p.Ping(ctx(t)); err == nil {
		t.Fatal("ping succeeded while stopped")
	}
	start = time.Now()
	s.Start()
	t.Logf("restart in %v", time.Since(start).Round(time.Millisecond))
	if s.URL() != url {
		t.Fatalf("URL changed: %s -> %s", url, s.URL())
	}
	var v string
	if err := p.QueryRow(ctx(t), "SELECT v FROM kept").Scan(&v); err != nil || v != "hello" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
}

func TestFreePort(t *testing.T) {
	if p := testenv.FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("port %d", p)
	}
}
