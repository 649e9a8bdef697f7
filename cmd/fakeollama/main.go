// Command fakeollama serves the fake Ollama of internal/fakeollama, for the
// Node.js client tests and the load benchmark.
//
//	fakeollama --addr 127.0.0.1:0 --models llama3:latest,nomic-embed-text:latest \
//	    --tokens 5 --token-delay 20ms --version 0.17.4 [--check-host] [--control]
//
// The first (and only) line on stdout is "listening on http://HOST:PORT",
// printed once connections are accepted. It serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/aivonx/aivonx/internal/fakeollama"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fakeollama:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx is done, and reports where it listens on
// stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fakeollama", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	models := fs.String("models", "llama3:latest,nomic-embed-text:latest", "comma-separated installed models, as /api/tags lists them")
	loaded := fs.String("loaded", "", "comma-separated models /api/ps lists as loaded")
	var opts fakeollama.Options
	fs.IntVar(&opts.Tokens, "tokens", 5, "tokens per generated answer")
	fs.DurationVar(&opts.TokenDelay, "token-delay", 0, "pause before each generated token")
	fs.StringVar(&opts.Version, "version", "0.17.4", "version reported by /api/version")
	fs.IntVar(&opts.EmbeddingDims, "embedding-dims", 8, "length of embedding vectors")
	fs.BoolVar(&opts.CheckHost, "check-host", false, "answer 403 to non-local Host headers, like Ollama on loopback")
	fs.BoolVar(&opts.Control, "control", false, "serve the /_fake/* control endpoints (faults, stats)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	opts.Models = splitList(*models)
	opts.Loaded = splitList(*loaded)

	srv := fakeollama.New(opts)
	if err := srv.Listen(*addr); err != nil {
		return err
	}
	defer srv.Close()
	if _, err := fmt.Fprintf(stdout, "listening on %s\n", srv.URL()); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
