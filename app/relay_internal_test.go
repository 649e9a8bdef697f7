package app

import (
	"strings"
	"testing"
)

// holdsLine finds a stream's last event however the reads split it, and
// only as a line of its own, not inside an event's data.
func TestHoldsLine(t *testing.T) {
	stream := "event: delta\ndata: {\"text\":\"say event: message_stop\\n\"}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	lines := []string{"event: message_stop", "event: error"}
	for _, tail := range []int{0, 30, 512} { // how much of the earlier bytes the tail keeps (0: all)
		for cut := 0; cut <= len(stream); cut++ {
			found := false
			for _, part := range [][2]int{{0, cut}, {cut, len(stream)}} {
				prev := stream[:part[0]]
				prev = prev[max(len(prev)-tail, 0):]
				if tail == 0 {
					prev = stream[:part[0]] // the whole stream so far
				}
				found = found || holdsLine([]byte(prev), []byte(stream[part[0]:part[1]]), lines)
			}
			if !found {
				t.Fatalf("tail %d, cut at %d: message_stop not found", tail, cut)
			}
		}
	}
	// The same words in data, or a longer event name, are not the line.
	for _, s := range []string{
		"event: delta\ndata: {\"text\":\"event: message_stop\\n\"}\n\n",
		"event: message_stopped\ndata: {}\n\n",
		"xevent: message_stop\n",
		"event: message_stop", // not ended yet: the next read decides
	} {
		for cut := 0; cut <= len(s); cut++ {
			if holdsLine([]byte(s[:cut]), []byte(s[cut:]), lines) || holdsLine(nil, []byte(s[:cut]), lines) {
				t.Errorf("%q, cut at %d: found", s, cut)
			}
		}
	}
	if !holdsLine([]byte(strings.Repeat("x", 600)+"\nevent: mess"), []byte("age_stop\r\n"), lines) {
		t.Error("a line split after a long one, ended by CRLF: not found")
	}
}

// The usage event goes however the reads cut the stream, and nothing else
// does: each split point of the stream, into two reads, gives the same.
func TestUsageHiderSplits(t *testing.T) {
	const (
		token = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n"
		usage = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n"
		done  = "data: [DONE]\n\n"
	)
	stream := token + token + usage + done
	want := token + token + done
	for cut := 0; cut <= len(stream); cut++ {
		var u usageHider
		var got []byte
		for _, part := range []string{stream[:cut], stream[cut:]} {
			got = append(got, u.filter([]byte(part))...)
		}
		got = append(got, u.held...)
		if string(got) != want {
			t.Fatalf("cut at %d: got %q, want %q", cut, got, want)
		}
	}
	// A stream with no usage event, and CRLF lines, pass whole.
	var u usageHider
	crlf := "data: {\"choices\":[{\"x\":1}]}\r\n\r\ndata: [DONE]\r\n\r\n"
	if got := u.filter([]byte(crlf)); string(got) != crlf {
		t.Fatalf("got %q", got)
	}
}
