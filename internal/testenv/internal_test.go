package testenv

import (
	"fmt"
	"runtime"
	"testing"
)

func TestWithSearchPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u@h:1/db?sslmode=disable",
			"postgres://u@h:1/db?options=-c%20search_path%3Dt_x&sslmode=disable"},
		{"postgresql://u@h/db?options=-c%20statement_timeout%3D5s",
			"postgresql://u@h/db?options=-c%20statement_timeout%3D5s%20-c%20search_path%3Dt_x"},
		{"host=h user=u dbname=db",
			"host=h user=u dbname=db options='-c search_path=t_x'"},
	} {
		got, err := withSearchPath(tc.in, "t_x")
		if err != nil || got != tc.want {
			t.Errorf("withSearchPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := withSearchPath("host=h options='-c x=1'", "t_x"); err == nil {
		t.Error("keyword DSN with options: want an error")
	}
}

// fakeTB records Skipf/Fatalf; both end the calling goroutine like the real ones.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()                     {}
func (f *fakeTB) Skipf(string, ...any)        { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) Fatalf(string, ...any)       { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Logf(string, ...any)         {}
func (f *fakeTB) Cleanup(func())              {}
func (f *fakeTB) Errorf(fmt string, a ...any) { f.failed = true }

func runFake(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	return f
}

func TestUnavailableSkipsOutsideCIFailsInCI(t *testing.T) {
	notInstalled := fmt.Errorf("no initdb: %w", ErrNotInstalled)

	t.Setenv("CI", "")
	if f := runFake(func(tb testing.TB) { unavailable(tb, notInstalled) }); !f.skipped || f.failed {
		t.Errorf("outside CI, not installed: skipped=%v failed=%v; want a skip", f.skipped, f.failed)
	}
	if f := runFake(func(tb testing.TB) { unavailable(tb, fmt.Errorf("boom")) }); f.skipped || !f.failed {
		t.Errorf("outside CI, other error: skipped=%v failed=%v; want a failure", f.skipped, f.failed)
	}
	t.Setenv("CI", "true")
	if f := runFake(func(tb testing.TB) { unavailable(tb, notInstalled) }); f.skipped || !f.failed {
		t.Errorf("CI=true, not installed: skipped=%v failed=%v; want a failure", f.skipped, f.failed)
	}
}
