package testenv

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// process is the life of a throwaway server that a test (or, for the shared
// servers, this process) owns: it keeps its port and directory across Stop
// and Start, and Close deletes the directory. PostgresServer and
// RedisServer add how to start and probe their own server.
type process struct {
	tb      testing.TB // nil when launched outside a test
	name    string     // for messages: "postgres", "redis-server"
	root    string     // its directory, deleted by Close
	port    int
	logPath string
	stopSig syscall.Signal // a graceful shutdown

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	closed bool
}

// ownedBy ties the server to a test: failures are the test's, and it is
// closed when the test ends.
func (p *process) ownedBy(tb testing.TB) {
	p.tb = tb
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("testenv: %v", err)
		}
	})
}

// Port returns the server's TCP port on 127.0.0.1.
func (p *process) Port() int { return p.port }

// launch starts the server unless it runs, with its output appended to its
// log, and waits until ready succeeds (tried every interval, for at most
// within). newCmd builds the command.
func (p *process) launch(newCmd func(log *os.File) *exec.Cmd, ready func(context.Context) error, within, interval time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("%s server already closed", p.name)
	}
	if p.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	offset, _ := logf.Seek(0, io.SeekEnd)
	cmd := newCmd(logf)
	if err := startChild(cmd); err != nil {
		return fmt.Errorf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		err := ready(rctx)
		rcancel()
		if err == nil {
			p.cmd, p.exited = cmd, exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited during startup:\n%s", p.name, tailFrom(p.logPath, offset, 20))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s was not ready within %v: %v\n%s", p.name, within, err, tailFrom(p.logPath, offset, 20))
		case <-time.After(interval):
		}
	}
}

// Pause freezes the server (SIGSTOP): its connections stay open and
// nothing answers, as with a server that hangs. Resume (or Stop) undoes it.
func (p *process) Pause() { p.signal(syscall.SIGSTOP) }

// Resume wakes a paused server (SIGCONT).
func (p *process) Resume() { p.signal(syscall.SIGCONT) }

func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Stop shuts the server down gracefully (data, if any, is kept). It does
// nothing if the server is not running.
func (p *process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot stop
	}
	stopProcess(p.cmd, p.exited, p.stopSig)
	p.cmd, p.exited = nil, nil
}

// Close stops the server and deletes its directory. Later calls do nothing.
func (p *process) Close() error {
	p.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return os.RemoveAll(p.root)
}

// fatal reports err like t.Fatal in a test, else panics.
func (p *process) fatal(err error) {
	if p.tb == nil {
		panic("testenv: " + err.Error())
	}
	p.tb.Helper()
	p.tb.Fatalf("testenv: %v", err)
}

// stopProcess sends sig, waits up to 15s for the exit, then kills.
func stopProcess(cmd *exec.Cmd, exited chan struct{}, sig syscall.Signal) {
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}
