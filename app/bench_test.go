package app_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/memory"
	"github.com/aivonx/aivonx/internal/fakeollama"
	"github.com/aivonx/aivonx/worker"
)

// BenchmarkProxyStream measures one streamed chat through the handler,
// in-process, against a fake node over loopback: what a request costs the
// proxy in time and allocations (the node's and client's share included).
func BenchmarkProxyStream(b *testing.B) {
	node := fakeollama.New(fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 5})
	if err := node.Listen("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer node.Close()
	store := &staticStore{nodes: []fleet.Node{{ID: 1, Name: "a", BaseURL: node.URL(), Enabled: true}}, settings: fleet.DefaultSettings()}
	board := memory.NewStatusBoard()
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := worker.New(worker.Config{Rise: 1, Fall: 1}, store, board, nil, nil, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.RunOnce(context.Background()); err != nil {
		b.Fatal(err)
	}
	h, err := app.New(app.Config{}, app.Deps{Fleet: store, Statuses: board, InFlight: memory.NewInFlight(), Log: log})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	body := []byte(`{"model":"llama3","messages":[{"role":"user","content":"hello"}],"stream":true}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(srv.URL+"/api/chat", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n == 0 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
}
