package fakeollama_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

func decodeBase64Floats(t *testing.T, s string) []float32 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		t.Fatalf("bad base64 floats %q: %v", s, err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const chatBody = `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`

// openStream posts body and returns the response with its body unread.
func openStream(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestFaultErrorLine(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	s.SetErrorAfter(2)
	const crash = `{"error":"an error was encountered while running the model: unexpected EOF"}`

	// Streamed: 200, two tokens, the error line, and a clean end.
	resp, body := do(t, "POST", s.URL()+"/api/chat", chatBody)
	lines := readLines(t, body)
	if resp.StatusCode != 200 || len(lines) != 3 || string(lines[2]) != crash {
		t.Fatalf("%d %q", resp.StatusCode, lines)
	}
	// The Go client turns that line into an error.
	var got int
	err := newClient(t, s).Chat(context.Background(), &api.ChatRequest{Model: "llama3", Messages: []api.Message{{Role: "user", Content: "hi"}}},
		func(api.ChatResponse) error { got++; return nil })
	if err == nil || err.Error() != "an error was encountered while running the model: unexpected EOF" || got != 2 {
		t.Fatalf("client: %d chunks, %v", got, err)
	}

	// Not streamed: Ollama answers 500 with the error.
	resp, body = do(t, "POST", s.URL()+"/api/generate", `{"model":"llama3","prompt":"x","stream":false}`)
	if resp.StatusCode != 500 || string(body) != crash {
		t.Fatalf("stream:false: %d %s", resp.StatusCode, body)
	}

	// /v1 SSE: an empty chunk with "model":"" and no [DONE].
	_, body = do(t, "POST", s.URL()+"/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	events := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
	if len(events) != 3 || !strings.Contains(events[2], `"model":"","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`) || strings.Contains(string(body), "[DONE]") {
		t.Fatalf("v1 events %q", events)
	}

	// Before any token: a 500 with Content-Type application/json.
	s.SetErrorAfter(0)
	resp, body = do(t, "POST", s.URL()+"/api/chat", chatBody)
	if resp.StatusCode != 500 || resp.Header.Get("Content-Type") != "application/json" || string(body) != crash {
		t.Fatalf("error before first token: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	// At or beyond the answer length: in place of the final line.
	s.SetErrorAfter(50)
	_, body = do(t, "POST", s.URL()+"/api/chat", chatBody)
	if lines := readLines(t, body); len(lines) != 6 || string(lines[5]) != crash {
		t.Fatalf("error after all tokens: %q", lines)
	}

	s.ClearFaults()
	if _, body := do(t, "POST", s.URL()+"/api/chat", chatBody); strings.Contains(string(body), "error") {
		t.Fatalf("after ClearFaults: %s", body)
	}
}

func TestFaultDrop(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	s.SetDropAfter(2)

	resp := openStream(t, context.Background(), s.URL()+"/api/chat", chatBody)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 2 {
		line, err := br.ReadString('\n')
		if err != nil || !strings.Contains(line, `"done":false`) {
			t.Fatalf("line %d: %q %v", i, line, err)
		}
	}
	// The chunked body ends without its terminator.
	rest, err := io.ReadAll(br)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(rest) != 0 {
		t.Fatalf("after the cut: %q %v", rest, err)
	}

	// With nothing sent yet (stream:false), the connection just closes.
	req, _ := http.NewRequest("POST", s.URL()+"/api/generate", strings.NewReader(`{"model":"llama3","prompt":"x","stream":false}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("stream:false drop answered %d", resp.StatusCode)
	}

	// /v1 SSE: cut with no [DONE].
	resp = openStream(t, context.Background(), s.URL()+"/v1/chat/completions", `{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || strings.Count(string(body), "data: ") != 2 {
		t.Fatalf("v1 drop: %q %v", body, err)
	}
	waitFor(t, "handlers to finish", func() bool { return s.Active() == 0 })
}

func TestFaultLivenessDelay(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	// A delay well above a loaded machine's request time, so the bound on
	// the other endpoints cannot be reached by mere slowness.
	const delay = time.Second
	s.SetLivenessDelay(delay)
	start := time.Now()
	if resp, _ := do(t, "GET", s.URL()+"/", ""); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if d := time.Since(start); d < delay {
		t.Fatalf("GET / took %v", d)
	}
	start = time.Now()
	do(t, "GET", s.URL()+"/api/version", "")
	if d := time.Since(start); d > delay/2 {
		t.Fatalf("other endpoints are slowed too: %v", d)
	}
}

// TestGateOrdersTokens checks that with a gate each token reaches the client
// before the next one is produced.
func TestGateOrdersTokens(t *testing.T) {
	// As in Ollama the response headers go out with the first token, so the
	// first token is released before the request is sent.
	gate := make(chan struct{}, 1)
	gate <- struct{}{}
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Tokens: 3, Gate: gate})
	resp := openStream(t, context.Background(), s.URL()+"/api/chat", chatBody)
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	for i := range 3 {
		if i > 0 {
			select {
			case l := <-lines:
				t.Fatalf("line %d arrived before the gate opened: %s", i, l)
			case <-time.After(20 * time.Millisecond):
			}
			gate <- struct{}{}
		}
		if l := <-lines; !strings.Contains(l, fakeollama.Token(i)) {
			t.Fatalf("line %d = %s", i, l)
		}
	}
	// The final line is not gated.
	if l := <-lines; !strings.Contains(l, `"done":true`) {
		t.Fatalf("final line %s", l)
	}
	if _, ok := <-lines; ok {
		t.Fatal("extra line")
	}
}

func TestCancellationIsCounted(t *testing.T) {
	gate := make(chan struct{}, 1)
	gate <- struct{}{} // the first token, which carries the headers
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Gate: gate})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := openStream(t, ctx, s.URL()+"/api/chat", chatBody)
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if s.Active() != 1 {
		t.Fatalf("Active = %d", s.Active())
	}
	cancel() // the client hangs up while the fake waits for the next token
	waitFor(t, "the cancellation to be counted", func() bool { return s.Cancelled() == 1 })
	waitFor(t, "Active to drop", func() bool { return s.Active() == 0 })

	// With a token delay instead of a gate.
	s2 := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Tokens: 1000, TokenDelay: time.Millisecond})
	ctx2, cancel2 := context.WithCancel(context.Background())
	resp = openStream(t, ctx2, s2.URL()+"/api/generate", `{"model":"llama3","prompt":"long"}`)
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel2()
	waitFor(t, "the cancellation to be counted", func() bool { return s2.Cancelled() == 1 && s2.Active() == 0 })
	s2.ResetStats()
	if s2.Cancelled() != 0 || s2.Requests("/api/generate") != 0 {
		t.Fatal("ResetStats")
	}
}

func TestStopRestartSameAddress(t *testing.T) {
	gate := make(chan struct{}, 1)
	gate <- struct{}{}
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Gate: gate})
	url := s.URL()

	// A stream in flight is cut by Stop.
	resp := openStream(t, context.Background(), url+"/api/chat", chatBody)
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := io.ReadAll(br); err == nil {
		t.Fatal("stream survived Stop")
	}
	// New connections are refused.
	client := &http.Client{Transport: &http.Transport{}}
	if resp, err := client.Get(url + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("GET after Stop succeeded")
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.URL() != url {
		t.Fatalf("URL changed: %s -> %s", url, s.URL())
	}
	resp2, err := client.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 200 {
		t.Fatal(resp2.StatusCode)
	}
	if err := s.Restart(); err != nil { // no-op while running
		t.Fatal(err)
	}
	// Stats survive the restart.
	if s.Requests("/api/chat") != 1 || s.Requests("/") != 1 {
		t.Fatalf("requests: chat %d, / %d", s.Requests("/api/chat"), s.Requests("/"))
	}
}

func TestConcurrentStreams(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Tokens: 20, TokenDelay: time.Millisecond})
	c := newClient(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			var text strings.Builder
			err := c.Generate(context.Background(), &api.GenerateRequest{Model: "llama3", Prompt: "x"}, func(r api.GenerateResponse) error {
				text.WriteString(r.Response)
				return nil
			})
			if err == nil && text.String() != fakeollama.Answer(20) {
				err = errors.New("bad text " + text.String())
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.Requests("/api/generate") != 200 || s.Active() != 0 || s.Cancelled() != 0 {
		t.Fatalf("requests %d active %d cancelled %d", s.Requests("/api/generate"), s.Active(), s.Cancelled())
	}
}

func TestControlEndpoints(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3"}, Control: true})
	resp, body := do(t, "POST", s.URL()+"/_fake/faults", `{"busy":true,"token_delay_ms":1}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"busy":true`) || !strings.Contains(string(body), `"token_delay_ms":1`) {
		t.Fatalf("faults: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "POST", s.URL()+"/api/chat", chatBody); resp.StatusCode != 503 {
		t.Fatalf("busy via control: %d", resp.StatusCode)
	}
	_, body = do(t, "GET", s.URL()+"/_fake/stats", "")
	if !strings.Contains(string(body), `"/api/chat":1`) {
		t.Fatalf("stats: %s", body)
	}
	_, body = do(t, "GET", s.URL()+"/_fake/last?path=/api/chat", "")
	if !strings.Contains(string(body), `"body":"{\"model\":\"llama3\"`) {
		t.Fatalf("last: %s", body)
	}
	if _, body := do(t, "POST", s.URL()+"/_fake/reset", ""); !strings.Contains(string(body), `"token_delay_ms":0`) {
		t.Fatalf("reset kept the token delay: %s", body)
	}
	if resp, _ := do(t, "POST", s.URL()+"/api/chat", chatBody); resp.StatusCode != 200 {
		t.Fatalf("after reset: %d", resp.StatusCode)
	}
	// Without Control the prefix is an ordinary 404.
	if resp, _ := do(t, "GET", fakeollama.Start(t, fakeollama.Options{}).URL()+"/_fake/stats", ""); resp.StatusCode != 404 {
		t.Fatalf("control without Control: %d", resp.StatusCode)
	}
}
