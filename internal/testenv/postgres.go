package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DatabaseName is the database that throwaway servers create and whose DSN
// they hand out.
const DatabaseName = "aivonx_test"

// Postgres returns a pgx DSN (also accepted by pgx's database/sql driver and by
// libpq) to a fresh schema "t_<random>" that only this test uses: the DSN sets
// search_path to that schema, so unqualified names resolve there on every
// connection. The schema is dropped, with everything in it, when the test ends;
// close pools before that (register their cleanup after calling Postgres).
//
// The server is AIVONX_TEST_DATABASE_URL when set, otherwise a throwaway server
// shared by the whole test process (see the package documentation).
func Postgres(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(EnvDatabaseURL)
	if base == "" {
		base = sharedPG.url(tb, "PostgreSQL", LaunchPostgres)
	}

	schema := "t_" + randomHex(8)
	dsn, err := withSearchPath(base, schema)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	if err := execSQL(base, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("testenv: create schema on %s: %v", redact(base), err)
	}
	tb.Cleanup(func() {
		if err := execSQL(base, "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			tb.Logf("testenv: drop schema %s: %v (a connection still holds a lock?)", schema, err)
		}
	})
	return dsn
}

// execSQL runs sql on a short-lived connection to dsn.
func execSQL(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withSearchPath adds "-c search_path=<schema>" to the DSN's options
// parameter, which PostgreSQL applies at connection start for any client.
func withSearchPath(dsn, schema string) (string, error) {
	opt := "-c search_path=" + schema
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse database URL: %v", err)
		}
		q := u.Query()
		if old := q.Get("options"); old != "" {
			opt = old + " " + opt
		}
		q.Set("options", opt)
		// libpq does not read '+' as a space in URIs; %20 works everywhere.
		u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
		return u.String(), nil
	}
	if strings.Contains(dsn, "options=") {
		return "", fmt.Errorf("%s: use the URL form to combine options with the test schema", EnvDatabaseURL)
	}
	return dsn + " options='" + opt + "'", nil
}

// redact hides a password in a DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}

// PostgresServer is a PostgreSQL server owned by one test (or by one process,
// for the shared throwaway server). It keeps its port and data across
// Stop/Start, so the URL stays valid.
type PostgresServer struct {
	process // root: data/, postgres.log
	bindir  string
	cred    *syscall.Credential
	Version string // e.g. "15.14", from postgres --version
}

// StartPostgres starts a PostgreSQL server dedicated to this test, with a
// database [DatabaseName]; it is stopped and deleted when the test ends. Use it
// for tests that stop and restart the server; others should use [Postgres].
// Skipped (failed under CI=true) when PostgreSQL is not installed.
func StartPostgres(tb testing.TB) *PostgresServer {
	tb.Helper()
	s, err := LaunchPostgres()
	if err != nil {
		unavailable(tb, fmt.Errorf("PostgreSQL: %w", err))
	}
	s.ownedBy(tb)
	return s
}

// LaunchPostgres starts a throwaway PostgreSQL server outside of a test (the
// withservices command uses it). The caller must Close it. Errors wrap
// [ErrNotInstalled] when no PostgreSQL binaries are found.
func LaunchPostgres() (*PostgresServer, error) {
	sweepStale()
	bindir, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{process: process{name: "postgres", stopSig: syscall.SIGINT}, bindir: bindir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if s.cred, err = lookupCred("postgres"); err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user: %v", err)
		}
	}
	if out, err := exec.Command(filepath.Join(bindir, "postgres"), "--version").Output(); err == nil {
		// "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
		if f := strings.Fields(string(out)); len(f) >= 3 {
			s.Version = f[2]
		}
	}
	if s.root, err = makeRoot("pg", s.cred); err != nil {
		return nil, err
	}
	s.logPath = filepath.Join(s.root, "postgres.log")
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(s.root)
		}
	}()
	if err := s.initdb(); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		err = s.start()
		if err == nil {
			break
		}
		// Someone took the port between freePort and the server's bind: retry.
		if attempt >= 4 || !strings.Contains(err.Error(), "already in use") {
			return nil, err
		}
	}
	if err := execSQL(s.adminURL(), "CREATE DATABASE "+DatabaseName); err != nil {
		s.Stop()
		return nil, fmt.Errorf("create database: %v", err)
	}
	ok = true
	return s, nil
}

// URL returns the server's DSN, for database [DatabaseName] as user postgres.
func (s *PostgresServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, DatabaseName)
}

func (s *PostgresServer) adminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

func (s *PostgresServer) dataDir() string { return filepath.Join(s.root, "data") }

func (s *PostgresServer) initdb() error {
	logf, err := os.Create(filepath.Join(s.root, "initdb.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(s.bindir, "initdb"), "-D", s.dataDir(),
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync")
	s.prepare(cmd, logf)
	if err := startChild(cmd); err != nil {
		return fmt.Errorf("initdb: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, tailFrom(logf.Name(), 0, 20))
	}
	return nil
}

func (s *PostgresServer) prepare(cmd *exec.Cmd, out *os.File) {
	cmd.Dir = s.root
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	env := []string{"LC_ALL=C", "TZ=UTC"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "LC_") && !strings.HasPrefix(kv, "TZ=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
}

// Start starts the server again after Stop, on the same port and with the same
// data. It does nothing if the server is running. Like t.Fatal, call it from
// the test's goroutine.
func (s *PostgresServer) Start() {
	if err := s.start(); err != nil {
		s.fatal(err)
	}
}

func (s *PostgresServer) start() error {
	return s.launch(func(log *os.File) *exec.Cmd {
		cmd := exec.Command(filepath.Join(s.bindir, "postgres"),
			"-D", s.dataDir(),
			"-p", strconv.Itoa(s.port),
			"-k", s.dataDir(),
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "full_page_writes=off",
			"-c", "synchronous_commit=off",
			"-c", "max_connections=300",
			"-c", "shared_buffers=32MB",
		)
		s.prepare(cmd, log)
		return cmd
	}, func(ctx context.Context) error {
		conn, err := pgconn.Connect(ctx, s.adminURL())
		if err == nil {
			_ = conn.Close(context.Background())
		}
		return err
	}, 60*time.Second, 25*time.Millisecond)
}

// findPostgresBin returns the directory holding initdb and postgres: the
// newest /usr/lib/postgresql/<version>/bin, else the directory of initdb on
// PATH (through symlinks).
func findPostgresBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		ver := func(p string) float64 {
			v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
			return v
		}
		sort.Slice(matches, func(i, j int) bool { return ver(matches[i]) > ver(matches[j]) })
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no initdb under /usr/lib/postgresql/*/bin or on PATH and %s not set: %w", EnvDatabaseURL, ErrNotInstalled)
}

func lookupCred(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s: bad uid/gid %s/%s", name, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}
