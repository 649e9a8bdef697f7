//go:build unix

package app

import (
	"net"
	"syscall"
)

// socketIdle reports whether nothing is waiting to be read on conn: no
// byte, no end of stream (the peer closed it), no error (it reset it). It
// peeks without blocking, one system call.
func socketIdle(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		idle = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait
	})
	return err == nil && idle
}
