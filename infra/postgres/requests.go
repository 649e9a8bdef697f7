package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/aivonx/aivonx/app/history"
)

// The request log methods of Store (migration 00003_request_log.sql). They
// satisfy app.RequestLog.

var requestLogColumns = []string{"started_at", "request_id", "who", "client", "method", "path", "model", "node",
	"status", "duration_ms", "ttfb_ms", "prompt_tokens", "completion_tokens", "bytes", "error"}

// RecordRequests inserts the records with COPY, in one round trip. Rows of
// one batch get increasing IDs in the order given.
func (s *Store) RecordRequests(ctx context.Context, records []history.Record) error {
	if len(records) == 0 {
		return nil
	}
	_, err := s.pool.CopyFrom(ctx, pgx.Identifier{"request_log"}, requestLogColumns,
		pgx.CopyFromSlice(len(records), func(i int) ([]any, error) {
			r := records[i].Clean()
			return []any{r.Time, r.RequestID, r.Who, r.Client, r.Method, r.Path, r.Model, r.Node,
				int32(r.Status), r.DurationMS, r.TTFBMS, r.PromptTokens, r.CompletionTokens, r.Bytes, r.Error}, nil
		}))
	return translate("record requests", err, "")
}

// Requests returns the records that match q, newest first, at most q.Limit
// (capped at history.MaxLimit+1) after skipping q.Offset.
func (s *Store) Requests(ctx context.Context, q history.Query) ([]history.Record, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if q.Model != "" {
		add("model = ?", q.Model)
	}
	if q.Node != "" {
		add("node = ?", q.Node)
	}
	if q.Who != "" {
		add("who = ?", q.Who)
	}
	if q.StatusMin != 0 {
		add("status >= ?", q.StatusMin)
	}
	if q.StatusMax != 0 {
		add("status <= ?", q.StatusMax)
	}
	if q.Failed {
		where = append(where, "(status >= 400 OR error <> '')")
	}
	if !q.Since.IsZero() {
		add("started_at >= ?", q.Since)
	}
	if !q.Until.IsZero() {
		add("started_at <= ?", q.Until)
	}
	sql := `SELECT id, started_at, request_id, who, client, method, path, model, node, status,
		duration_ms, ttfb_ms, prompt_tokens, completion_tokens, bytes, error FROM request_log`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	limit := min(max(q.Limit, 0), history.MaxLimit+1)
	sql += " ORDER BY started_at DESC, id DESC LIMIT " + strconv.Itoa(limit) + " OFFSET " + strconv.Itoa(max(q.Offset, 0))
	rows, _ := s.pool.Query(ctx, sql, args...)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (history.Record, error) {
		var r history.Record
		var status int32
		err := row.Scan(&r.ID, &r.Time, &r.RequestID, &r.Who, &r.Client, &r.Method, &r.Path, &r.Model, &r.Node, &status,
			&r.DurationMS, &r.TTFBMS, &r.PromptTokens, &r.CompletionTokens, &r.Bytes, &r.Error)
		r.Status = int(status)
		r.Time = r.Time.UTC()
		return r, err
	})
	if err != nil {
		return nil, translate("read requests", err, "")
	}
	if out == nil {
		out = []history.Record{}
	}
	return out, nil
}

// PruneRequests deletes the records older than before and returns how many.
func (s *Store) PruneRequests(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM request_log WHERE started_at < $1`, before)
	if err != nil {
		return 0, translate("prune requests", err, "")
	}
	return tag.RowsAffected(), nil
}

// TrimRequests deletes every record but the newest keep (in the order
// Requests lists them) and returns how many it deleted.
func (s *Store) TrimRequests(ctx context.Context, keep int) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("trim requests: keep %d records: must be at least 1", keep)
	}
	// With fewer rows the subquery is NULL and nothing matches.
	tag, err := s.pool.Exec(ctx, `DELETE FROM request_log WHERE (started_at, id) <
		(SELECT started_at, id FROM request_log ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET $1)`, keep-1)
	if err != nil {
		return 0, translate("trim requests", err, "")
	}
	return tag.RowsAffected(), nil
}
