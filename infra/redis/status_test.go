package redis_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/internal/testenv"
)

func model(t *testing.T, raw string) fleet.Model {
	t.Helper()
	var m fleet.Model
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStatusCache(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, prefix := newClient(t)
	const ttl = 5 * time.Second
	sc := redis.NewStatusCache(c, prefix, ttl, nil)

	t.Run("Empty", func(t *testing.T) {
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("Statuses before any pass = %v, %v; want none and no error", got, err)
		}
		at, err := sc.LastPass(ctx)
		if err != nil || !at.IsZero() {
			t.Fatalf("LastPass before any pass = %v, %v; want zero", at, err)
		}
	})

	now := time.Now()
	raw := `{"name":"llama3:latest","size":4661224676,"modified_at":"2025-01-02T03:04:05Z","details":{"family":"llama"}}`
	pass := []fleet.Status{
		{NodeID: 2, Healthy: false, Reason: "connection refused", CheckedAt: now, Fails: 3},
		{
			NodeID: 1, Healthy: true, Latency: 1234567, Version: "0.17.4",
			Models: []fleet.Model{model(t, raw)}, Loaded: []fleet.Model{model(t, `{"name":"llama3:latest"}`)},
			CheckedAt: now, ModelsCheckedAt: now.Add(-time.Minute), PassedAt: now, Passes: 5,
		},
	}

	t.Run("RoundTrip", func(t *testing.T) {
		if err := sc.WriteStatuses(ctx, pass); err != nil {
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) != 2 || got[0].NodeID != 1 || got[1].NodeID != 2 {
			t.Fatalf("Statuses = %+v, %v; want nodes 1 and 2 in order", got, err)
		}
		g, w := got[0], pass[1]
		if !g.Healthy || g.Latency != w.Latency || g.Version != w.Version || !g.CheckedAt.Equal(w.CheckedAt) || !g.PassedAt.Equal(w.PassedAt) ||
			!g.ModelsCheckedAt.Equal(w.ModelsCheckedAt) || g.Passes != 5 || len(g.Models) != 1 || len(g.Loaded) != 1 {
			t.Errorf("status 1 = %+v\nwant %+v", g, w)
		}
		// Redis keeps each model object as the node sent it (key order included).
		if string(g.Models[0].Raw) != raw || g.Models[0].Name != "llama3:latest" {
			t.Errorf("model = %s, want %s", g.Models[0].Raw, raw)
		}
		if g := got[1]; g.Healthy || g.Reason != "connection refused" || g.Fails != 3 {
			t.Errorf("status 2 = %+v", g)
		}
		at, err := sc.LastPass(ctx)
		if err != nil || at.Before(now.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("LastPass = %v, %v; want about %v", at, err, now)
		}
		if pttl := c.PTTL(ctx, prefix+"fleet").Val(); pttl <= 0 || pttl > ttl {
			t.Errorf("TTL of the pass = %v, want (0, %v]", pttl, ttl)
		}
	})

	t.Run("MarkUnreachable", func(t *testing.T) {
		if err := sc.MarkUnreachable(ctx, 1, "connection refused"); err != nil {
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) != 2 {
			t.Fatalf("Statuses = %+v, %v", got, err)
		}
		if got[0].Healthy || got[0].Reason != "unreachable: connection refused" {
			t.Errorf("marked node = %+v, want unhealthy with the mark's reason", got[0])
		}
		if got[1].Reason != "connection refused" {
			t.Errorf("unmarked node changed: %+v", got[1])
		}
		// The worker reads the pass as written: a mark is no probe.
		if raw, err := sc.PassStatuses(ctx); err != nil || len(raw) != 2 || !raw[0].Healthy || raw[0].Reason != "" {
			t.Errorf("PassStatuses = %+v, %v; want node 1 as the pass wrote it", raw, err)
		}
		assertTTLs(t, c, prefix)
	})

	t.Run("NewerFailedCheckKeepsMark", func(t *testing.T) {
		// Still healthy under a fall threshold of 2, but the check failed:
		// the node stays out until one passes.
		failed := pass[1]
		failed.CheckedAt, failed.Passes, failed.Fails = time.Now().Add(time.Millisecond), 0, 1 // PassedAt stays before the mark
		if err := sc.WriteStatuses(ctx, []fleet.Status{failed}); err != nil {
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) == 0 || got[0].NodeID != 1 || got[0].Healthy {
			t.Fatalf("Statuses = %+v, %v; want node 1 still marked unreachable", got, err)
		}
	})

	t.Run("NewerCheckClearsMark", func(t *testing.T) {
		later := pass[1]
		later.CheckedAt = time.Now().Add(time.Millisecond)
		later.PassedAt = later.CheckedAt
		if err := sc.WriteStatuses(ctx, []fleet.Status{later}); err != nil {
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) == 0 || got[0].NodeID != 1 || !got[0].Healthy || got[0].Reason != "" {
			t.Fatalf("Statuses = %+v, %v; want node 1 healthy: its check is newer than the mark", got, err)
		}
		// One failed check after that (under the fall threshold) does not
		// bring the lifted mark back for the rest of its TTL.
		failed := later
		failed.CheckedAt, failed.Passes, failed.Fails = later.CheckedAt.Add(time.Millisecond), 0, 1
		if err := sc.WriteStatuses(ctx, []fleet.Status{failed}); err != nil {
			t.Fatal(err)
		}
		if got, err := sc.Statuses(ctx); err != nil || len(got) == 0 || got[0].NodeID != 1 || !got[0].Healthy {
			t.Fatalf("Statuses = %+v, %v; want node 1 still healthy: a check passed after the mark", got, err)
		}
	})

	// A replica re-probes node 2 and writes what it read before probing,
	// while the worker wrote a newer pass meanwhile: the newer check of
	// each node wins, and the pass's time is its oldest check.
	t.Run("ReprobeNeverUndoesANewerPass", func(t *testing.T) {
		base := time.Now().Add(time.Minute).Truncate(time.Millisecond)
		read := []fleet.Status{{NodeID: 1, Healthy: true, CheckedAt: base, PassedAt: base}, {NodeID: 2, Healthy: true, CheckedAt: base, PassedAt: base}}
		if err := sc.WriteStatuses(ctx, read); err != nil {
			t.Fatal(err)
		}
		newer := []fleet.Status{{NodeID: 1, Healthy: false, Reason: "connection refused", CheckedAt: base.Add(time.Second), Fails: 2},
			{NodeID: 2, Healthy: true, CheckedAt: base.Add(time.Second), PassedAt: base.Add(time.Second)}}
		if err := sc.WriteStatuses(ctx, newer); err != nil { // the worker's pass
			t.Fatal(err)
		}
		reprobed := []fleet.Status{read[0], {NodeID: 2, Healthy: true, CheckedAt: base.Add(2 * time.Second), PassedAt: base.Add(2 * time.Second)}}
		if err := sc.WriteStatuses(ctx, reprobed); err != nil { // the replica's, late
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		if err != nil || len(got) != 2 || got[0].Healthy || !got[0].CheckedAt.Equal(base.Add(time.Second)) || !got[1].CheckedAt.Equal(base.Add(2*time.Second)) {
			t.Fatalf("Statuses = %+v, %v; want node 1 as the worker found it (down), node 2 as re-probed", got, err)
		}
		if at, err := sc.LastPass(ctx); err != nil || !at.Equal(base.Add(time.Second)) {
			t.Errorf("LastPass = %v, %v; want the oldest check, %v", at, err, base.Add(time.Second))
		}
	})

	// A write that lacks a node keeps it while its check is recent (another
	// replica stored a new node after this one read) and drops it once its
	// check is older than the TTL (a deleted node, no longer probed).
	t.Run("AbsentNodes", func(t *testing.T) {
		recent, stale := time.Now().Truncate(time.Millisecond), time.Now().Add(-2*ttl).Truncate(time.Millisecond)
		if err := sc.WriteStatuses(ctx, []fleet.Status{{NodeID: 7, CheckedAt: stale}, {NodeID: 8, CheckedAt: recent}}); err != nil {
			t.Fatal(err)
		}
		if err := sc.WriteStatuses(ctx, []fleet.Status{{NodeID: 9, CheckedAt: recent}}); err != nil {
			t.Fatal(err)
		}
		got, err := sc.Statuses(ctx)
		var ids []int64
		for _, st := range got {
			ids = append(ids, st.NodeID)
		}
		if err != nil || slices.Contains(ids, 7) || !slices.Contains(ids, 8) || !slices.Contains(ids, 9) {
			t.Fatalf("nodes stored %v, %v; want 8 (recent, kept) and 9, not 7 (stale)", ids, err)
		}
	})

	assertTTLs(t, c, prefix)
}

// A mark counts for the TTL only, even while newer marks keep the hash
// alive; and a pass disappears after the TTL, so a dead worker's last word
// does not keep nodes healthy.
func TestStatusCache_Expiry(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, prefix := newClient(t)
	const ttl = 400 * time.Millisecond
	sc := redis.NewStatusCache(c, prefix, ttl, nil)
	old := time.Now().Add(-time.Hour)

	if err := sc.MarkUnreachable(ctx, 1, "refused"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl * 6 / 10)
	if err := sc.MarkUnreachable(ctx, 2, "reset"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl * 6 / 10) // mark 1 is now older than the TTL, mark 2 is not
	err := sc.WriteStatuses(ctx, []fleet.Status{
		{NodeID: 1, Healthy: true, CheckedAt: old},
		{NodeID: 2, Healthy: true, CheckedAt: old},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := sc.Statuses(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("Statuses = %+v, %v", got, err)
	}
	if !got[0].Healthy {
		t.Errorf("node 1 = %+v: its mark is older than the TTL and must be ignored", got[0])
	}
	if got[1].Healthy || got[1].Reason != "unreachable: reset" {
		t.Errorf("node 2 = %+v: its mark is recent", got[1])
	}

	eventually(t, 3*ttl, "the pass expires", func() bool {
		got, err := sc.Statuses(ctx)
		return err == nil && len(got) == 0
	})
	// The time of the last pass outlives the pass, for /api/health.
	if at, err := sc.LastPass(ctx); err != nil || at.IsZero() {
		t.Errorf("LastPass after the pass expired = %v, %v; want its time", at, err)
	}
}

func TestStatusCache_ErrUnavailable(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, err := redis.NewClient(fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := redis.NewStatusCache(c, "", 0, nil)
	if _, err := sc.Statuses(ctx); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("Statuses = %v, want ErrUnavailable", err)
	}
	if err := sc.WriteStatuses(ctx, nil); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("WriteStatuses = %v, want ErrUnavailable", err)
	}
	if err := sc.MarkUnreachable(ctx, 1, "x"); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("MarkUnreachable = %v, want ErrUnavailable", err)
	}
	if _, err := sc.LastPass(ctx); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("LastPass = %v, want ErrUnavailable", err)
	}
	if _, err := redis.Open(ctx, "redis://:secret@127.0.0.1:notaport"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open with a bad URL = %v, want an error without the password", err)
	}
}
