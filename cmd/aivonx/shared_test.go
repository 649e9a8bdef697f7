package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/internal/testenv"
)

// downBoard is a status board whose writes fail while down.
type downBoard struct {
	*memory.StatusBoard
	down bool
}

func (b *downBoard) WriteStatuses(ctx context.Context, statuses []fleet.Status) error {
	if b.down {
		return errors.New("write statuses: unavailable: connection refused")
	}
	return b.StatusBoard.WriteStatuses(ctx, statuses)
}

// TestSharedStatusLogsAnOutageOnce: a pass every few seconds through a
// Redis outage must not write a warning each time; the end is said too.
func TestSharedStatusLogsAnOutageOnce(t *testing.T) {
	logs := &testenv.Buffer{}
	hot := &downBoard{StatusBoard: memory.NewStatusBoard(), down: true}
	s := &sharedStatus{hot: hot, last: memory.NewStatusBoard(), log: slog.New(slog.NewJSONHandler(logs, nil))}
	pass := []fleet.Status{{NodeID: 1, Healthy: true}}
	for range 3 {
		if err := s.WriteStatuses(context.Background(), pass); err != nil {
			t.Fatal(err)
		}
	}
	hot.down = false
	if err := s.WriteStatuses(context.Background(), pass); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if strings.Count(out, "written to Postgres only") != 1 || strings.Count(out, "written to Redis again") != 1 {
		t.Fatalf("want one warning and one recovery line:\n%s", out)
	}
}
