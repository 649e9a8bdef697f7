package testenv

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Each server lives in a temp dir named aivonx-testenv-<kind>-*, holding an
// "owner" file with the PID of the process that made it. If that process died
// without cleaning up (killed test binary, no TestMain), the next process that
// starts a server removes the dir.
const dirPrefix = "aivonx-testenv-"

func makeRoot(kind string, cred *syscall.Credential) (string, error) {
	root, err := os.MkdirTemp("", dirPrefix+kind+"-")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(root)
		return "", err
	}
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(root)
			return "", err
		}
	}
	return root, nil
}

var sweepOnce sync.Once

// sweepStale removes server dirs whose owner process is gone.
func sweepStale() {
	sweepOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "owner"))
			if err != nil {
				continue // being created right now, or not ours
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				_ = os.RemoveAll(d)
			}
		}
	})
}

// tailFrom returns the last n lines written to path after offset.
func tailFrom(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
