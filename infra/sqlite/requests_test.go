package sqlite_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/history"
	"github.com/aivonx/aivonx/app/history/historytest"
	"github.com/aivonx/aivonx/infra/sqlite"
)

var _ app.RequestLog = (*sqlite.Store)(nil)

func TestStore_Requests(t *testing.T) {
	t.Parallel()
	historytest.Run(t, func(t *testing.T) historytest.Store {
		s, err := sqlite.Open(context.Background(), t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// A batch larger than one multi-row insert comes back whole: every field
// of every record, newest first.
func TestRecordRequests_LargeBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	var batch []history.Record
	for i := range 150 {
		batch = append(batch, history.Record{Time: base.Add(time.Duration(i) * time.Millisecond), RequestID: "r" + strconv.Itoa(i),
			Who: "key:k" + strconv.Itoa(i%3), Client: "10.0.0." + strconv.Itoa(i%7), Method: "POST", Path: "/api/chat",
			Model: "m" + strconv.Itoa(i%5), Node: "n" + strconv.Itoa(i%2), Status: 200 + i%4, DurationMS: float64(i) + 0.5,
			TTFBMS: float64(i) / 4, PromptTokens: int64(i), CompletionTokens: int64(2 * i), Bytes: int64(1000 + i), Error: strconv.Itoa(i % 2)})
	}
	if err := s.RecordRequests(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.Requests(ctx, history.Query{Limit: history.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(batch) {
		t.Fatalf("%d records back, want %d", len(got), len(batch))
	}
	for i, r := range got {
		want := batch[len(batch)-1-i]
		if r.ID == 0 || !r.Time.Equal(want.Time) {
			t.Fatalf("record %d: id %d time %v, want %v", i, r.ID, r.Time, want.Time)
		}
		r.ID, r.Time, want.Time = 0, time.Time{}, time.Time{}
		if r != want {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, r, want)
		}
	}
}

// The request log is written in the background, but on the proxy's own
// CPU: at thousands of requests a second it is a visible share of it.
func BenchmarkRecordRequests(b *testing.B) {
	s, err := sqlite.Open(context.Background(), b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// Requests a few microseconds apart, as at a few hundred thousand a
	// second: each batch follows the last.
	batch := make([]history.Record, 500)
	start := time.Now()
	for i := range batch {
		batch[i] = history.Record{RequestID: "0a1b2c3d-" + strconv.Itoa(i), Client: "10.0.0.7",
			Method: "POST", Path: "/api/chat", Model: "llama3:latest", Node: "gpu-1", Status: 200,
			DurationMS: 812.4, TTFBMS: 95.1, PromptTokens: 26, CompletionTokens: 282, Bytes: 40211}
	}
	// A deadline, as the request log's flush sets one.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ResetTimer()
	for n := range b.N {
		for i := range batch {
			batch[i].Time = start.Add(time.Duration(n*len(batch)+i) * 3 * time.Microsecond)
		}
		if err := s.RecordRequests(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/record")
}
