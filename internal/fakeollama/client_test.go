package fakeollama_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

// These tests drive the fake with the real Go client of Ollama v0.17.4.

func newClient(t *testing.T, s *fakeollama.Server) *api.Client {
	t.Helper()
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(u, http.DefaultClient)
}

func defaultOpts() fakeollama.Options {
	return fakeollama.Options{
		Models: []string{"llama3:latest", "nomic-embed-text:latest"},
		Loaded: []string{"llama3:latest"},
	}
}

func statusCode(t *testing.T, err error) int {
	t.Helper()
	var se api.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("want api.StatusError, got %T %v", err, err)
	}
	return se.StatusCode
}

func TestClientHeartbeatVersion(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{Version: "0.99.1"})
	c := newClient(t, s)
	ctx := context.Background()
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Requests("/"); got != 1 {
		t.Fatalf("HEAD / counted %d times", got)
	}
	v, err := c.Version(ctx)
	if err != nil || v != "0.99.1" {
		t.Fatalf("Version = %q, %v", v, err)
	}
	v2, _ := newClient(t, fakeollama.Start(t, fakeollama.Options{})).Version(ctx)
	if v2 != "0.17.4" {
		t.Fatalf("default version %q", v2)
	}
}

func TestClientListAndRunning(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{
		Models: []string{"llama3", "nomic-embed-text:latest"},
		Loaded: []string{"llama3:latest", "llama3:latest"}, // a name can be listed twice
	})
	c := newClient(t, s)
	list, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Models {
		names = append(names, m.Name)
		if m.Model != m.Name || len(m.Digest) != 64 || m.Size == 0 || m.ModifiedAt.IsZero() || m.Details.Format != "gguf" {
			t.Errorf("incomplete entry %+v", m)
		}
	}
	if !slices.Equal(names, []string{"llama3:latest", "nomic-embed-text:latest"}) {
		t.Fatalf("tags = %v", names)
	}
	ps, err := c.ListRunning(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Models) != 2 || ps.Models[0].Name != "llama3:latest" || ps.Models[0].ExpiresAt.IsZero() || ps.Models[0].ContextLength == 0 {
		t.Fatalf("ps = %+v", ps.Models)
	}
	s.SetLoaded()
	ps, _ = c.ListRunning(context.Background())
	if len(ps.Models) != 0 {
		t.Fatalf("ps after SetLoaded() = %+v", ps.Models)
	}
}

func TestClientShow(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	c := newClient(t, s)
	ctx := context.Background()
	resp, err := c.Show(ctx, &api.ShowRequest{Model: "llama3"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Details.Family != "llama" || resp.ModelInfo["general.architecture"] != "llama" || !slices.Contains(resp.Capabilities, "completion") || resp.Modelfile == "" {
		t.Fatalf("show = %+v", resp)
	}
	// The CLI sends the deprecated name field with model "".
	resp, err = c.Show(ctx, &api.ShowRequest{Name: "nomic-embed-text"})
	if err != nil || !slices.Contains(resp.Capabilities, "embedding") {
		t.Fatalf("show by name: %+v %v", resp, err)
	}
	_, err = c.Show(ctx, &api.ShowRequest{Model: "nope"})
	if statusCode(t, err) != 404 || !strings.Contains(err.Error(), "model 'nope' not found") {
		t.Fatalf("show nope: %v", err)
	}
}

func TestClientChat(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	c := newClient(t, s)
	ctx := context.Background()
	msgs := []api.Message{{Role: "user", Content: "why is the sky blue"}}

	// Streamed: the client leaves stream unset, so the server default (true)
	// applies.
	var chunks []api.ChatResponse
	err := c.Chat(ctx, &api.ChatRequest{Model: "llama3", Messages: msgs}, func(r api.ChatResponse) error {
		chunks = append(chunks, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 6 {
		t.Fatalf("got %d chunks, want 5 tokens + done", len(chunks))
	}
	var text strings.Builder
	for _, ch := range chunks[:5] {
		if ch.Done || ch.Model != "llama3" || ch.Message.Role != "assistant" {
			t.Fatalf("bad chunk %+v", ch)
		}
		text.WriteString(ch.Message.Content)
	}
	if text.String() != fakeollama.Answer(5) {
		t.Fatalf("text %q", text.String())
	}
	last := chunks[5]
	if !last.Done || last.DoneReason != "stop" || last.EvalCount != 5 || last.PromptEvalCount != 5 ||
		last.TotalDuration <= 0 || last.LoadDuration <= 0 || last.PromptEvalDuration <= 0 || last.EvalDuration <= 0 {
		t.Fatalf("final chunk %+v", last)
	}
	if h, body, _ := s.LastRequest("/api/chat"); h.Get("Accept") != "application/x-ndjson" || !strings.Contains(string(body), `"why is the sky blue"`) {
		t.Fatalf("last request %v %s", h, body)
	}

	// Not streamed: one object with everything.
	stream := false
	chunks = nil
	err = c.Chat(ctx, &api.ChatRequest{Model: "LLAMA3:latest", Messages: msgs, Stream: &stream, Options: map[string]any{"num_predict": 3}},
		func(r api.ChatResponse) error { chunks = append(chunks, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 1 || chunks[0].Message.Content != fakeollama.Answer(3) || chunks[0].DoneReason != "length" || chunks[0].Model != "LLAMA3:latest" {
		t.Fatalf("non-streamed: %+v", chunks)
	}

	err = c.Chat(ctx, &api.ChatRequest{Model: "nope", Messages: msgs}, func(api.ChatResponse) error { return nil })
	if statusCode(t, err) != 404 || !strings.Contains(err.Error(), "model 'nope' not found") {
		t.Fatalf("chat nope: %v", err)
	}
	err = c.Chat(ctx, &api.ChatRequest{Model: "nomic-embed-text", Messages: msgs}, func(api.ChatResponse) error { return nil })
	if statusCode(t, err) != 400 || !strings.Contains(err.Error(), `"nomic-embed-text" does not support chat`) {
		t.Fatalf("chat on embedding model: %v", err)
	}

	// No messages only loads the model.
	chunks = nil
	err = c.Chat(ctx, &api.ChatRequest{Model: "llama3"}, func(r api.ChatResponse) error { chunks = append(chunks, r); return nil })
	if err != nil || len(chunks) != 1 || chunks[0].DoneReason != "load" || !chunks[0].Done {
		t.Fatalf("load: %+v %v", chunks, err)
	}
}

func TestClientGenerate(t *testing.T) {
	s := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, Tokens: 7})
	c := newClient(t, s)
	ctx := context.Background()

	var chunks []api.GenerateResponse
	err := c.Generate(ctx, &api.GenerateRequest{Model: "llama3", Prompt: "hello"}, func(r api.GenerateResponse) error {
		chunks = append(chunks, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 8 {
		t.Fatalf("%d chunks", len(chunks))
	}
	var text strings.Builder
	for _, ch := range chunks {
		text.WriteString(ch.Response)
	}
	last := chunks[7]
	if text.String() != fakeollama.Answer(7) || !last.Done || len(last.Context) == 0 || last.EvalCount != 7 {
		t.Fatalf("text %q final %+v", text.String(), last)
	}

	stream := false
	chunks = nil
	err = c.Generate(ctx, &api.GenerateRequest{Model: "llama3", Prompt: "hello", Stream: &stream, Raw: true},
		func(r api.GenerateResponse) error { chunks = append(chunks, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 1 || chunks[0].Response != fakeollama.Answer(7) || chunks[0].Context != nil {
		t.Fatalf("non-streamed raw: %+v", chunks)
	}

	err = c.Generate(ctx, &api.GenerateRequest{Model: "nope", Prompt: "x"}, func(api.GenerateResponse) error { return nil })
	if statusCode(t, err) != 404 || !strings.Contains(err.Error(), "model 'nope' not found") {
		t.Fatalf("generate nope: %v", err)
	}
}

func TestClientEmbed(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	c := newClient(t, s)
	ctx := context.Background()
	resp, err := c.Embed(ctx, &api.EmbedRequest{Model: "nomic-embed-text", Input: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Model != "nomic-embed-text" || len(resp.Embeddings) != 2 || len(resp.Embeddings[0]) != 8 {
		t.Fatalf("embed %+v", resp)
	}
	for i, v := range resp.Embeddings {
		var sum float64
		for _, x := range v {
			sum += float64(x) * float64(x)
		}
		if sum < 0.999 || sum > 1.001 {
			t.Fatalf("vector %d not normalized: %v", i, sum)
		}
		if !slices.Equal(v, fakeollama.Vector([]string{"a", "b"}[i], 8)) {
			t.Fatalf("vector %d not deterministic", i)
		}
	}
	resp, err = c.Embed(ctx, &api.EmbedRequest{Model: "nomic-embed-text", Input: "just one", Dimensions: 4})
	if err != nil || len(resp.Embeddings) != 1 || len(resp.Embeddings[0]) != 4 {
		t.Fatalf("embed string: %+v %v", resp, err)
	}
	_, err = c.Embed(ctx, &api.EmbedRequest{Model: "nope", Input: "x"})
	if statusCode(t, err) != 404 || !strings.Contains(err.Error(), `model "nope" not found, try pulling it first`) {
		t.Fatalf("embed nope: %v", err)
	}

	legacy, err := c.Embeddings(ctx, &api.EmbeddingRequest{Model: "nomic-embed-text", Prompt: "hello"})
	if err != nil || len(legacy.Embedding) != 8 {
		t.Fatalf("embeddings: %+v %v", legacy, err)
	}
	_, err = c.Embeddings(ctx, &api.EmbeddingRequest{Model: "nope", Prompt: "x"})
	if statusCode(t, err) != 404 {
		t.Fatalf("embeddings nope: %v", err)
	}
}

func TestClientPullDeleteCopyCreatePush(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	c := newClient(t, s)
	ctx := context.Background()

	var statuses []api.ProgressResponse
	err := c.Pull(ctx, &api.PullRequest{Model: "mistral"}, func(p api.ProgressResponse) error {
		statuses = append(statuses, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if statuses[0].Status != "pulling manifest" || statuses[len(statuses)-1].Status != "success" {
		t.Fatalf("pull statuses %+v", statuses)
	}
	var sawProgress, sawVerify bool
	for _, p := range statuses {
		if strings.HasPrefix(p.Status, "pulling ") && p.Status != "pulling manifest" {
			if !strings.HasPrefix(p.Digest, "sha256:") || p.Total == 0 || len(p.Status) != len("pulling ")+12 {
				t.Fatalf("bad layer progress %+v", p)
			}
			if p.Completed > 0 && p.Completed < p.Total {
				sawProgress = true
			}
		}
		sawVerify = sawVerify || p.Status == "verifying sha256 digest"
	}
	if !sawProgress || !sawVerify {
		t.Fatalf("pull statuses %+v", statuses)
	}
	if !slices.Contains(s.Models(), "mistral:latest") {
		t.Fatalf("pulled model missing from tags: %v", s.Models())
	}
	// The pulled model is usable.
	if err := c.Chat(ctx, &api.ChatRequest{Model: "mistral", Messages: []api.Message{{Role: "user", Content: "hi"}}}, func(api.ChatResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}

	if err := c.Copy(ctx, &api.CopyRequest{Source: "mistral", Destination: "mistral-copy"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Copy(ctx, &api.CopyRequest{Source: "nope", Destination: "x"}); statusCode(t, err) != 404 {
		t.Fatalf("copy nope: %v", err)
	}

	if err := c.Delete(ctx, &api.DeleteRequest{Model: "mistral"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &api.DeleteRequest{Name: "mistral-copy:latest"}); err != nil {
		t.Fatal(err)
	}
	err = c.Delete(ctx, &api.DeleteRequest{Model: "mistral"})
	if statusCode(t, err) != 404 || !strings.Contains(err.Error(), "model 'mistral' not found") {
		t.Fatalf("second delete: %v", err)
	}
	if slices.Contains(s.Models(), "mistral:latest") {
		t.Fatalf("deleted model still listed: %v", s.Models())
	}

	statuses = nil
	err = c.Create(ctx, &api.CreateRequest{Model: "my-llama", From: "llama3", System: "be brief"}, func(p api.ProgressResponse) error {
		statuses = append(statuses, p)
		return nil
	})
	if err != nil || statuses[len(statuses)-1].Status != "success" || !slices.Contains(s.Models(), "my-llama:latest") {
		t.Fatalf("create: %+v %v %v", statuses, err, s.Models())
	}

	statuses = nil
	err = c.Push(ctx, &api.PushRequest{Model: "my-llama"}, func(p api.ProgressResponse) error {
		statuses = append(statuses, p)
		return nil
	})
	if err != nil || statuses[0].Status != "retrieving manifest" || statuses[len(statuses)-1].Status != "success" {
		t.Fatalf("push: %+v %v", statuses, err)
	}
	err = c.Push(ctx, &api.PushRequest{Model: "nope"}, func(api.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Fatalf("push nope: %v", err)
	}
}

func TestClientBlobs(t *testing.T) {
	s := fakeollama.Start(t, defaultOpts())
	c := newClient(t, s)
	ctx := context.Background()
	const digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" // sha256("hello")
	if err := c.CreateBlob(ctx, digest, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	err := c.CreateBlob(ctx, digest[:len(digest)-1]+"5", strings.NewReader("hello"))
	if statusCode(t, err) != 400 || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("mismatch: %v", err)
	}
}
