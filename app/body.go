package app

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// idleBody bounds the pauses in a request body's arrival: each read must
// return within idle (nginx's client_body_timeout), or it fails and the
// request ends. Without it a client that declares a body and then sends it
// slowly, or never, holds a connection and a goroutine for ever: the
// server's ReadHeaderTimeout covers only the head.
//
// The deadline is lifted when the body ends or is closed:
// after that, net/http's own read of the connection watches for the client
// leaving while the answer streams, and a deadline left set would end a
// long stream as if the client had gone.
//
// It lives in the request's access record, and reaches net/http's writer
// by the method http.ResponseController would call: no allocation per
// request on the proxy's path.
type idleBody struct {
	io.ReadCloser
	conn  readDeadliner // nil: the writer is not net/http's (Lambda), nothing to bound
	idle  time.Duration
	armed bool // a read deadline is set on the connection
	ended bool // no more deadlines: the body ended
}

// readDeadliner is net/http's ResponseWriter, which sets its connection's
// read deadline.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

func (b *idleBody) Read(p []byte) (int, error) {
	if !b.ended && b.conn != nil {
		if err := b.conn.SetReadDeadline(time.Now().Add(b.idle)); err == nil {
			b.armed = true
		}
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.lift()
	case err != nil:
		// The deadline stays: after the answer net/http drains what is
		// left of the body, and that must fail at once rather than wait
		// for bytes that never come. The connection is then closed.
		b.armed, b.ended = false, true
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.lift()
	return b.ReadCloser.Close()
}

func (b *idleBody) lift() {
	if b.armed {
		_ = b.conn.SetReadDeadline(time.Time{})
		b.armed = false
	}
	b.ended = true
}

// bodyReadFailure is the answer to a request body that could not be read:
// 413 past the route's limit, 408 when it stalled (idleBody), else 400.
func (h *Handler) bodyReadFailure(err error) (status int, msg string) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, fmt.Sprintf("request body stalled: nothing arrived for %s", h.cfg.BodyIdleTimeout)
	}
	return http.StatusBadRequest, "read request body: " + err.Error()
}
