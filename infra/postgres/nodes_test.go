package postgres_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

func TestStore_Nodes(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := newStore(t)

	t.Run("Empty", func(t *testing.T) {
		nodes, err := s.Nodes(ctx)
		if err != nil || len(nodes) != 0 {
			t.Fatalf("Nodes = %v, %v; want none", nodes, err)
		}
	})

	var a, b fleet.Node
	t.Run("Create", func(t *testing.T) {
		var err error
		a, err = s.CreateNode(ctx, fleet.Node{BaseURL: " GPU-1 ", Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		if a.ID == 0 || a.BaseURL != "http://gpu-1:11434" || a.Name != "gpu-1:11434" || !a.Enabled {
			t.Fatalf("created %+v: want an ID, the normalised URL and the default name", a)
		}
		if a.CreatedAt.IsZero() || !a.UpdatedAt.Equal(a.CreatedAt) || time.Since(a.CreatedAt) > time.Minute {
			t.Fatalf("timestamps %v / %v", a.CreatedAt, a.UpdatedAt)
		}
		b, err = s.CreateNode(ctx, fleet.Node{Name: "second", BaseURL: "https://gpu-2", Enabled: false})
		if err != nil {
			t.Fatal(err)
		}
		if b.ID <= a.ID || b.Name != "second" || b.BaseURL != "https://gpu-2:443" || b.Enabled {
			t.Fatalf("created %+v", b)
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		_, err := s.CreateNode(ctx, fleet.Node{BaseURL: "http://gpu-1:11434/"})
		if !errors.Is(err, fleet.ErrConflict) {
			t.Fatalf("duplicate URL: %v, want ErrConflict", err)
		}
		if !strings.Contains(err.Error(), "node with base URL http://gpu-1:11434 already exists") {
			t.Fatalf("message %q does not say what conflicted", err)
		}
	})

	t.Run("ErrValidation", func(t *testing.T) {
		for _, n := range []fleet.Node{
			{BaseURL: ""},
			{BaseURL: "ftp://gpu-3"},
			{BaseURL: "gpu-3", Name: strings.Repeat("x", 101)},
		} {
			_, err := s.CreateNode(ctx, n)
			var v *fleet.ValidationError
			if !errors.As(err, &v) {
				t.Errorf("CreateNode(%+v) = %v, want a *fleet.ValidationError", n, err)
			}
		}
	})

	t.Run("Get", func(t *testing.T) {
		got, err := s.Node(ctx, b.ID)
		if err != nil || got.ID != b.ID || got.BaseURL != b.BaseURL || !got.CreatedAt.Equal(b.CreatedAt) {
			t.Fatalf("Node(%d) = %+v, %v; want %+v", b.ID, got, err, b)
		}
		_, err = s.Node(ctx, b.ID+100)
		if !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("Node(missing) = %v, want ErrNotFound", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		nodes, err := s.Nodes(ctx)
		if err != nil || len(nodes) != 2 || nodes[0].ID != a.ID || nodes[1].ID != b.ID {
			t.Fatalf("Nodes = %+v, %v; want a, b by ID", nodes, err)
		}
	})

	t.Run("Update", func(t *testing.T) {
		upd := b
		upd.Name, upd.BaseURL, upd.Enabled = "renamed", "gpu-2:8080", true
		got, err := s.UpdateNode(ctx, upd)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "renamed" || got.BaseURL != "http://gpu-2:8080" || !got.Enabled {
			t.Fatalf("updated %+v", got)
		}
		if !got.CreatedAt.Equal(b.CreatedAt) || !got.UpdatedAt.After(b.UpdatedAt) {
			t.Fatalf("timestamps after update: created %v (was %v), updated %v (was %v)", got.CreatedAt, b.CreatedAt, got.UpdatedAt, b.UpdatedAt)
		}
		b = got
	})

	t.Run("UpdateErrConflict", func(t *testing.T) {
		upd := b
		upd.BaseURL = a.BaseURL
		_, err := s.UpdateNode(ctx, upd)
		if !errors.Is(err, fleet.ErrConflict) || !strings.Contains(err.Error(), a.BaseURL) {
			t.Fatalf("UpdateNode to a taken URL = %v, want ErrConflict naming %s", err, a.BaseURL)
		}
	})

	t.Run("UpdateErrNotFound", func(t *testing.T) {
		_, err := s.UpdateNode(ctx, fleet.Node{ID: b.ID + 100, BaseURL: "gpu-9"})
		if !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("UpdateNode(missing) = %v, want ErrNotFound", err)
		}
	})

	t.Run("UpdateErrValidation", func(t *testing.T) {
		_, err := s.UpdateNode(ctx, fleet.Node{ID: b.ID, BaseURL: "gpu-2/path"})
		var v *fleet.ValidationError
		if !errors.As(err, &v) || v.Field != "base_url" {
			t.Fatalf("UpdateNode(bad URL) = %v, want a base_url ValidationError", err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		if err := s.DeleteNode(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteNode(ctx, a.ID); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("second DeleteNode = %v, want ErrNotFound", err)
		}
		if _, err := s.Node(ctx, a.ID); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("Node(deleted) = %v, want ErrNotFound", err)
		}
		// Its URL is free again.
		if _, err := s.CreateNode(ctx, fleet.Node{BaseURL: a.BaseURL}); err != nil {
			t.Fatalf("re-create after delete: %v", err)
		}
	})
}

func TestStore_Settings(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := newStore(t)

	got, err := s.Settings(ctx)
	if err != nil || got != fleet.DefaultSettings() {
		t.Fatalf("Settings with no row = %+v, %v; want defaults", got, err)
	}

	saved, err := s.SaveSettings(ctx, fleet.Settings{Strategy: fleet.LowestLatency})
	if err != nil || saved.Strategy != fleet.LowestLatency {
		t.Fatalf("SaveSettings = %+v, %v", saved, err)
	}
	if got, err := s.Settings(ctx); err != nil || got != saved {
		t.Fatalf("Settings = %+v, %v; want %+v", got, err, saved)
	}

	// Zero fields take their defaults.
	saved, err = s.SaveSettings(ctx, fleet.Settings{})
	if err != nil || saved != fleet.DefaultSettings() {
		t.Fatalf("SaveSettings(zero) = %+v, %v; want defaults", saved, err)
	}
	if got, err := s.Settings(ctx); err != nil || got != fleet.DefaultSettings() {
		t.Fatalf("Settings = %+v, %v; want defaults", got, err)
	}

	t.Run("ErrValidation", func(t *testing.T) {
		_, err := s.SaveSettings(ctx, fleet.Settings{Strategy: "round_robin"})
		var v *fleet.ValidationError
		if !errors.As(err, &v) || v.Field != "strategy" {
			t.Fatalf("SaveSettings(bad strategy) = %v, want a strategy ValidationError", err)
		}
		if got, err := s.Settings(ctx); err != nil || got != fleet.DefaultSettings() {
			t.Fatalf("a refused save changed the settings: %+v, %v", got, err)
		}
	})
}
