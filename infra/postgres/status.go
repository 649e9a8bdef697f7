package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/aivonx/aivonx/app/fleet"
)

type statusRow struct {
	NodeID          int64      `db:"node_id"`
	Healthy         bool       `db:"healthy"`
	LatencyNS       int64      `db:"latency_ns"`
	Version         string     `db:"version"`
	Models          []byte     `db:"models"`
	Loaded          []byte     `db:"loaded"`
	CheckedAt       *time.Time `db:"checked_at"`
	ModelsCheckedAt *time.Time `db:"models_checked_at"`
	PassedAt        *time.Time `db:"passed_at"`
	Reason          string     `db:"reason"`
	Passes          int        `db:"passes"`
	Fails           int        `db:"fails"`
}

// Statuses returns the last observed status of every node that has one,
// ordered by node ID. This is the copy of the worker's last pass that
// survives a Redis loss; it carries no unreachable marks.
func (s *Store) Statuses(ctx context.Context) ([]fleet.Status, error) {
	const q = `SELECT node_id, healthy, latency_ns, version, models, loaded,
			checked_at, models_checked_at, passed_at, reason, passes, fails
		FROM node_status ORDER BY node_id`
	rows, _ := s.pool.Query(ctx, q)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[statusRow])
	if err != nil {
		return nil, translate("list statuses", err, "")
	}
	out := make([]fleet.Status, len(rs))
	for i, r := range rs {
		st := fleet.Status{
			NodeID:  r.NodeID,
			Healthy: r.Healthy,
			Latency: time.Duration(r.LatencyNS),
			Version: r.Version,
			Reason:  r.Reason,
			Passes:  r.Passes,
			Fails:   r.Fails,
		}
		if r.CheckedAt != nil {
			st.CheckedAt = *r.CheckedAt
		}
		if r.ModelsCheckedAt != nil {
			st.ModelsCheckedAt = *r.ModelsCheckedAt
		}
		if r.PassedAt != nil {
			st.PassedAt = *r.PassedAt
		}
		if st.Models, err = decodeModels(r.Models); err != nil {
			return nil, fmt.Errorf("list statuses: node %d: models: %w", r.NodeID, err)
		}
		if st.Loaded, err = decodeModels(r.Loaded); err != nil {
			return nil, fmt.Errorf("list statuses: node %d: loaded: %w", r.NodeID, err)
		}
		out[i] = st
	}
	return out, nil
}

// WriteStatuses stores a pass: the status of each node in statuses replaces
// the node's previous one unless that one was checked later (a replica's
// re-probe of another node carries the statuses it read before probing,
// and must not undo a newer pass), in one statement. Statuses of nodes that do not
// exist (deleted since the pass began) are ignored; so are the earlier of
// two statuses for one node. Nodes absent from statuses keep their status.
// Models are stored as jsonb, which keeps each object's content but not its
// key order or spacing.
func (s *Store) WriteStatuses(ctx context.Context, statuses []fleet.Status) error {
	const q = `INSERT INTO node_status AS ns (node_id, healthy, latency_ns, version, models, loaded,
			checked_at, models_checked_at, passed_at, reason, passes, fails)
		SELECT s.node_id, s.healthy, s.latency_ns, s.version, s.models::jsonb, s.loaded::jsonb,
			s.checked_at, s.models_checked_at, s.passed_at, s.reason, s.passes, s.fails
		FROM unnest($1::bigint[], $2::boolean[], $3::bigint[], $4::text[], $5::text[], $6::text[],
				$7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::integer[], $12::integer[])
			AS s(node_id, healthy, latency_ns, version, models, loaded,
				checked_at, models_checked_at, passed_at, reason, passes, fails)
		JOIN nodes n ON n.id = s.node_id
		ON CONFLICT (node_id) DO UPDATE SET
			healthy = excluded.healthy, latency_ns = excluded.latency_ns, version = excluded.version,
			models = excluded.models, loaded = excluded.loaded, checked_at = excluded.checked_at,
			models_checked_at = excluded.models_checked_at, passed_at = excluded.passed_at,
			reason = excluded.reason, passes = excluded.passes, fails = excluded.fails
		WHERE ns.checked_at IS NULL OR excluded.checked_at >= ns.checked_at`
	if len(statuses) == 0 {
		return nil
	}
	// ON CONFLICT cannot update one row twice in a statement: keep the last
	// status of each node.
	last := make(map[int64]int, len(statuses))
	for i, st := range statuses {
		last[st.NodeID] = i
	}
	n := len(last)
	var (
		ids            = make([]int64, 0, n)
		healthy        = make([]bool, 0, n)
		latency        = make([]int64, 0, n)
		version        = make([]string, 0, n)
		models, loaded = make([]string, 0, n), make([]string, 0, n)
		checked        = make([]pgtype.Timestamptz, 0, n)
		modelsChecked  = make([]pgtype.Timestamptz, 0, n)
		passed         = make([]pgtype.Timestamptz, 0, n)
		reason         = make([]string, 0, n)
		passes, fails  = make([]int32, 0, n), make([]int32, 0, n)
	)
	for i, st := range statuses {
		if last[st.NodeID] != i {
			continue
		}
		m, err := encodeModels(st.Models)
		if err != nil {
			return fmt.Errorf("write statuses: node %d: models: %w", st.NodeID, err)
		}
		l, err := encodeModels(st.Loaded)
		if err != nil {
			return fmt.Errorf("write statuses: node %d: loaded: %w", st.NodeID, err)
		}
		ids = append(ids, st.NodeID)
		healthy = append(healthy, st.Healthy)
		latency = append(latency, int64(st.Latency))
		version = append(version, st.Version)
		models, loaded = append(models, m), append(loaded, l)
		checked = append(checked, timestamptz(st.CheckedAt))
		modelsChecked = append(modelsChecked, timestamptz(st.ModelsCheckedAt))
		passed = append(passed, timestamptz(st.PassedAt))
		reason = append(reason, st.Reason)
		passes, fails = append(passes, int32(st.Passes)), append(fails, int32(st.Fails))
	}
	var err error
	// A node deleted between the join and the foreign key check fails the
	// statement with 23503; run it again, now without that node.
	for attempt := 0; attempt < 3; attempt++ {
		_, err = s.pool.Exec(ctx, q, ids, healthy, latency, version, models, loaded,
			checked, modelsChecked, passed, reason, passes, fails)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
			break
		}
	}
	return translate("write statuses", err, "")
}

func timestamptz(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

func encodeModels(ms []fleet.Model) (string, error) {
	if len(ms) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(ms)
	return string(b), err
}

func decodeModels(b []byte) ([]fleet.Model, error) {
	var ms []fleet.Model
	if err := json.Unmarshal(b, &ms); err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return ms, nil
}
