package app

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string
		want    string
	}{
		{"no trusted proxies: the header is not believed", nil, "10.0.0.5:4000", []string{"203.0.113.9"}, "10.0.0.5"},
		{"from a trusted proxy", lb, "10.0.0.5:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"what the client wrote on the left is ignored", lb, "10.0.0.5:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"through two trusted proxies", lb, "10.0.0.5:4000", []string{"203.0.113.9, 10.0.0.7"}, "203.0.113.9"},
		{"header lines in order", lb, "10.0.0.5:4000", []string{"1.2.3.4, 203.0.113.9", "10.0.0.7"}, "203.0.113.9"},
		{"from an untrusted peer", lb, "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"junk stops at the last trusted hop", lb, "10.0.0.5:4000", []string{"203.0.113.9, junk, 10.0.0.7"}, "10.0.0.7"},
		{"no header", lb, "10.0.0.5:4000", nil, "10.0.0.5"},
		{"every hop trusted", lb, "10.0.0.5:4000", []string{"10.0.0.9"}, "10.0.0.9"},
		{"IPv6", lb, "[fd00::5]:4000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"IPv4-mapped peer", lb, "[::ffff:10.0.0.5]:4000", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{cfg: Config{Auth: AuthConfig{TrustedProxies: tt.trusted}}}
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := h.clientIP(r); got != tt.want {
				t.Errorf("clientIP = %q, want %q", got, tt.want)
			}
		})
	}
}
