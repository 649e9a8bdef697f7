package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/aivonx/aivonx/app/fleet"
)

// DefaultStatusTTL is the status TTL used when none is given: three passes
// of the worker's default 10-second health interval.
const DefaultStatusTTL = 30 * time.Second

// lastPassTTL is how long the time of the last pass is kept: long enough for
// /api/health to say "the last pass was 2 hours ago" rather than "unknown".
const lastPassTTL = 24 * time.Hour

// StatusCache is the hot copy of the observed fleet: the worker's last pass
// as one value, and the passive "unreachable" marks that proxies share. It
// satisfies app.StatusSource and worker.StatusStore. Safe for concurrent
// use.
type StatusCache struct {
	client *goredis.Client
	prefix string
	ttl    time.Duration
	log    *slog.Logger
}

// NewStatusCache returns a StatusCache whose keys start with prefix (empty
// means [DefaultPrefix]). ttl is how long a pass and a mark stay valid; it
// should be about three worker intervals, so that a dead worker's last pass
// disappears instead of keeping dead nodes looking healthy. Zero means
// [DefaultStatusTTL]. A nil log discards.
func NewStatusCache(client *goredis.Client, prefix string, ttl time.Duration, log *slog.Logger) *StatusCache {
	if ttl <= 0 {
		ttl = DefaultStatusTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix = orDefault(prefix)
	return &StatusCache{client: client, prefix: prefix, ttl: ttl, log: log}
}

func (c *StatusCache) passKey() string        { return c.prefix + "fleet" }
func (c *StatusCache) passTimeKey() string    { return c.prefix + "fleet:pass" }
func (c *StatusCache) unreachableKey() string { return c.prefix + "unreachable" }

// pass is the JSON value stored under <prefix>fleet.
type pass struct {
	WrittenAt time.Time      `json:"written_at"`
	Statuses  []fleet.Status `json:"statuses"`
}

// Statuses returns the last pass with the marks applied, in one round trip:
// a node whose mark still holds ([fleet.MarkHolds]: no check passed since)
// is reported with Healthy false and Reason "unreachable: <reason>". Marks older than the
// TTL are ignored. No pass (none written yet, or it expired) is not an
// error: the result is empty. Errors wrap fleet.ErrUnavailable when Redis
// cannot be reached.
func (c *StatusCache) Statuses(ctx context.Context) ([]fleet.Status, error) {
	return c.read(ctx, true)
}

// PassStatuses returns the last pass as the worker wrote it, without the
// marks (worker.PassReader).
func (c *StatusCache) PassStatuses(ctx context.Context) ([]fleet.Status, error) {
	return c.read(ctx, false)
}

func (c *StatusCache) read(ctx context.Context, withMarks bool) ([]fleet.Status, error) {
	var get *goredis.StringCmd
	var marks *goredis.MapStringStringCmd
	_, err := c.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		get = p.Get(ctx, c.passKey())
		if withMarks {
			marks = p.HGetAll(ctx, c.unreachableKey())
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, translate("read statuses", err)
	}
	raw, err := get.Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, translate("read statuses", err)
	}
	var p pass
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("read statuses: %w", err)
	}
	if withMarks {
		c.applyMarks(p.Statuses, marks.Val(), time.Now())
	}
	return p.Statuses, nil
}

func (c *StatusCache) applyMarks(statuses []fleet.Status, marks map[string]string, now time.Time) {
	if len(marks) == 0 {
		return
	}
	for i := range statuses {
		st := &statuses[i]
		v, ok := marks[strconv.FormatInt(st.NodeID, 10)]
		if !ok {
			continue
		}
		at, reason, ok := parseMark(v)
		if !ok {
			c.log.Debug("ignoring a malformed unreachable mark", "node_id", st.NodeID, "value", v)
			continue
		}
		if now.Sub(at) > c.ttl || !fleet.MarkHolds(at, *st) {
			continue
		}
		*st = fleet.Marked(*st, at, reason)
	}
}

func parseMark(v string) (time.Time, string, bool) {
	ns, reason, ok := strings.Cut(v, ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, n), reason, true
}

// WriteStatuses replaces the last pass with statuses (stored ordered by
// node ID), as one value that expires after the TTL, and records the pass's
// time (see [StatusCache.LastPass]). Per node the newest check wins: a
// status older than the one stored for its node (a replica's re-probe of
// another node, which carries the statuses it read before probing) keeps
// the stored one, so that it never undoes a newer pass. A stored node
// absent from statuses is kept while its check is younger than the TTL
// (another writer's new node), dropped after (a deleted node). Errors wrap
// fleet.ErrUnavailable when Redis cannot be reached.
func (c *StatusCache) WriteStatuses(ctx context.Context, statuses []fleet.Status) error {
	now := time.Now()
	key := c.passKey()
	write := func(tx *goredis.Tx) error {
		stored := map[int64]fleet.Status{}
		if raw, err := tx.Get(ctx, key).Bytes(); err == nil {
			var p pass
			if json.Unmarshal(raw, &p) == nil {
				for _, st := range p.Statuses {
					stored[st.NodeID] = st
				}
			}
		} else if !errors.Is(err, goredis.Nil) {
			return err
		}
		merged := make([]fleet.Status, 0, len(statuses))
		for _, st := range statuses {
			if old, ok := stored[st.NodeID]; ok && old.CheckedAt.After(st.CheckedAt) {
				st = old
			}
			merged = append(merged, st)
			delete(stored, st.NodeID)
		}
		// A node another writer stored after this one read (a node added
		// and probed meanwhile) is kept while its check is recent; a deleted
		// node's status, no longer probed, ages out.
		for _, old := range stored {
			if now.Sub(old.CheckedAt) < c.ttl {
				merged = append(merged, old)
			}
		}
		slices.SortStableFunc(merged, func(a, b fleet.Status) int { return cmp.Compare(a.NodeID, b.NodeID) })
		raw, err := json.Marshal(pass{WrittenAt: now, Statuses: merged})
		if err != nil {
			return err
		}
		// The pass's time is that of its oldest check: a write after one
		// node's re-probe carries the others' older checks and must not
		// make a stopped worker look alive.
		passTime := fleet.LastPass(merged)
		if passTime.IsZero() {
			passTime = now // a pass over no node
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, key, raw, c.ttl)
			p.Set(ctx, c.passTimeKey(), passTime.UnixMilli(), lastPassTTL)
			return nil
		})
		return err
	}
	var err error
	for range 5 { // another writer between the read and the write: again
		if err = c.client.Watch(ctx, write, key); !errors.Is(err, goredis.TxFailedErr) {
			break
		}
	}
	return translate("write statuses", err)
}

// MarkUnreachable records that a proxy failed to connect to the node, for
// every replica: until a check newer than the mark passes, or the TTL
// elapses, [StatusCache.Statuses] reports the node unhealthy. Errors wrap
// fleet.ErrUnavailable when Redis cannot be reached.
func (c *StatusCache) MarkUnreachable(ctx context.Context, nodeID int64, reason string) error {
	// Nanoseconds: a mark taken in the same millisecond as a check must
	// still compare as newer.
	v := strconv.FormatInt(time.Now().UnixNano(), 10) + ":" + reason
	_, err := c.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, c.unreachableKey(), strconv.FormatInt(nodeID, 10), v)
		// Redis 7.0 has no per-field TTL: the hash lives as long as its
		// newest mark may, and older marks are ignored by their time.
		p.PExpire(ctx, c.unreachableKey(), c.ttl)
		return nil
	})
	return translate("mark unreachable", err)
}

// LastPass returns when the worker's last full pass checked its nodes (the
// oldest check it wrote), or the zero time if
// none was written in the last 24 hours. Errors wrap fleet.ErrUnavailable
// when Redis cannot be reached.
func (c *StatusCache) LastPass(ctx context.Context) (time.Time, error) {
	ms, err := c.client.Get(ctx, c.passTimeKey()).Int64()
	if errors.Is(err, goredis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, translate("read last pass", err)
	}
	return time.UnixMilli(ms), nil
}
