package sqlite

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/aivonx/aivonx/app/history"
)

// The request log methods of Store (schema version 3). They satisfy
// app.RequestLog.

// RecordRequests inserts the records in one transaction, in the order
// given.
func (s *Store) RecordRequests(ctx context.Context, records []history.Record) error {
	if len(records) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return translate("record requests", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO request_log (started_at, request_id, who, client, method, path, model, node,
		status, duration_ms, ttfb_ms, prompt_tokens, completion_tokens, bytes, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return translate("record requests", err)
	}
	defer stmt.Close()
	for _, r := range records {
		r = r.Clean()
		if _, err := stmt.ExecContext(ctx, fmtTime(r.Time), r.RequestID, r.Who, r.Client, r.Method, r.Path, r.Model, r.Node,
			r.Status, r.DurationMS, r.TTFBMS, r.PromptTokens, r.CompletionTokens, r.Bytes, r.Error); err != nil {
			return translate("record requests", err)
		}
	}
	return translate("record requests", tx.Commit())
}

// Requests returns the records that match q, newest first, at most q.Limit
// (capped at history.MaxLimit+1) after skipping q.Offset.
func (s *Store) Requests(ctx context.Context, q history.Query) ([]history.Record, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
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
	if !q.Since.IsZero() {
		add("started_at >= ?", fmtTime(q.Since))
	}
	if !q.Until.IsZero() {
		add("started_at <= ?", fmtTime(q.Until))
	}
	query := `SELECT id, started_at, request_id, who, client, method, path, model, node, status,
		duration_ms, ttfb_ms, prompt_tokens, completion_tokens, bytes, error FROM request_log`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := min(max(q.Limit, 0), history.MaxLimit+1)
	query += " ORDER BY started_at DESC, id DESC LIMIT " + strconv.Itoa(limit) + " OFFSET " + strconv.Itoa(max(q.Offset, 0))
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, translate("read requests", err)
	}
	defer rows.Close()
	out := []history.Record{}
	for rows.Next() {
		var r history.Record
		var at string
		if err := rows.Scan(&r.ID, &at, &r.RequestID, &r.Who, &r.Client, &r.Method, &r.Path, &r.Model, &r.Node, &r.Status,
			&r.DurationMS, &r.TTFBMS, &r.PromptTokens, &r.CompletionTokens, &r.Bytes, &r.Error); err != nil {
			return nil, translate("read requests", err)
		}
		r.Time = parseTime(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, translate("read requests", err)
	}
	return out, nil
}

// PruneRequests deletes the records older than before and returns how many.
func (s *Store) PruneRequests(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM request_log WHERE started_at < ?`, fmtTime(before))
	if err != nil {
		return 0, translate("prune requests", err)
	}
	n, err := res.RowsAffected()
	return n, translate("prune requests", err)
}
