package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/app/history"
)

// openAt opens a store in dir whose schema stops at version.
func openAt(t *testing.T, dir string, version int) *Store {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName)+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{db: db}
	if err := s.migrate(context.Background(), version, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// Schema 5 rebuilds the request log with the start time as the key: every
// row survives with its fields, rows that shared a microsecond get keys of
// their own, and the log keeps its order.
func TestMigrate_RekeysTheRequestLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	old := openAt(t, dir, 4)
	base := time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	// Written out of time order, three of them in one microsecond (one
	// of those 400 ns later than the other two), one a microsecond later.
	rows := []struct {
		at time.Time
		id string
	}{
		{base.Add(time.Second), "late"},
		{base, "a"},
		{base.Add(400 * time.Nanosecond), "c"},
		{base, "b"},
		{base.Add(time.Microsecond), "d"},
	}
	for _, r := range rows {
		if _, err := old.db.ExecContext(ctx, `INSERT INTO request_log (started_at, request_id, who, client, method, path,
			model, node, status, duration_ms, ttfb_ms, prompt_tokens, completion_tokens, bytes, error)
			VALUES (?, ?, 'key:ci', '10.0.0.7', 'POST', '/api/chat', 'llama3:latest', 'gpu-1', 200, 812.5, 95.25, 26, 282, 40211, '')`,
			fmtTime(r.at), r.id); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	s, err := Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Requests(ctx, history.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range got {
		order = append(order, fmt.Sprintf("%s@%d", r.RequestID, r.Time.Sub(base)/time.Microsecond))
	}
	// a, b and c share microsecond 0: b and c move up one each, which
	// pushes d (at 1) to 3.
	want := "[late@1000000 d@3 c@2 b@1 a@0]"
	if fmt.Sprint(order) != want {
		t.Errorf("migrated log %v, want %s", order, want)
	}
	w := got[0]
	if w.Who != "key:ci" || w.Client != "10.0.0.7" || w.Model != "llama3:latest" || w.Node != "gpu-1" || w.Status != 200 ||
		w.DurationMS != 812.5 || w.TTFBMS != 95.25 || w.PromptTokens != 26 || w.CompletionTokens != 282 || w.Bytes != 40211 ||
		w.ID != base.Add(time.Second).UnixMicro() {
		t.Errorf("migrated record %+v lost a field", w)
	}
	if got, err := s.Requests(ctx, history.Query{Limit: 10, Model: "llama3:latest", Since: base.Add(2 * time.Microsecond)}); err != nil || len(got) != 3 {
		t.Errorf("query by model and time after migration: %d records, %v; want 3", len(got), err)
	}
}

// Many records of one microsecond, over two batches, all get keys, in the
// order they were written.
func TestRecordRequests_SameMicrosecond(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	var batch []history.Record
	for i := range 300 {
		batch = append(batch, history.Record{Time: at, RequestID: fmt.Sprint(i), Method: "GET", Path: "/", Status: 200})
	}
	for range 2 {
		if err := s.RecordRequests(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// Written after them, a record of a later microsecond they ran into.
	if err := s.RecordRequests(ctx, []history.Record{{Time: at.Add(100 * time.Microsecond), RequestID: "next", Method: "GET", Path: "/", Status: 200}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Requests(ctx, history.Query{Limit: history.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].RequestID != "next" || got[1].RequestID != "299" || got[2].RequestID != "298" {
		t.Errorf("newest are %s, %s, %s; want next, 299, 298", got[0].RequestID, got[1].RequestID, got[2].RequestID)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM request_log`).Scan(&n); err != nil || n != 601 {
		t.Errorf("%d records stored, %v; want 601", n, err)
	}
}

// TestFileTroubleIsUnavailable: a write the file refuses (here read-only;
// a full disk alike) is an outage the API answers with 503, "try again",
// not an internal error.
func TestFileTroubleIsUnavailable(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.db.SetMaxOpenConns(1) // the pragma below holds for one connection
	if _, err := s.db.Exec("PRAGMA query_only = ON"); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateNode(context.Background(), fleet.Node{BaseURL: "http://10.0.0.1:11434", Enabled: true})
	if !errors.Is(err, fleet.ErrUnavailable) {
		t.Fatalf("write to a read-only store: %v; want fleet.ErrUnavailable", err)
	}
	_, err = s.CreateUser(context.Background(), account.User{Username: "ops", Role: account.RoleAdmin, PasswordHash: "x"})
	if !errors.Is(err, fleet.ErrUnavailable) {
		t.Fatalf("user written to a read-only store: %v; want fleet.ErrUnavailable", err)
	}
}

// TestDataDirIsAPath: the store lives in the data directory whatever its
// name, though SQLite's URI reads %, ? and # as syntax; and its files are
// private to their owner.
func TestDataDirIsAPath(t *testing.T) {
	root := t.TempDir()
	for i, name := range []string{"inst#1", "inst#2", "q?x", "p%41x", "sp ace"} {
		dir := filepath.Join(root, name)
		s, err := Open(context.Background(), dir, nil)
		if err != nil {
			t.Fatalf("open %q: %v", name, err)
		}
		if _, err := s.CreateNode(context.Background(), fleet.Node{Name: name, BaseURL: fmt.Sprintf("http://10.0.0.%d:11434", i+1), Enabled: true}); err != nil {
			t.Fatal(err)
		}
		nodes, err := s.Nodes(context.Background())
		s.Close()
		if err != nil || len(nodes) != 1 || nodes[0].Name != name {
			t.Fatalf("store of %q holds %+v, %v; want its one node", name, nodes, err)
		}
		info, err := os.Stat(filepath.Join(dir, FileName))
		if err != nil {
			t.Fatalf("the store of %q is not in its directory: %v", name, err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v; want 0600", FileName, perm)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 5 {
		t.Errorf("the root holds %d entries; want the 5 data directories only", len(entries))
	}
}

// TestUpgradeCheck: an existing store is migrated only when the check
// allows it; a refused upgrade leaves it as it was. A new store is created
// without asking.
func TestUpgradeCheck(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openAt(t, dir, 4).Close()
	var asked [2]int
	held := errors.New("a serve holds it")
	refuse := func(from, to int) error { asked = [2]int{from, to}; return held }
	if _, err := Open(ctx, dir, refuse); !errors.Is(err, held) {
		t.Fatalf("open refused by the check: %v", err)
	}
	if asked != [2]int{4, len(schema)} {
		t.Errorf("asked about %v; want 4 to %d", asked, len(schema))
	}
	old := openAt(t, dir, 4) // still at 4: migrating to 4 is nothing to do
	var version int
	if err := old.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != 4 {
		t.Fatalf("after the refusal the schema is %d, %v; want 4", version, err)
	}
	old.Close()
	s, err := Open(ctx, dir, func(int, int) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fresh, err := Open(ctx, t.TempDir(), refuse)
	if err != nil {
		t.Fatalf("a new store was refused: %v", err)
	}
	fresh.Close()
}
