package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	modernc "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/aivonx/aivonx/app/history"
)

// The request log methods of Store. They satisfy app.RequestLog.
//
// A record's key is its start time in Unix microseconds (schema 5). At
// thousands of requests a second the log is written on the proxy's own CPU,
// and keying the table by time is what makes a row cheap: the table is its
// own time index, so an insert touches the table and the model and node
// indexes and nothing else, and "newest first" and time ranges read it in
// key order. Two requests that start in the same microsecond cannot share a
// key; the later-written one takes the next free microsecond, which keeps
// them in the order they were written, as the log promises.

// requestColumns are the columns after the key, in the order the
// statements below bind and scan them.
const requestColumns = `request_id, who, client, method, path, model, node,
	status, duration_ms, ttfb_ms, prompt_tokens, completion_tokens, bytes, error`

// requestKey and requestTime convert between a record's time and its key.
func requestKey(t time.Time) int64    { return t.UnixMicro() }
func requestTime(key int64) time.Time { return time.UnixMicro(key).UTC() }

// RecordRequests inserts the records in one transaction, in the order
// given, rowsPerInsert to a statement.
//
// It talks to the driver directly (sql.Conn.Raw): database/sql's
// conversion of every argument and result was a tenth of an insert, and
// the log is written at the proxy's request rate.
func (s *Store) RecordRequests(ctx context.Context, records []history.Record) error {
	if len(records) == 0 {
		return nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return translate("record requests", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		w, err := beginRecordWriter(ctx, dc)
		if err != nil {
			return err
		}
		defer w.close()
		// The driver watches a cancellable context from a goroutine of
		// its own, started for every statement: more than an insert
		// costs. ctx still bounds the wait for the write lock (taken when
		// the transaction began), the one step that can block; the
		// inserts only write to pages the transaction holds.
		rowCtx := context.WithoutCancel(ctx)
		for len(records) > 0 {
			chunk := records[:min(len(records), rowsPerInsert)]
			records = records[len(chunk):]
			if len(chunk) == rowsPerInsert {
				ok, err := w.writeMany(rowCtx, chunk)
				if err != nil {
					return err
				}
				if ok {
					continue
				}
			}
			// A short last chunk, or one with a taken key: a record at a
			// time.
			for _, r := range chunk {
				if err := w.write(rowCtx, requestKey(r.Time), r.Clean()); err != nil {
					return err
				}
			}
		}
		return w.commit()
	})
	return translate("record requests", err)
}

// rowsPerInsert is how many records one multi-row INSERT writes: a
// statement's own cost (its cursors, its program's start and end) is
// shared by them.
const rowsPerInsert = 32

// recordWriter inserts records inside one transaction of a driver
// connection.
type recordWriter struct {
	tx          driver.Tx
	insertMany  execStmt
	manyArgs    []driver.NamedValue
	insert      execStmt
	nextFree    queryStmt
	args        []driver.NamedValue // the insert's, reused row to row
	last        int64               // the key written last, if any
	wrote, done bool
}

type (
	execStmt interface {
		driver.Stmt
		driver.StmtExecContext
	}
	queryStmt interface {
		driver.Stmt
		driver.StmtQueryContext
	}
)

// prepare prepares query on c as a statement of type S (an execStmt or a
// queryStmt).
func prepare[S driver.Stmt](ctx context.Context, c driver.ConnPrepareContext, query string) (S, error) {
	var zero S
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return zero, err
	}
	s, ok := st.(S)
	if !ok {
		st.Close()
		return zero, fmt.Errorf("driver statement %T cannot run with a context", st)
	}
	return s, nil
}

func beginRecordWriter(ctx context.Context, dc any) (_ *recordWriter, err error) {
	c, ok := dc.(interface {
		driver.ConnBeginTx
		driver.ConnPrepareContext
	})
	if !ok {
		return nil, fmt.Errorf("driver connection %T cannot begin or prepare with a context", dc)
	}
	w := &recordWriter{args: positional(requestFields), manyArgs: positional(requestFields * rowsPerInsert)}
	if w.tx, err = c.BeginTx(ctx, driver.TxOptions{}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.insert, err = prepare[execStmt](ctx, c, `INSERT INTO request_log (id, `+requestColumns+`) VALUES `+rowArgs+
		` ON CONFLICT (id) DO NOTHING`); err != nil {
		return nil, err
	}
	w.insertMany, err = prepare[execStmt](ctx, c, `INSERT INTO request_log (id, `+requestColumns+`) VALUES `+
		strings.Repeat(rowArgs+", ", rowsPerInsert-1)+rowArgs)
	if err != nil {
		return nil, err
	}
	// The first free key after the run of taken ones that starts at ?.
	w.nextFree, err = prepare[queryStmt](ctx, c, `SELECT a.id + 1 FROM request_log a WHERE a.id >= ?
		AND NOT EXISTS (SELECT 1 FROM request_log b WHERE b.id = a.id + 1) ORDER BY a.id LIMIT 1`)
	return w, err
}

// close rolls back what was not committed, a failed commit included (its
// transaction may still be open, and the connection goes back to the pool),
// and frees the statements.
func (w *recordWriter) close() {
	if w.insertMany != nil {
		w.insertMany.Close()
	}
	if w.insert != nil {
		w.insert.Close()
	}
	if w.nextFree != nil {
		w.nextFree.Close()
	}
	if !w.done {
		w.tx.Rollback()
	}
}

func (w *recordWriter) commit() error {
	if err := w.tx.Commit(); err != nil {
		return err
	}
	w.done = true
	return nil
}

// write inserts r under the first free key from key on. A taken key is
// usually taken by the record written just before (a burst of one
// microsecond), so the key after that one is tried next; only then is the
// table searched for a free key, which the transaction's write lock keeps
// free.
func (w *recordWriter) write(ctx context.Context, key int64, r history.Record) error {
	ok, err := w.try(ctx, key, r)
	if ok || err != nil {
		return err
	}
	if w.wrote && w.last >= key {
		if ok, err := w.try(ctx, w.last+1, r); ok || err != nil {
			return err
		}
	}
	if key, err = w.firstFree(ctx, key); err != nil {
		return err
	}
	if ok, err := w.try(ctx, key, r); !ok && err == nil {
		return fmt.Errorf("key %d: taken although it was free", key)
	}
	return err
}

// try inserts r under key and reports whether the key was free.
func (w *recordWriter) try(ctx context.Context, key int64, r history.Record) (bool, error) {
	bindRecord(w.args, key, r)
	res, err := w.insert.ExecContext(ctx, w.args)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return false, err
	}
	w.last, w.wrote = key, true
	return true, nil
}

// requestFields is the number of columns of a row: the key and
// requestColumns. rowArgs is a row's placeholders.
const requestFields = 15

var rowArgs = "(" + strings.Repeat("?, ", requestFields-1) + "?)"

// positional returns n arguments numbered 1 to n, for a statement's "?"s.
func positional(n int) []driver.NamedValue {
	args := make([]driver.NamedValue, n)
	for i := range args {
		args[i].Ordinal = i + 1
	}
	return args
}

// bindRecord sets the values of a row's arguments, dst[:requestFields].
func bindRecord(dst []driver.NamedValue, key int64, r history.Record) {
	for i, v := range [requestFields]any{key, r.RequestID, r.Who, r.Client, r.Method, r.Path, r.Model, r.Node,
		int64(r.Status), r.DurationMS, r.TTFBMS, r.PromptTokens, r.CompletionTokens, r.Bytes, r.Error} {
		dst[i].Value = v
	}
}

// writeMany inserts rs, each under the key of its time, in one statement,
// and reports false, having written none, when a key is taken (by a row
// already in the table or by another of rs).
func (w *recordWriter) writeMany(ctx context.Context, rs []history.Record) (bool, error) {
	var key int64
	for j, r := range rs {
		key = requestKey(r.Time)
		bindRecord(w.manyArgs[j*requestFields:], key, r.Clean())
	}
	if _, err := w.insertMany.ExecContext(ctx, w.manyArgs); err != nil {
		var se *modernc.Error
		if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY {
			return false, nil // the statement wrote nothing; the transaction goes on
		}
		return false, err
	}
	w.last, w.wrote = key, true
	return true, nil
}

// firstFree returns the first free key after the run of taken ones that
// starts at from.
func (w *recordWriter) firstFree(ctx context.Context, from int64) (int64, error) {
	rows, err := w.nextFree.QueryContext(ctx, []driver.NamedValue{{Ordinal: 1, Value: from}})
	if err != nil {
		return 0, fmt.Errorf("find a free key after %d: %w", from, err)
	}
	defer rows.Close()
	v := make([]driver.Value, 1)
	if err := rows.Next(v); err != nil {
		return 0, fmt.Errorf("find a free key after %d: %w", from, err)
	}
	key, ok := v[0].(int64)
	if !ok {
		return 0, fmt.Errorf("find a free key after %d: got %T", from, v[0])
	}
	return key, nil
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
	if q.Failed {
		where = append(where, "(status >= 400 OR error <> '')")
	}
	if !q.Since.IsZero() {
		add("id >= ?", requestKey(q.Since))
	}
	if !q.Until.IsZero() {
		add("id <= ?", requestKey(q.Until))
	}
	query := `SELECT id, ` + requestColumns + ` FROM request_log`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := min(max(q.Limit, 0), history.MaxLimit+1)
	query += " ORDER BY id DESC LIMIT " + strconv.Itoa(limit) + " OFFSET " + strconv.Itoa(max(q.Offset, 0))
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, translate("read requests", err)
	}
	defer rows.Close()
	out := []history.Record{}
	for rows.Next() {
		var r history.Record
		if err := rows.Scan(&r.ID, &r.RequestID, &r.Who, &r.Client, &r.Method, &r.Path, &r.Model, &r.Node, &r.Status,
			&r.DurationMS, &r.TTFBMS, &r.PromptTokens, &r.CompletionTokens, &r.Bytes, &r.Error); err != nil {
			return nil, translate("read requests", err)
		}
		r.Time = requestTime(r.ID)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, translate("read requests", err)
	}
	return out, nil
}

// PruneRequests deletes the records older than before and returns how many.
func (s *Store) PruneRequests(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM request_log WHERE id < ?`, requestKey(before))
	if err != nil {
		return 0, translate("prune requests", err)
	}
	n, err := res.RowsAffected()
	return n, translate("prune requests", err)
}

// TrimRequests deletes every record but the newest keep and returns how
// many it deleted.
func (s *Store) TrimRequests(ctx context.Context, keep int) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("trim requests: keep %d records: must be at least 1", keep)
	}
	// The id is the start time, so the keep-th newest id is the bound; with
	// fewer rows the subquery is NULL and nothing matches.
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM request_log WHERE id < (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)`, keep-1)
	if err != nil {
		return 0, translate("trim requests", err)
	}
	n, err := res.RowsAffected()
	return n, translate("trim requests", err)
}

// rekeyRequestLog is schema 5: the request log of schema 3, whose key was
// an insertion counter and whose start time was text with an index of its
// own, rebuilt with the start time as the key. Rows are copied oldest
// first, each under its own microsecond or, when an earlier row has taken
// that, the next one after: the keys only grow, and the order of the log
// is kept.
func rekeyRequestLog(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE request_log_v5 (
		id                INTEGER PRIMARY KEY, -- start time, Unix microseconds
		request_id        TEXT    NOT NULL DEFAULT '',
		who               TEXT    NOT NULL DEFAULT '',
		client            TEXT    NOT NULL DEFAULT '',
		method            TEXT    NOT NULL,
		path              TEXT    NOT NULL,
		model             TEXT    NOT NULL DEFAULT '',
		node              TEXT    NOT NULL DEFAULT '',
		status            INTEGER NOT NULL,
		duration_ms       REAL    NOT NULL DEFAULT 0,
		ttfb_ms           REAL    NOT NULL DEFAULT 0,
		prompt_tokens     INTEGER NOT NULL DEFAULT 0,
		completion_tokens INTEGER NOT NULL DEFAULT 0,
		bytes             INTEGER NOT NULL DEFAULT 0,
		error             TEXT    NOT NULL DEFAULT ''
	)`); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT started_at, `+requestColumns+` FROM request_log ORDER BY started_at, id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	insert, err := tx.PrepareContext(ctx, `INSERT INTO request_log_v5 (id, `+requestColumns+`) VALUES `+rowArgs)
	if err != nil {
		return err
	}
	defer insert.Close()
	next := int64(-1 << 63) // the lowest key still free for the next row
	for rows.Next() {
		var r history.Record
		var at string
		if err := rows.Scan(&at, &r.RequestID, &r.Who, &r.Client, &r.Method, &r.Path, &r.Model, &r.Node, &r.Status,
			&r.DurationMS, &r.TTFBMS, &r.PromptTokens, &r.CompletionTokens, &r.Bytes, &r.Error); err != nil {
			return fmt.Errorf("copy the request log: %w", err)
		}
		key := max(requestKey(parseTime(at)), next)
		if _, err := insert.ExecContext(ctx, key, r.RequestID, r.Who, r.Client, r.Method, r.Path, r.Model, r.Node,
			r.Status, r.DurationMS, r.TTFBMS, r.PromptTokens, r.CompletionTokens, r.Bytes, r.Error); err != nil {
			return fmt.Errorf("copy the request log: %w", err)
		}
		next = key + 1
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("copy the request log: %w", err)
	}
	_, err = tx.ExecContext(ctx, `DROP TABLE request_log;
		ALTER TABLE request_log_v5 RENAME TO request_log;
		CREATE INDEX request_log_model_idx ON request_log (model, id);
		CREATE INDEX request_log_node_idx ON request_log (node, id);`)
	return err
}
