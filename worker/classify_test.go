package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
)

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name        string
		status      int
		err         error
		wantHealthy bool
		wantReason  string
	}{
		{"OK", 200, nil, true, ""},
		{"ErrRefused", 0, fmt.Errorf("get: %w", refused), false, "connection refused"},
		{"ErrTimeout", 0, fmt.Errorf("get: %w", context.DeadlineExceeded), false, "timeout"},
		{"ErrOther", 0, errors.New("get http://x/: EOF"), false, "unreachable: EOF"},
		{"Forbidden", 403, nil, false, "misconfigured: HTTP 403"},
		{"Unauthorized", 401, nil, false, "misconfigured: HTTP 401"},
		{"ServerError", 500, nil, false, "HTTP 500"},
		{"NotFound", 404, nil, false, "HTTP 404"}, // the upstream counted 404 as healthy
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			healthy, reason := classify(tt.status, tt.err)
			if healthy != tt.wantHealthy || !strings.HasPrefix(reason, tt.wantReason) {
				t.Fatalf("classify(%d, %v) = %t, %q; want %t, %q…", tt.status, tt.err, healthy, reason, tt.wantHealthy, tt.wantReason)
			}
		})
	}
}

func TestNextStatus(t *testing.T) {
	up := fleet.Status{Healthy: true}
	down := fleet.Status{Healthy: false, Reason: "connection refused"}
	tests := []struct {
		name        string
		prev        fleet.Status
		known, ok   bool
		wantHealthy bool
		wantReason  string
	}{
		{"FirstProbeUp", fleet.Status{}, false, true, true, ""},
		{"FirstProbeDown", fleet.Status{}, false, false, false, "boom"},
		{"OneFailureIsNotEnoughToFall", up, true, false, true, ""},
		{"SecondFailureFalls", fleet.Status{Healthy: true, Fails: 1}, true, false, false, "boom"},
		{"OnePassIsNotEnoughToRise", down, true, true, false, "recovering: 1 of 2 checks passed"},
		{"SecondPassRises", fleet.Status{Passes: 1}, true, true, true, ""},
		{"StaysDown", fleet.Status{Fails: 5}, true, false, false, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nextStatus(tt.prev, tt.known, tt.ok, "boom", 2, 2)
			if got.Healthy != tt.wantHealthy || got.Reason != tt.wantReason {
				t.Fatalf("nextStatus = healthy %t reason %q; want %t %q", got.Healthy, got.Reason, tt.wantHealthy, tt.wantReason)
			}
		})
	}
}
