//go:build unix

package app

import (
	"net"
	"syscall"
)

// connPeek looks at an idle connection without reading from it or
// blocking: one system call. Made once per connection, so that the check
// before each reuse allocates nothing.
type connPeek struct {
	rc    syscall.RawConn
	check func(fd uintptr) bool
	quiet bool // the last check found nothing to read: no byte, no end, no error
}

func newConnPeek(conn net.Conn) *connPeek {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &connPeek{rc: rc}
	p.check = func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.quiet = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait
	}
	return p
}

// idle reports whether nothing is waiting to be read: the peer has not
// closed the connection, reset it, or sent anything. A nil connPeek cannot
// tell, and says yes.
func (p *connPeek) idle() bool {
	if p == nil {
		return true
	}
	p.quiet = false
	return p.rc.Read(p.check) == nil && p.quiet
}
