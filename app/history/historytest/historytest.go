// Package historytest is the behaviour every request log store must show
// (the embedded SQLite store and the Postgres store), as one test suite that
// each adapter runs against its real database:
//
//	func TestRequestLog(t *testing.T) {
//		historytest.Run(t, func(t *testing.T) historytest.Store { return newStore(t) })
//	}
package historytest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/history"
)

// Store is the method set of app.RequestLog, declared here so that the
// adapters' tests need not import the handler package.
type Store interface {
	RecordRequests(ctx context.Context, records []history.Record) error
	Requests(ctx context.Context, q history.Query) ([]history.Record, error)
	PruneRequests(ctx context.Context, before time.Time) (int64, error)
	TrimRequests(ctx context.Context, keep int) (int64, error)
}

// Run runs the suite; open returns an empty store for each subtest group.
func Run(t *testing.T, open func(t *testing.T) Store) {
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testRoundTrip(t, open(t)) })
	t.Run("Filters", func(t *testing.T) { t.Parallel(); testFilters(t, open(t)) })
	t.Run("Prune", func(t *testing.T) { t.Parallel(); testPrune(t, open(t)) })
	t.Run("Trim", func(t *testing.T) { t.Parallel(); testTrim(t, open(t)) })
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var base = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func testRoundTrip(t *testing.T, s Store) {
	ctx := ctxFor(t)
	if got, err := s.Requests(ctx, history.Query{Limit: 10}); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Requests on an empty store = %#v, %v; want an empty, non-nil list", got, err)
	}
	if err := s.RecordRequests(ctx, nil); err != nil {
		t.Fatalf("RecordRequests(nil) = %v", err)
	}
	want := history.Record{
		Time: base.Add(1234567 * time.Nanosecond).In(time.FixedZone("UTC+8", 8*3600)), RequestID: "abc-1", Who: "key:ci-bot", Client: "10.0.0.7",
		Method: "POST", Path: "/v1/chat/completions", Model: "llama3:latest", Node: "gpu-01 <b>ünï</b>",
		Status: 200, DurationMS: 1234.5, TTFBMS: 56.25, PromptTokens: 12, CompletionTokens: 345, Bytes: 6789,
		Error: "node gpu-01 ended the stream without [DONE]",
	}
	if err := s.RecordRequests(ctx, []history.Record{want}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Requests(ctx, history.Query{Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("Requests = %v, %v; want one record", got, err)
	}
	r := got[0]
	if r.ID == 0 {
		t.Errorf("record has no ID")
	}
	if d := r.Time.Sub(want.Time).Abs(); d >= time.Microsecond || r.Time.Location() != time.UTC {
		t.Errorf("time %v, want %v in UTC (to the microsecond)", r.Time, want.Time)
	}
	r.ID, r.Time, want.Time = 0, time.Time{}, time.Time{}
	if r != want {
		t.Errorf("round trip:\n got %+v\nwant %+v", r, want)
	}

	// Text a client controls is stored whatever it holds.
	odd := history.Record{Time: base, Method: "GET", Path: "/api/\x00\xff" + strings.Repeat("é", 400), Status: 404}.Clean()
	if err := s.RecordRequests(ctx, []history.Record{odd}); err != nil {
		t.Fatalf("record with odd bytes: %v", err)
	}
	got, _ = s.Requests(ctx, history.Query{Limit: 10, StatusMin: 404, StatusMax: 404})
	if len(got) != 1 || got[0].Path != odd.Path {
		t.Fatalf("odd record read back as %+v", got)
	}
}

func testFilters(t *testing.T, s Store) {
	ctx := ctxFor(t)
	// 30 records, one a minute, spread over models, nodes, users and
	// statuses; written in two batches.
	var all []history.Record
	for i := range 30 {
		all = append(all, history.Record{
			Time:      base.Add(time.Duration(i) * time.Minute),
			RequestID: fmt.Sprintf("r%02d", i),
			Who:       []string{"", "key:ci", "user:alice"}[i%3],
			Method:    "POST", Path: "/api/chat",
			Model:  []string{"llama3:latest", "qwen2.5:0.5b"}[i%2],
			Node:   []string{"gpu-01", "gpu-02", "gpu-03", "gpu-04", "gpu-05"}[i%5],
			Status: []int{200, 200, 404, 502, 200, 499}[i%6],
		})
		if i%7 == 0 {
			all[i].Error = "node gpu-01 failed mid-stream: unexpected EOF" // with a 200, some of them
		}
	}
	if err := s.RecordRequests(ctx, all[:17]); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRequests(ctx, all[17:]); err != nil {
		t.Fatal(err)
	}
	ids := func(q history.Query) []string {
		t.Helper()
		got, err := s.Requests(ctx, q)
		if err != nil {
			t.Fatalf("Requests(%+v): %v", q, err)
		}
		out := []string{}
		for _, r := range got {
			out = append(out, r.RequestID)
		}
		return out
	}
	// The reference answer: newest first, filtered by Match, paged.
	expect := func(q history.Query) []string {
		out := []string{}
		for i := len(all) - 1; i >= 0; i-- {
			if q.Match(all[i]) {
				out = append(out, all[i].RequestID)
			}
		}
		out = out[min(q.Offset, len(out)):]
		return out[:min(q.Limit, len(out))]
	}
	queries := []history.Query{
		{Limit: 100},
		{Limit: 5},
		{Limit: 5, Offset: 5},
		{Limit: 5, Offset: 28},
		{Limit: 5, Offset: 100},
		{Limit: 100, Model: "qwen2.5:0.5b"},
		{Limit: 100, Node: "gpu-03"},
		{Limit: 100, Who: "key:ci"},
		{Limit: 100, Model: "llama3:latest", Node: "gpu-02", Who: "user:alice"},
		{Limit: 100, StatusMin: 200, StatusMax: 200},
		{Limit: 100, StatusMin: 400, StatusMax: 499},
		{Limit: 100, StatusMin: 400},
		{Limit: 100, Failed: true},
		{Limit: 3, Offset: 2, Failed: true, Model: "llama3:latest"},
		{Limit: 100, Since: base.Add(10 * time.Minute)},
		{Limit: 100, Until: base.Add(10 * time.Minute)},
		{Limit: 100, Since: base.Add(10 * time.Minute), Until: base.Add(12*time.Minute + 30*time.Second)},
		{Limit: 3, Offset: 1, StatusMin: 500, Since: base.Add(time.Minute).In(time.FixedZone("x", -5*3600))},
		{Limit: 100, Model: "nope"},
	}
	for _, q := range queries {
		if got, want := ids(q), expect(q); !slices.Equal(got, want) {
			t.Errorf("Requests(%+v)\n got %v\nwant %v", q, got, want)
		}
	}
	// Failed also takes a stream cut after its 200 (r00 and r28).
	if failed := ids(history.Query{Limit: 100, Failed: true}); !slices.Contains(failed, "r28") || slices.Contains(failed, "r01") {
		t.Errorf("Failed: %v; want r28 (200, cut) and not r01 (200, whole)", failed)
	}
	// Records of the same instant keep the order they were written in,
	// newest (last written) first.
	same := []history.Record{{Time: base.Add(time.Hour), RequestID: "s1", Status: 200}, {Time: base.Add(time.Hour), RequestID: "s2", Status: 200}}
	if err := s.RecordRequests(ctx, same); err != nil {
		t.Fatal(err)
	}
	if got := ids(history.Query{Limit: 2}); !slices.Equal(got, []string{"s2", "s1"}) {
		t.Errorf("same-instant order %v, want [s2 s1]", got)
	}
}

func testPrune(t *testing.T, s Store) {
	ctx := ctxFor(t)
	var recs []history.Record
	for i := range 10 {
		recs = append(recs, history.Record{Time: base.Add(time.Duration(i) * time.Hour), RequestID: fmt.Sprint(i), Status: 200})
	}
	if err := s.RecordRequests(ctx, recs); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneRequests(ctx, base.Add(4*time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("PruneRequests = %d, %v; want 4 deleted", n, err)
	}
	got, err := s.Requests(ctx, history.Query{Limit: 100})
	if err != nil || len(got) != 6 || got[len(got)-1].RequestID != "4" {
		t.Fatalf("after prune: %d records, %v; want the 6 newest", len(got), err)
	}
	if n, err := s.PruneRequests(ctx, base.Add(4*time.Hour)); err != nil || n != 0 {
		t.Fatalf("second prune = %d, %v; want 0", n, err)
	}
}

func testTrim(t *testing.T, s Store) {
	ctx := ctxFor(t)
	if n, err := s.TrimRequests(ctx, 3); err != nil || n != 0 {
		t.Fatalf("TrimRequests on an empty store = %d, %v; want 0", n, err)
	}
	// Written out of time order, two at one instant: the newest are by
	// time, then by the order written, as Requests lists them.
	var recs []history.Record
	for _, i := range []int{5, 1, 7, 3, 3, 9, 0} {
		recs = append(recs, history.Record{Time: base.Add(time.Duration(i) * time.Minute), RequestID: fmt.Sprint(i), Status: 200})
	}
	recs[4].RequestID = "3b"
	if err := s.RecordRequests(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if n, err := s.TrimRequests(ctx, 7); err != nil || n != 0 {
		t.Fatalf("TrimRequests(7) of 7 = %d, %v; want 0", n, err)
	}
	n, err := s.TrimRequests(ctx, 4)
	if err != nil || n != 3 {
		t.Fatalf("TrimRequests(4) of 7 = %d, %v; want 3 deleted", n, err)
	}
	got, err := s.Requests(ctx, history.Query{Limit: 100})
	var kept []string
	for _, r := range got {
		kept = append(kept, r.RequestID)
	}
	if err != nil || !slices.Equal(kept, []string{"9", "7", "5", "3b"}) {
		t.Fatalf("after TrimRequests(4): %v, %v; want [9 7 5 3b]", kept, err)
	}
	if _, err := s.TrimRequests(ctx, 0); err == nil {
		t.Error("TrimRequests(0) succeeded; want an error rather than an emptied log")
	}
	if got, err := s.Requests(ctx, history.Query{Limit: 100}); err != nil || len(got) != 4 {
		t.Fatalf("after TrimRequests(0): %d records, %v; want 4", len(got), err)
	}
}
