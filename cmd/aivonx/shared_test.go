package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

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

// hungBoard is a status board whose reads hang until the caller's deadline,
// as a Redis that stopped answering does.
type hungBoard struct{ *memory.StatusBoard }

func (b hungBoard) Statuses(ctx context.Context) ([]fleet.Status, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestSharedStatusFallbackHasItsOwnBudget: a Redis that hangs spends the
// caller's whole deadline; Postgres, healthy, must still answer.
func TestSharedStatusFallbackHasItsOwnBudget(t *testing.T) {
	last := memory.NewStatusBoard()
	if err := last.WriteStatuses(context.Background(), []fleet.Status{{NodeID: 7, Healthy: true}}); err != nil {
		t.Fatal(err)
	}
	s := &sharedStatus{hot: hungBoard{memory.NewStatusBoard()}, last: deadlineBoard{last}, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got, err := s.Statuses(ctx)
	if err != nil || len(got) != 1 || got[0].NodeID != 7 {
		t.Fatalf("statuses after a hung Redis: %+v, %v; want Postgres's", got, err)
	}
}

// deadlineBoard fails a read whose context is already done, as a database
// query does.
type deadlineBoard struct{ *memory.StatusBoard }

func (b deadlineBoard) Statuses(ctx context.Context) ([]fleet.Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.StatusBoard.Statuses(ctx)
}
