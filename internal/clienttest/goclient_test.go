package clienttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

func newClient(t testing.TB, base string) *api.Client {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(u, http.DefaultClient)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestGoClient drives `aivonx serve` with the official Go client, as the
// ollama CLI and Go programs do, and checks every answer against what the
// fake nodes produce.
func TestGoClient(t *testing.T) {
	st := startStack(t, defaultNodes(nil))
	c := newClient(t, st.URL)
	direct := newClient(t, st.Nodes[0].URL())

	t.Run("Heartbeat", func(t *testing.T) {
		if err := c.Heartbeat(ctxT(t)); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
	})

	t.Run("Version", func(t *testing.T) {
		v, err := c.Version(ctxT(t))
		if err != nil {
			t.Fatalf("Version: %v", err)
		}
		// The lowest among healthy nodes (A has 0.17.4, B 0.17.5).
		if v != "0.17.4" {
			t.Errorf("Version = %q, want 0.17.4 (the lowest of the nodes)", v)
		}
	})

	t.Run("List", func(t *testing.T) {
		resp, err := c.List(ctxT(t))
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var names []string
		for _, m := range resp.Models {
			names = append(names, m.Name)
			if m.Digest == "" || m.Size == 0 || m.Details.Format == "" {
				t.Errorf("model %q lacks digest/size/details: %+v", m.Name, m)
			}
		}
		slices.Sort(names)
		want := []string{"llama3:latest", "nomic-embed-text:latest", onlyModelB}
		if !slices.Equal(names, want) {
			t.Errorf("List names = %q, want the de-duplicated union %q", names, want)
		}
	})

	t.Run("ListRunning", func(t *testing.T) {
		resp, err := c.ListRunning(ctxT(t))
		if err != nil {
			t.Fatalf("ListRunning: %v", err)
		}
		var names []string
		for _, m := range resp.Models {
			names = append(names, m.Name)
			if m.ExpiresAt.IsZero() || m.Digest == "" {
				t.Errorf("running model %q lacks expires_at/digest: %+v", m.Name, m)
			}
		}
		slices.Sort(names)
		want := []string{"llama3:latest", onlyModelB}
		if !slices.Equal(names, want) {
			t.Errorf("ListRunning names = %q, want %q", names, want)
		}
	})

	t.Run("Show", func(t *testing.T) {
		got, err := c.Show(ctxT(t), &api.ShowRequest{Model: chatModel})
		if err != nil {
			t.Fatalf("Show: %v", err)
		}
		want, err := direct.Show(ctxT(t), &api.ShowRequest{Model: chatModel})
		if err != nil {
			t.Fatalf("Show direct: %v", err)
		}
		assertSameShow(t, got, want)
	})

	t.Run("ShowByNameLikeCLI", func(t *testing.T) {
		// The ollama CLI sends the deprecated "name" with an empty "model".
		body, _ := json.Marshal(api.ShowRequest{Name: chatModel})
		if !bytes.Contains(body, []byte(`"model":""`)) {
			t.Fatalf("request body %s does not look like the CLI's", body)
		}
		var got api.ShowResponse
		status := postJSON(t, st.URL+"/api/show", body, &got)
		if status != http.StatusOK {
			t.Fatalf("POST /api/show %s: status %d", body, status)
		}
		want, err := direct.Show(ctxT(t), &api.ShowRequest{Model: chatModel})
		if err != nil {
			t.Fatal(err)
		}
		assertSameShow(t, &got, want)
	})

	t.Run("ChatStream", func(t *testing.T) {
		var parts []string
		var last api.ChatResponse
		err := c.Chat(ctxT(t), &api.ChatRequest{
			Model:    chatModel,
			Messages: []api.Message{{Role: "user", Content: "hello there"}},
			// Stream nil: the server default (streamed) applies.
		}, func(r api.ChatResponse) error {
			if !r.Done {
				parts = append(parts, r.Message.Content)
			}
			last = r
			return nil
		})
		if err != nil {
			t.Fatalf("Chat: %v", err)
		}
		assertTokens(t, parts, tokens)
		if !last.Done || last.DoneReason != "stop" || last.EvalCount != tokens || last.Model != chatModel {
			t.Errorf("final chunk = %+v, want done, done_reason stop, eval_count %d, model %q", last, tokens, chatModel)
		}
	})

	t.Run("ChatNoStream", func(t *testing.T) {
		var calls []api.ChatResponse
		err := c.Chat(ctxT(t), &api.ChatRequest{
			Model:    chatModel,
			Messages: []api.Message{{Role: "user", Content: "hello"}},
			Stream:   new(false),
		}, func(r api.ChatResponse) error { calls = append(calls, r); return nil })
		if err != nil {
			t.Fatalf("Chat: %v", err)
		}
		if len(calls) != 1 {
			t.Fatalf("stream:false gave %d callbacks, want 1", len(calls))
		}
		r := calls[0]
		if r.Message.Content != fakeollama.Answer(tokens) || !r.Done || r.EvalCount != tokens || r.Message.Role != "assistant" {
			t.Errorf("answer = %+v, want content %q, done, eval_count %d", r, fakeollama.Answer(tokens), tokens)
		}
	})

	t.Run("ChatNumPredict", func(t *testing.T) {
		var parts []string
		var last api.ChatResponse
		err := c.Chat(ctxT(t), &api.ChatRequest{
			Model:    chatModel,
			Messages: []api.Message{{Role: "user", Content: "hi"}},
			Options:  map[string]any{"num_predict": 2},
		}, func(r api.ChatResponse) error {
			if !r.Done {
				parts = append(parts, r.Message.Content)
			}
			last = r
			return nil
		})
		if err != nil {
			t.Fatalf("Chat: %v", err)
		}
		// The options reached the node unchanged.
		assertTokens(t, parts, 2)
		if last.DoneReason != "length" {
			t.Errorf("done_reason = %q, want length", last.DoneReason)
		}
	})

	t.Run("GenerateStream", func(t *testing.T) {
		var parts []string
		var last api.GenerateResponse
		err := c.Generate(ctxT(t), &api.GenerateRequest{Model: chatModel, Prompt: "why is the sky blue"},
			func(r api.GenerateResponse) error {
				if !r.Done {
					parts = append(parts, r.Response)
				}
				last = r
				return nil
			})
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		assertTokens(t, parts, tokens)
		if !last.Done || last.EvalCount != tokens || len(last.Context) == 0 {
			t.Errorf("final chunk = %+v, want done with eval_count %d and a context", last, tokens)
		}
	})

	t.Run("GenerateNoStream", func(t *testing.T) {
		var calls []api.GenerateResponse
		err := c.Generate(ctxT(t), &api.GenerateRequest{Model: chatModel, Prompt: "hi", Stream: new(false)},
			func(r api.GenerateResponse) error { calls = append(calls, r); return nil })
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		if len(calls) != 1 || calls[0].Response != fakeollama.Answer(tokens) || !calls[0].Done {
			t.Errorf("stream:false answers = %+v, want one with response %q", calls, fakeollama.Answer(tokens))
		}
	})

	t.Run("Embed", func(t *testing.T) {
		inputs := []string{"first text", "second text"}
		resp, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: embedModel, Input: inputs})
		if err != nil {
			t.Fatalf("Embed: %v", err)
		}
		if resp.Model != embedModel || len(resp.Embeddings) != len(inputs) {
			t.Fatalf("Embed = model %q, %d vectors; want %q, %d", resp.Model, len(resp.Embeddings), embedModel, len(inputs))
		}
		for i, in := range inputs {
			if want := fakeollama.Vector(in, 8); !slices.Equal(resp.Embeddings[i], want) {
				t.Errorf("vector %d = %v, want %v", i, resp.Embeddings[i], want)
			}
		}
	})

	t.Run("EmbeddingsLegacy", func(t *testing.T) {
		got, err := c.Embeddings(ctxT(t), &api.EmbeddingRequest{Model: embedModel, Prompt: "some text"})
		if err != nil {
			t.Fatalf("Embeddings: %v", err)
		}
		want, err := direct.Embeddings(ctxT(t), &api.EmbeddingRequest{Model: embedModel, Prompt: "some text"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Embedding) == 0 || !slices.Equal(got.Embedding, want.Embedding) {
			t.Errorf("Embeddings = %v, want %v", got.Embedding, want.Embedding)
		}
	})

	t.Run("ModelOnOneNode", func(t *testing.T) {
		// Only node B has qwen2: the request must land there.
		before := st.Nodes[1].Requests("/api/generate")
		var calls []api.GenerateResponse
		err := c.Generate(ctxT(t), &api.GenerateRequest{Model: onlyModelB, Prompt: "hi", Stream: new(false)},
			func(r api.GenerateResponse) error { calls = append(calls, r); return nil })
		if err != nil {
			t.Fatalf("Generate %s: %v", onlyModelB, err)
		}
		if got := st.Nodes[1].Requests("/api/generate") - before; got != 1 {
			t.Errorf("node B got %d generate requests, want 1", got)
		}
		if len(calls) != 1 || calls[0].Model != onlyModelB {
			t.Errorf("answer = %+v, want model echoed as %q", calls, onlyModelB)
		}
	})

	t.Run("ForeignHostHeader", func(t *testing.T) {
		// A loopback Ollama answers 403 to a foreign Host (the fakes run
		// with CheckHost); the proxy must send the node's own.
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, st.URL+"/api/show", strings.NewReader(`{"model":"llama3"}`))
		req.Host = "balancer.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("with Host balancer.example.com: status %d %s, want 200", resp.StatusCode, b)
		}
	})

	t.Run("UnknownModel404", func(t *testing.T) {
		checks := map[string]func() error{
			"chat": func() error {
				return c.Chat(ctxT(t), &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "x"}}},
					func(api.ChatResponse) error { return nil })
			},
			"generate": func() error {
				return c.Generate(ctxT(t), &api.GenerateRequest{Model: "nope", Prompt: "x"},
					func(api.GenerateResponse) error { return nil })
			},
			"show": func() error { _, err := c.Show(ctxT(t), &api.ShowRequest{Model: "nope"}); return err },
			"embed": func() error {
				_, err := c.Embed(ctxT(t), &api.EmbedRequest{Model: "nope", Input: "x"})
				return err
			},
			"embeddings": func() error {
				_, err := c.Embeddings(ctxT(t), &api.EmbeddingRequest{Model: "nope", Prompt: "x"})
				return err
			},
		}
		for name, call := range checks {
			err := call()
			var se api.StatusError
			if !errors.As(err, &se) {
				t.Errorf("%s: error %v (%T), want api.StatusError", name, err, err)
				continue
			}
			if se.StatusCode != http.StatusNotFound || !strings.Contains(se.ErrorMessage, "nope") {
				t.Errorf("%s: %+v, want 404 naming the model", name, se)
			}
		}
	})

	// Last: a successful pull adds a model to the nodes.
	t.Run("PullProgress", func(t *testing.T) {
		var statuses []string
		var sawLayer bool
		err := c.Pull(ctxT(t), &api.PullRequest{Model: "tinyllama"}, func(p api.ProgressResponse) error {
			statuses = append(statuses, p.Status)
			if strings.HasPrefix(p.Status, "pulling ") && p.Status != "pulling manifest" && p.Total > 0 {
				sawLayer = true
			}
			return nil
		})
		skipIfNoPullRoute(t, err)
		if err != nil {
			t.Fatalf("Pull: %v (statuses %q)", err, statuses)
		}
		if len(statuses) < 3 || statuses[0] != "pulling manifest" || statuses[len(statuses)-1] != "success" || !sawLayer {
			t.Errorf("progress statuses = %q, want pulling manifest, layer progress with totals, …, success", statuses)
		}
		for i, n := range st.Nodes {
			if !slices.Contains(n.Models(), "tinyllama:latest") {
				t.Errorf("node %d models = %q: the pull did not reach it", i, n.Models())
			}
		}
		// Routable at once (the proxy refreshes the node's models after a
		// pull), not after the next model refresh.
		var calls []api.GenerateResponse
		err = c.Generate(ctxT(t), &api.GenerateRequest{Model: "tinyllama", Prompt: "hi", Stream: new(false)},
			func(r api.GenerateResponse) error { calls = append(calls, r); return nil })
		if err != nil {
			t.Errorf("Generate on the just-pulled model: %v", err)
		}

		// The ollama CLI's pull: the deprecated "name" with an empty "model".
		body, _ := json.Marshal(api.PullRequest{Name: "phi3"})
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, st.URL+"/api/pull", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if resp.StatusCode != http.StatusOK || lines[len(lines)-1] != `{"status":"success"}` {
			t.Errorf("raw pull %s: status %d, body %s; want 200 ending with {\"status\":\"success\"}", body, resp.StatusCode, raw)
		}
		for i, n := range st.Nodes {
			if !slices.Contains(n.Models(), "phi3:latest") {
				t.Errorf("node %d models = %q: the CLI-style pull did not reach it", i, n.Models())
			}
		}
	})
}

// skipIfNoPullRoute skips while the proxy has no /api/pull (the management
// work adds it).
func skipIfNoPullRoute(t *testing.T, err error) {
	t.Helper()
	var se api.StatusError
	if !errors.As(err, &se) {
		return
	}
	switch {
	case se.StatusCode == http.StatusNotFound && strings.Contains(se.ErrorMessage, "no route"),
		se.StatusCode == http.StatusMethodNotAllowed,
		se.StatusCode == http.StatusNotImplemented:
		t.Skipf("the proxy has no POST /api/pull yet (%d %s): waiting for the management work (issue 5: Ollama's own /api/pull pulls on every enabled node with merged progress)", se.StatusCode, se.ErrorMessage)
	case se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden:
		t.Skipf("POST /api/pull needs credentials this test does not have yet (%d %s)", se.StatusCode, se.ErrorMessage)
	}
}

// TestGoClientMidStreamError: when every node fails in the middle of a
// stream, the Go client (which ignores a truncated body) must still return an
// error, because the proxy ends the stream with an {"error":…} line.
func TestGoClientMidStreamError(t *testing.T) {
	st := startStack(t, defaultNodes(nil))
	c := newClient(t, st.URL)
	chat := func(stream *bool) ([]string, bool, error) {
		var parts []string
		done := false
		err := c.Chat(ctxT(t), &api.ChatRequest{
			Model:    chatModel,
			Messages: []api.Message{{Role: "user", Content: "hello"}},
			Stream:   stream,
		}, func(r api.ChatResponse) error {
			if r.Done {
				done = true
			} else {
				parts = append(parts, r.Message.Content)
			}
			return nil
		})
		return parts, done, err
	}

	t.Run("RunnerCrashLine", func(t *testing.T) {
		// The node itself sends Ollama's error line; it must pass through.
		st.each(func(n *fakeollama.Server) { n.SetErrorAfter(2) })
		defer st.each(func(n *fakeollama.Server) { n.ClearFaults() })
		parts, done, err := chat(nil)
		if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Fatalf("Chat err = %v, want the node's runner error", err)
		}
		var se api.StatusError
		if errors.As(err, &se) {
			t.Errorf("err = %#v: a mid-stream error must not look like a status error", se)
		}
		if done || !slices.Equal(parts, []string{fakeollama.Token(0), fakeollama.Token(1)}) {
			t.Errorf("before the error got parts %q (done %v), want the first two tokens", parts, done)
		}
	})

	t.Run("ConnectionCut", func(t *testing.T) {
		// The node dies after two tokens (no final line, no chunked
		// terminator). Talking to a node directly, the Go client would
		// return nil here; through the proxy it must see an error.
		st.waitReady(t)
		st.each(func(n *fakeollama.Server) { n.SetDropAfter(2) })
		defer st.each(func(n *fakeollama.Server) { n.ClearFaults() })
		parts, done, err := chat(nil)
		if err == nil {
			t.Fatalf("Chat returned nil after the node was cut mid-stream (parts %q): the truncation was silent", parts)
		}
		t.Logf("error seen by the Go client: %v", err)
		var se api.StatusError
		if errors.As(err, &se) {
			t.Errorf("err = %#v: a mid-stream error must not look like a status error", se)
		}
		if done || !slices.Equal(parts, []string{fakeollama.Token(0), fakeollama.Token(1)}) {
			t.Errorf("before the error got parts %q (done %v), want the first two tokens", parts, done)
		}
	})

	t.Run("ConnectionCutNoStream", func(t *testing.T) {
		// stream:false: the fake closes before any byte, on every node, so
		// there is no node left to fail over to.
		st.waitReady(t)
		st.each(func(n *fakeollama.Server) { n.SetDropAfter(2) })
		defer st.each(func(n *fakeollama.Server) { n.ClearFaults() })
		parts, _, err := chat(new(false))
		if err == nil {
			t.Fatalf("Chat stream:false returned nil with every node cut (parts %q)", parts)
		}
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode < 500 {
			t.Errorf("err = %v (%T), want a 5xx api.StatusError", err, err)
		}
	})
}

// TestGoClientCancel: cancelling the context in the middle of a stream stops
// the generation on the node at once.
func TestGoClientCancel(t *testing.T) {
	st := startStack(t, defaultNodes(func(o *fakeollama.Options) {
		o.Tokens = 200
		o.TokenDelay = 20 * time.Millisecond // 4 s if not cancelled
	}))
	c := newClient(t, st.URL)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	got := 0
	start := time.Now()
	err := c.Chat(ctx, &api.ChatRequest{Model: chatModel, Messages: []api.Message{{Role: "user", Content: "long"}}},
		func(r api.ChatResponse) error {
			got++
			if got == 3 {
				cancel()
			}
			return nil
		})
	returned := time.Since(start)
	t.Logf("Chat returned %v after %d chunks in %v", err, got, returned)
	if returned > 2*time.Second {
		t.Errorf("Chat took %v to return after the cancel", returned)
	}
	if got < 3 || got > 10 {
		t.Errorf("got %d chunks, want the stream to stop soon after the 3rd", got)
	}
	if n := st.requests("/api/chat"); n != 1 {
		t.Errorf("nodes got %d chat requests, want 1", n)
	}
	if !eventually(2*time.Second, func() bool { return st.cancelled() == 1 && st.active() == 0 }) {
		t.Errorf("after cancel: nodes cancelled=%d active=%d, want 1 and 0 within 2s", st.cancelled(), st.active())
	}
}

// assertTokens checks streamed parts are exactly the fake's first n tokens,
// one per chunk (no coalescing, nothing lost or repeated).
func assertTokens(t *testing.T, parts []string, n int) {
	t.Helper()
	want := make([]string, n)
	for i := range want {
		want[i] = fakeollama.Token(i)
	}
	if !slices.Equal(parts, want) {
		t.Errorf("streamed parts = %q, want %q", parts, want)
	}
}

func assertSameShow(t *testing.T, got, want *api.ShowResponse) {
	t.Helper()
	// The nodes created their model entries at slightly different times.
	g, w := *got, *want
	g.ModifiedAt, w.ModifiedAt = time.Time{}, time.Time{}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("Show through the proxy differs from the node's:\n got %s\nwant %s", gb, wb)
	}
	if got.ModifiedAt.IsZero() || len(got.Capabilities) == 0 {
		t.Errorf("Show lacks modified_at or capabilities: %+v", got)
	}
}

func postJSON(t *testing.T, u string, body []byte, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decoding %s: %v", b, err)
		}
	}
	return resp.StatusCode
}
