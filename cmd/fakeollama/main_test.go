package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunPrintsAddressAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--models", "llama3:latest, nomic-embed-text:latest", "--tokens", "2", "--token-delay", "1ms", "--version", "0.17.4"}, pw, io.Discard)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listening on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("first line %q", line)
	}
	resp, err := http.Post(url+"/api/generate", "application/json", strings.NewReader(`{"model":"llama3","prompt":"x","stream":false}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"response":"The quick"`) {
		t.Fatalf("generate: %s", body)
	}
	resp, err = http.Get(url + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"name":"nomic-embed-text:latest"`) {
		t.Fatalf("tags: %s", body)
	}

	cancel() // what SIGTERM does in main
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return")
	}
	if _, err := http.Get(url + "/"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	if err := run(context.Background(), []string{"--tokens", "x"}, io.Discard, io.Discard); err == nil {
		t.Fatal("bad flag accepted")
	}
	if err := run(context.Background(), []string{"extra"}, io.Discard, io.Discard); err == nil {
		t.Fatal("extra argument accepted")
	}
}
