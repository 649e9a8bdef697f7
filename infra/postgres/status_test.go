package postgres_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

func model(t *testing.T, raw string) fleet.Model {
	t.Helper()
	var m fleet.Model
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// sameJSON compares model lists by content: jsonb keeps what an object
// says, not its key order or spacing.
func sameJSON(t *testing.T, got, want []fleet.Model) bool {
	t.Helper()
	g, err1 := json.Marshal(got)
	w, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	var gv, wv any
	_ = json.Unmarshal(g, &gv)
	_ = json.Unmarshal(w, &wv)
	gb, _ := json.Marshal(gv)
	wb, _ := json.Marshal(wv)
	return string(gb) == string(wb)
}

func TestStore_Statuses(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := newStore(t)

	a, err := s.CreateNode(ctx, fleet.Node{BaseURL: "gpu-1", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateNode(ctx, fleet.Node{BaseURL: "gpu-2", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}

	if got, err := s.Statuses(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Statuses before any pass = %v, %v", got, err)
	}

	now := time.Now().Truncate(time.Microsecond) // PostgreSQL keeps microseconds
	pass := []fleet.Status{
		{
			NodeID: b.ID, Healthy: false, Reason: "connection refused", CheckedAt: now, Fails: 3,
		},
		{
			NodeID: a.ID, Healthy: true, Latency: 1234567 * time.Nanosecond, Version: "0.17.4",
			Models: []fleet.Model{
				model(t, `{"name":"llama3:latest","modified_at":"2025-01-02T03:04:05Z","size":4661224676,"details":{"family":"llama"}}`),
				model(t, `{"name":"qwen2:7b","size":1}`),
			},
			Loaded:          []fleet.Model{model(t, `{"name":"llama3:latest","size_vram":123}`)},
			CheckedAt:       now,
			ModelsCheckedAt: now.Add(-time.Minute),
			PassedAt:        now,
			Passes:          5,
		},
		{NodeID: a.ID + b.ID + 100, Healthy: true, CheckedAt: now}, // no such node: ignored
	}
	if err := s.WriteStatuses(ctx, pass); err != nil {
		t.Fatalf("WriteStatuses: %v", err)
	}
	got, err := s.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].NodeID != a.ID || got[1].NodeID != b.ID {
		t.Fatalf("Statuses = %+v; want a and b, by node ID", got)
	}
	ga, wa := got[0], pass[1]
	if !ga.Healthy || ga.Latency != wa.Latency || ga.Version != wa.Version || !ga.CheckedAt.Equal(wa.CheckedAt) ||
		!ga.ModelsCheckedAt.Equal(wa.ModelsCheckedAt) || !ga.PassedAt.Equal(wa.PassedAt) || ga.Passes != 5 || ga.Fails != 0 || ga.Reason != "" {
		t.Errorf("status of a = %+v\nwant %+v", ga, wa)
	}
	if !sameJSON(t, ga.Models, wa.Models) || !sameJSON(t, ga.Loaded, wa.Loaded) || ga.Models[0].Name != "llama3:latest" ||
		ga.Models[0].ModifiedAt != "2025-01-02T03:04:05Z" {
		t.Errorf("models of a = %s / %s", ga.Models, ga.Loaded)
	}
	gb := got[1]
	if gb.Healthy || gb.Reason != "connection refused" || gb.Fails != 3 || gb.Models != nil || gb.Loaded != nil ||
		!gb.ModelsCheckedAt.IsZero() || !gb.PassedAt.IsZero() || !gb.CheckedAt.Equal(now) {
		t.Errorf("status of b = %+v", gb)
	}

	t.Run("NextPassReplaces", func(t *testing.T) {
		later := now.Add(10 * time.Second)
		if err := s.WriteStatuses(ctx, []fleet.Status{{NodeID: b.ID, Healthy: true, CheckedAt: later, Passes: 1}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Statuses(ctx)
		if err != nil || len(got) != 2 {
			t.Fatalf("Statuses = %+v, %v", got, err)
		}
		if gb := got[1]; !gb.Healthy || gb.Reason != "" || gb.Fails != 0 || !gb.CheckedAt.Equal(later) {
			t.Errorf("status of b after the next pass = %+v", gb)
		}
		if !got[0].Healthy || got[0].Passes != 5 {
			t.Errorf("a node absent from a pass lost its status: %+v", got[0])
		}
		// A replica's re-probe of another node, written late, carries what
		// it read before: it must not undo this newer status.
		if err := s.WriteStatuses(ctx, []fleet.Status{{NodeID: b.ID, Healthy: false, Reason: "old", CheckedAt: now, Fails: 3}}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Statuses(ctx); err != nil || !got[1].Healthy || !got[1].CheckedAt.Equal(later) {
			t.Fatalf("an older status replaced a newer one: %+v, %v", got, err)
		}
	})

	t.Run("DuplicateNodeLastWins", func(t *testing.T) {
		err := s.WriteStatuses(ctx, []fleet.Status{
			{NodeID: a.ID, Healthy: false, Reason: "first", CheckedAt: now},
			{NodeID: a.ID, Healthy: true, Reason: "", CheckedAt: now, Passes: 9},
		})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.Statuses(ctx)
		if !got[0].Healthy || got[0].Passes != 9 {
			t.Errorf("status of a = %+v, want the last one written", got[0])
		}
	})

	t.Run("EmptyPass", func(t *testing.T) {
		if err := s.WriteStatuses(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DeleteNodeDropsStatus", func(t *testing.T) {
		if err := s.DeleteNode(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		got, err := s.Statuses(ctx)
		if err != nil || len(got) != 1 || got[0].NodeID != b.ID {
			t.Fatalf("Statuses after deleting a = %+v, %v", got, err)
		}
	})
}
