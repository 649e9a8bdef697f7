package logfile_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/infra/logfile"
)

func write(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func collect(t *testing.T, r *logfile.Reader, limit int) []string {
	t.Helper()
	var out []string
	err := r.Backward(context.Background(), func(line []byte) bool {
		out = append(out, string(line))
		return limit == 0 || len(out) < limit
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBackwardAcrossRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aivonx.log")
	write(t, filepath.Join(dir, "aivonx-2026-01-01T10-00-00.000.log"), "1", "2")
	write(t, filepath.Join(dir, "aivonx-2026-01-02T10-00-00.000.log"), "3", "", "4")
	write(t, path, "5", "6")
	write(t, filepath.Join(dir, "other-2026-01-03T10-00-00.000.log"), "x")
	write(t, filepath.Join(dir, "aivonx-notatime.log"), "y")

	for _, block := range []int{1, 2, 3, 7, 4096} {
		r := logfile.NewReader(path)
		r.BlockSize = block
		if got := collect(t, r, 0); !slices.Equal(got, []string{"6", "5", "4", "3", "2", "1"}) {
			t.Fatalf("block %d: %q", block, got)
		}
	}
	r := logfile.NewReader(path)
	if got := collect(t, r, 3); !slices.Equal(got, []string{"6", "5", "4"}) {
		t.Fatalf("stopped early: %q", got)
	}
	files, _ := r.Files()
	if len(files) != 3 || filepath.Base(files[0]) != "aivonx.log" || !strings.Contains(files[2], "2026-01-01") {
		t.Fatalf("files = %q", files)
	}
}

func TestBackwardLongLinesAndBlocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	var lines []string
	for i := range 200 {
		lines = append(lines, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", i*7%300)))
	}
	lines = append(lines[:100], append([]string{strings.Repeat("L", 5000)}, lines[100:]...)...)
	write(t, path, lines...)
	r := logfile.NewReader(path)
	r.BlockSize, r.MaxLine = 64, 1000
	got := collect(t, r, 0)
	if len(got) != 200 {
		t.Fatalf("got %d lines, want 200 (the long one skipped)", len(got))
	}
	for i, line := range got {
		want := fmt.Sprintf(`{"i":%d,`, 199-i)
		if !strings.HasPrefix(line, want) {
			t.Fatalf("line %d = %.40q, want prefix %q", i, line, want)
		}
	}
}

func TestBackwardMissingAndCancelled(t *testing.T) {
	dir := t.TempDir()
	r := logfile.NewReader(filepath.Join(dir, "none", "aivonx.log"))
	if got := collect(t, r, 0); len(got) != 0 {
		t.Fatalf("got %q", got)
	}
	path := filepath.Join(dir, "a.log")
	write(t, path, "1", "2")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := logfile.NewReader(path).Backward(ctx, func([]byte) bool { return true }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestWriterRotatesWhereReaderLooks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aivonx.log")
	w := logfile.NewWriter(path)
	fmt.Fprintln(w, "old")
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w, "new")
	w.Close()
	if got := collect(t, logfile.NewReader(path), 0); !slices.Equal(got, []string{"new", "old"}) {
		t.Fatalf("got %q", got)
	}
}
