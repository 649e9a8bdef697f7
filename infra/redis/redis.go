// Package redis keeps the state that many Aivonx replicas share and that
// may be lost at any time: the worker's last pass and the passive
// "unreachable" marks ([StatusCache]), the requests in flight as leases
// ([InFlight]) and the worker's lock ([WorkerLock]).
//
// Every key lives under one prefix ([DefaultPrefix] unless configured), so
// that [Flush] can delete this project's keys and nothing else, and every
// key that holds state expires by itself: a crashed process or a dead
// worker leaks nothing for longer than a TTL.
//
//	<prefix>fleet           the last pass, one JSON value        TTL: the status TTL
//	<prefix>fleet:pass      when the last pass was written       TTL: 24h
//	<prefix>unreachable     hash: node ID → "<unix ns>:<reason>" TTL: the status TTL
//	<prefix>inflight:<id>   sorted set: lease ID → expiry (ms)   TTL: the lease TTL
//	<prefix>worker          the worker lock's token              TTL: the lock TTL
//
// Errors are translated at this boundary: a Redis that cannot be reached is
// reported as [fleet.ErrUnavailable], so callers never compare go-redis
// errors. The clients passed in should come from [Open] or [NewClient],
// which make go-redis honour context deadlines: the short deadlines on the
// request path depend on it.
package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/app/fleet"
)

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "aivonx:"

// NewClient returns a client for the Redis named by url
// ("redis://[:password@]host:port/db", "rediss://…" for TLS) without
// connecting. The client honours context deadlines
// (ContextTimeoutEnabled) and fails fast when Redis is down: unless the URL
// says otherwise, one dial attempt of at most 2s and one retry per command
// (for a pooled connection that a Redis restart closed), where go-redis
// would spend seconds on backoffs. The caller must Close it.
func NewClient(url string) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("redis: invalid URL")
	}
	opt.ContextTimeoutEnabled = true
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 2 * time.Second
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 1
	}
	// Every command here answers in a millisecond or so; one that takes a
	// second is a Redis that hangs, and go-redis's default of 3 s (twice,
	// with the retry) would hold a health pass or a refresh that long.
	// Subscriptions wait without it. A read_timeout in the URL wins.
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = time.Second
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = time.Second
	}
	return goredis.NewClient(opt), nil
}

// Open is [NewClient] followed by a PING. Errors wrap fleet.ErrUnavailable
// when the server cannot be reached. A process that must start while Redis
// is down (everything here degrades) should use NewClient instead.
func Open(ctx context.Context, url string) (*goredis.Client, error) {
	c, err := NewClient(url)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, translate("open redis", err)
	}
	return c, nil
}

// DriverLogger routes go-redis's own log lines to a slog.Logger at debug
// level: install it with goredis.SetLogger(redis.DriverLogger{Log: log}).
// go-redis otherwise prints every failed dial to stderr, which repeats, once
// per request, the one warning [InFlight] logs per outage. A nil Log
// discards.
type DriverLogger struct{ Log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l DriverLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.Log != nil {
		l.Log.DebugContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), "component", "go-redis")
	}
}

// Flush deletes every key whose name starts with prefix, with SCAN and
// UNLINK in batches (never FLUSHDB: the database may be shared), and returns
// how many it deleted. The next worker pass refills the status and held
// leases come back with their next renewal; a worker holding the lock loses
// it, so another may start a pass before the current one ends. An empty
// prefix is refused.
func Flush(ctx context.Context, client *goredis.Client, prefix string) (deleted int, err error) {
	if prefix == "" {
		return 0, errors.New("flush: an empty prefix would delete every key")
	}
	match := globEscape(prefix) + "*"
	var cursor uint64
	for {
		keys, next, err := client.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return deleted, translate("flush", err)
		}
		if len(keys) > 0 {
			n, err := client.Unlink(ctx, keys...).Result()
			deleted += int(n)
			if err != nil {
				return deleted, translate("flush", err)
			}
		}
		if cursor = next; cursor == 0 {
			return deleted, nil
		}
	}
}

// globEscape quotes the characters SCAN MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func orDefault(prefix string) string {
	if prefix == "" {
		return DefaultPrefix
	}
	return prefix
}

// translate wraps err with a short lowercase operation name, and with
// fleet.ErrUnavailable when Redis could not be reached or answered too late.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if unreachable(err) {
		return fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func unreachable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, goredis.ErrPoolExhausted) ||
		errors.Is(err, goredis.ErrClosed) ||
		// The server is up but cannot serve yet (loading its dump after a
		// restart) or is a replica cut off from its primary.
		goredis.HasErrorPrefix(err, "LOADING") || goredis.HasErrorPrefix(err, "MASTERDOWN")
}
