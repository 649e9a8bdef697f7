//go:build !unix

package app

import "net"

// connPeek cannot look at a connection here: a closed one shows only when
// used.
type connPeek struct{}

func newConnPeek(net.Conn) *connPeek { return nil }

func (*connPeek) idle() bool { return true }
