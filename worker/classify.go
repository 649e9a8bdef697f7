package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/aivonx/aivonx/app/fleet"
)

// classify turns one liveness probe into a verdict. In order:
//  1. a transport error: the node is down ("connection refused",
//     "timeout", or the error's last words);
//  2. 200: healthy;
//  3. 401 or 403: misconfigured, kept apart from down because no restart
//     fixes it (a loopback Ollama rejects a foreign Host with 403, an auth
//     proxy in front of the node wants credentials);
//  4. anything else: unhealthy, with the status.
func classify(status int, err error) (healthy bool, reason string) {
	switch {
	case err != nil:
		return false, transportReason(err)
	case status == http.StatusOK:
		return true, ""
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return false, fmt.Sprintf("misconfigured: HTTP %d from the node (Host check or auth in front of it)", status)
	default:
		return false, fmt.Sprintf("HTTP %d", status)
	}
}

func transportReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "DNS lookup failed: " + dnsErr.Err
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return "unreachable: " + s
}

// nextStatus applies the rise and fall thresholds: a healthy node turns
// unhealthy after fall failed probes in a row, an unhealthy one healthy
// after rise passed probes in a row, and a node never seen before takes its
// first probe's verdict at once (so a fresh start has a fleet right away).
func nextStatus(prev fleet.Status, known, ok bool, reason string, rise, fall int) fleet.Status {
	next := prev
	if ok {
		next.Passes, next.Fails = prev.Passes+1, 0
	} else {
		next.Passes, next.Fails = 0, prev.Fails+1
	}
	switch {
	case !known:
		next.Healthy = ok
	case ok:
		next.Healthy = prev.Healthy || next.Passes >= rise
	default:
		next.Healthy = prev.Healthy && next.Fails < fall
	}
	switch {
	case next.Healthy:
		next.Reason = ""
	case ok:
		next.Reason = fmt.Sprintf("recovering: %d of %d checks passed", next.Passes, rise)
	default:
		next.Reason = reason
	}
	return next
}
