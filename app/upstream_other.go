//go:build !unix

package app

import "net"

// socketIdle cannot peek here: a closed connection shows only when used.
func socketIdle(net.Conn) bool { return true }
