package postgres_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/internal/testenv"
)

func TestOpen_ErrUnavailable(t *testing.T) {
	t.Parallel()
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=2", testenv.FreePort(t))
	_, err := postgres.Open(testCtx(t), dsn)
	if !errors.Is(err, fleet.ErrUnavailable) {
		t.Fatalf("Open on a closed port = %v, want ErrUnavailable", err)
	}
	if _, err := postgres.Open(testCtx(t), "postgres://u:secret@host:notaport/db"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("Open with a bad URL = %v, want an error that does not show the password", err)
	}
}

// While PostgreSQL is down, reads and admin writes fail with ErrUnavailable
// (the handler answers 503); once it is back, nothing written before is lost.
func TestStore_PostgresDown(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPostgres(t)
	ctx := testCtx(t)
	if _, err := postgres.MigrateUp(ctx, srv.URL()); err != nil {
		t.Fatal(err)
	}
	s := postgres.NewStore(open(t, srv.URL()))
	n, err := s.CreateNode(ctx, fleet.Node{BaseURL: "gpu-1", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	start := time.Now()
	if _, err := s.CreateNode(ctx, fleet.Node{BaseURL: "gpu-2"}); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("CreateNode with the server down = %v, want ErrUnavailable", err)
	}
	if _, err := s.Nodes(ctx); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("Nodes with the server down = %v, want ErrUnavailable", err)
	}
	if _, err := s.Settings(ctx); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("Settings with the server down = %v, want ErrUnavailable", err)
	}
	if err := s.WriteStatuses(ctx, []fleet.Status{{NodeID: n.ID, Healthy: true, CheckedAt: time.Now()}}); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("WriteStatuses with the server down = %v, want ErrUnavailable", err)
	}
	_, err = s.Node(ctx, n.ID)
	t.Logf("with the server down: %v", err)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %v: a dead database must fail fast", d)
	}

	srv.Start()
	nodes, err := s.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].ID != n.ID {
		t.Fatalf("Nodes after restart = %+v, %v; want the node written before", nodes, err)
	}
}
