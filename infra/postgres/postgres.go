// Package postgres stores the admin-owned fleet (nodes, settings) and the
// worker's last observed pass in PostgreSQL, with pgx. Its [Store] satisfies
// app.FleetStore and worker.StatusStore without importing either.
//
// The schema comes from package migrations and is applied only by
// [MigrateUp] (the `aivonx migrate` command); serve and the worker call
// [SchemaCurrent] at start-up and refuse to run on an old schema.
//
// Errors are translated at this boundary: a missing row is
// [fleet.ErrNotFound], a unique violation [fleet.ErrConflict], and a database
// that cannot be reached [fleet.ErrUnavailable], so callers never compare pgx
// errors.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aivonx/aivonx/app/fleet"
)

// defaultConnectTimeout bounds each connection attempt when the DSN sets no
// connect_timeout, so that a database that is down makes admin writes fail
// quickly with 503 instead of hanging on the operating system's TCP timeout.
const defaultConnectTimeout = 5 * time.Second

// Open connects a pool to the database named by dsn (a URL or key/value DSN,
// as pgx accepts) and pings it. The caller must Close the pool. Errors wrap
// [fleet.ErrUnavailable] when the server cannot be reached.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included.
		return nil, errors.New("open postgres: invalid database URL")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, translate("open postgres", err, "")
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, translate("open postgres", err, "")
	}
	return pool, nil
}

// translate is the one place where driver errors become fleet errors. op is
// a short lowercase operation name ("create node"); conflict, when not
// empty, says what a unique violation conflicted with ("node with base URL
// … already exists").
//
//   - pgx.ErrNoRows becomes "<op>: not found", matching fleet.ErrNotFound;
//   - SQLSTATE 23505 becomes "conflict: <conflict>", matching fleet.ErrConflict;
//   - a connection failure becomes "<op>: temporarily unavailable: <cause>",
//     matching fleet.ErrUnavailable and the cause;
//   - anything else becomes "<op>: <cause>".
func translate(op string, err error, conflict string) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: %w", op, fleet.ErrNotFound)
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		if conflict == "" {
			conflict = op + ": " + pgErr.ConstraintName
		}
		return fmt.Errorf("%w: %s", fleet.ErrConflict, conflict)
	case unreachable(err):
		return fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unreachable reports whether err means the server could not be reached or
// dropped the connection, rather than that it refused the statement.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01-03: the server is shutting
		// down or starting; 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" ||
			pgErr.Code == "57P02" || pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) ||
		errors.As(err, &netErr) ||
		// The database did not answer in time: to the caller, the same as down.
		pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
