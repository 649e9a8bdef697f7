// Package logfile keeps the proxy's JSON log in a size-rotated file and
// reads it back, newest line first, for GET /api/logs.
//
// Writing uses lumberjack: the file named by --log-file grows to
// [MaxSizeMB] and is then renamed to name-<UTC timestamp>.ext, keeping
// [MaxBackups] of those. Reading walks the current file and then the
// rotated ones from their ends, in blocks, so a query for the last page
// reads a few kilobytes whatever the files' size.
//
// One file per process: two processes rotating the same file race
// (lumberjack locks within a process only).
package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Rotation settings.
const (
	MaxSizeMB  = 10
	MaxBackups = 5
)

// backupTimeFormat is lumberjack's timestamp in rotated file names.
const backupTimeFormat = "2006-01-02T15-04-05.000"

// NewWriter returns the rotating writer of path. Close it on exit. Safe
// for concurrent use.
func NewWriter(path string) *lumberjack.Logger {
	return &lumberjack.Logger{Filename: path, MaxSize: MaxSizeMB, MaxBackups: MaxBackups}
}

// Reader reads the log at a path and its rotated copies. Safe for
// concurrent use; it holds no open files between calls.
type Reader struct {
	path string
	// BlockSize is how much is read at a time. Zero means 64 KiB.
	BlockSize int
	// MaxLine is the longest line returned; longer ones are skipped. Zero
	// means 1 MiB.
	MaxLine int
}

// NewReader returns a reader of the log written to path by [NewWriter].
func NewReader(path string) *Reader { return &Reader{path: path} }

// Files returns the log files, newest first: the current one (when it
// exists) then the rotated ones by their timestamps.
func (r *Reader) Files() ([]string, error) {
	dir := filepath.Dir(r.path)
	base := filepath.Base(r.path)
	ext := filepath.Ext(base)
	prefix := strings.TrimSuffix(base, ext) + "-"
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list log files: %w", err)
	}
	type backup struct {
		name string
		at   time.Time
	}
	var backups []backup
	var files []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if name == base {
			files = append(files, filepath.Join(dir, name))
			continue
		}
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ext) {
			continue
		}
		ts := strings.TrimSuffix(strings.TrimPrefix(name, prefix), ext)
		at, err := time.Parse(backupTimeFormat, ts)
		if err != nil {
			continue // not one of ours (or compressed: .gz is not read)
		}
		backups = append(backups, backup{name, at})
	}
	sort.Slice(backups, func(i, j int) bool { return backups[i].at.After(backups[j].at) })
	for _, b := range backups {
		files = append(files, filepath.Join(dir, b.name))
	}
	return files, nil
}

// Backward calls fn with every non-empty line, newest first, across the
// current and rotated files, until fn returns false or ctx ends (then it
// returns ctx's error). line is valid only during the call. A file rotated
// away during the walk is read through its open handle, or skipped when it
// is gone before being opened; the walk never fails for that.
func (r *Reader) Backward(ctx context.Context, fn func(line []byte) bool) error {
	files, err := r.Files()
	if err != nil {
		return err
	}
	block := r.BlockSize
	if block <= 0 {
		block = 64 << 10
	}
	maxLine := r.MaxLine
	if maxLine <= 0 {
		maxLine = 1 << 20
	}
	for _, path := range files {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open log file: %w", err)
		}
		more, err := backward(ctx, f, block, maxLine, fn)
		f.Close()
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// backward reads one file from its end. It returns false when fn asked to
// stop.
func backward(ctx context.Context, f *os.File, block, maxLine int, fn func([]byte) bool) (bool, error) {
	st, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat log file: %w", err)
	}
	pos := st.Size()
	var carry []byte // the start of the text after pos: a line's tail
	overlong := false
	buf := make([]byte, block)
	for pos > 0 {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n := int64(block)
		if pos < n {
			n = pos
		}
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read log file: %w", err)
		}
		data := make([]byte, 0, int(n)+len(carry))
		data = append(data, buf[:n]...)
		data = append(data, carry...)
		// Every segment after the first newline is a whole line.
		end := len(data)
		for {
			i := bytes.LastIndexByte(data[:end], '\n')
			if i < 0 {
				break
			}
			line := data[i+1 : end]
			end = i
			if overlong {
				overlong = false // the tail of a line that was too long
				continue
			}
			if len(bytes.TrimSpace(line)) > 0 && !fn(line) {
				return false, nil
			}
		}
		carry = data[:end]
		if len(carry) > maxLine {
			carry, overlong = nil, true
		}
	}
	if len(bytes.TrimSpace(carry)) > 0 && !overlong {
		return fn(carry), nil
	}
	return true, nil
}
