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
		s, err := sqlite.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// The request log is written in the background, but on the proxy's own
// CPU: at thousands of requests a second it is a visible share of it.
func BenchmarkRecordRequests(b *testing.B) {
	s, err := sqlite.Open(context.Background(), b.TempDir())
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
