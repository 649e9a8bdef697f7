package fakeollama_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// BenchmarkChatStream measures whole streamed answers (client included)
// through many parallel connections.
func BenchmarkChatStream(b *testing.B) {
	s := fakeollama.Start(b, fakeollama.Options{Models: []string{"llama3"}, Tokens: 20})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(s.URL()+"/api/chat", "application/json", strings.NewReader(chatBody))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
