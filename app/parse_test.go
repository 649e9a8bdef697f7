package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
)

func TestParseModel(t *testing.T) {
	tests := []struct {
		body      string
		want      string
		wantField string
	}{
		{body: `{"model":"llama3","messages":[]}`, want: "llama3"},
		{body: `{"name":"llama3"}`, want: "llama3"}, // the ollama CLI on /api/show and /api/pull
		{body: `{"model":"","name":"llama3"}`, want: "llama3"},
		{body: `{"model":"  llama3:8b "}`, want: "llama3:8b"},
		{body: `{"model":"a","name":"b"}`, want: "a"},
		{body: ``, wantField: "body"},
		{body: `   `, wantField: "body"},
		{body: `{bad`, wantField: "body"},
		{body: `[1]`, wantField: "body"},
		{body: `"x"`, wantField: "body"},
		{body: `null`, wantField: "body"},                    // encoding/json would take it for an empty object
		{body: "\u00a0{\"model\":\"x\"}", wantField: "body"}, // no-break space is not JSON white space
		{body: " \t\n{\"model\":\"x\"}\r\n", want: "x"},
		{body: `{"model":3}`, wantField: "model"},
		{body: `{"model":null}`, wantField: "model"},
		{body: `{"messages":[]}`, wantField: "model"},
		{body: "{\"model\":\"\xff\"}", want: "\ufffd"},
	}
	for _, tt := range tests {
		got, err := parseModel([]byte(tt.body))
		if tt.wantField != "" {
			var ve *fleet.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.wantField {
				t.Errorf("parseModel(%q) = %q, %v; want a %q ValidationError", tt.body, got, err, tt.wantField)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseModel(%q) = %q, %v; want %q", tt.body, got, err, tt.want)
		}
	}
}

func TestParseRequestLoadFields(t *testing.T) {
	chat, generate := route{loadsWithout: "messages"}, route{loadsWithout: "prompt"}
	for body, want := range map[string][3]bool{ // chat load-only, generate load-only, keep_alive zero
		`{"model":"m"}`:                                {true, true, false},
		`{"model":"m","prompt":""}`:                    {true, true, false},
		`{"model":"m","prompt":" "}`:                   {true, false, false},
		`{"model":"m","messages":[ ]}`:                 {true, true, false},
		`{"model":"m","messages":[{"role":"user"}]}`:   {false, true, false},
		`{"model":"m","messages":null,"keep_alive":0}`: {true, true, true},
		`{"model":"m","keep_alive":0.0}`:               {true, true, true},
		`{"model":"m","Keep_Alive":"0s"}`:              {true, true, true},
		`{"model":"m","keep_alive":"0m"}`:              {true, true, true},
		`{"model":"m","keep_alive":"5m"}`:              {true, true, false},
		`{"model":"m","keep_alive":-1}`:                {true, true, false},
		`{"model":"m","keep_alive":"soon"}`:            {true, true, false},
		`{"model":"m","prompt":"hi","keep_alive":0}`:   {true, false, true},
		// A chat with messages and an empty prompt is a chat: each route
		// looks at its own field only.
		`{"model":"m","messages":[{"role":"user"}],"prompt":"","keep_alive":0}`: {false, true, true},
	} {
		f, err := parseRequest([]byte(body))
		if err != nil || f.loadOnly(chat) != want[0] || f.loadOnly(generate) != want[1] || f.keepAliveZero != want[2] {
			t.Errorf("parseRequest(%s): chat load-only %v, generate load-only %v, keep_alive zero %v, %v; want %v",
				body, f.loadOnly(chat), f.loadOnly(generate), f.keepAliveZero, err, want)
		}
	}
}

// FuzzParseModel: any input gives a model or a ValidationError, never a
// panic, and the top-level scanner agrees with encoding/json, except that
// a body of null is refused as not an object (encoding/json decodes it
// into a struct as if it were {}).
func FuzzParseModel(f *testing.F) {
	for _, s := range []string{`{"model":"llama3"}`, `{"name":"x"}`, `{`, `[]`, `{"model":1}`, "\xff",
		`{"model":"a","model":"b"}`, `{"m\u006fdel":"esc"}`, `{"a":[1,{"model":"inner"}],"model":"top"}`,
		`{"a":"}\"]","name":"n"}`, `{"n":-1.5e3,"model":true}`, `{ "model" : "sp" , "x" : null }`, `{"model":null,"name":"n"}`,
		`{"model":"m","stream":false}`, `{"model":"m","Stream":true,"stream":null}`, `{"model":"m","stream":"no"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, err := parseRequest(body)
		model := fields.model
		var ref struct {
			Model *string `json:"model"`
			Name  *string `json:"name"`
		}
		refErr := json.Unmarshal(body, &ref)
		if err != nil {
			var ve *fleet.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("parseModel(%q) error %T %v is not a ValidationError", body, err, err)
			}
			if refErr == nil && ve.Field != "model" && ve.Field != "name" && string(bytes.Trim(body, jsonSpace)) != "null" {
				t.Fatalf("parseModel(%q) = %v, but encoding/json accepts it", body, err)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("parseModel(%q) = %q, but encoding/json says %v", body, model, refErr)
		}
		want := ""
		if ref.Model != nil {
			want = strings.TrimSpace(*ref.Model)
		}
		if want == "" && ref.Name != nil {
			want = strings.TrimSpace(*ref.Name)
		}
		if model != want {
			t.Fatalf("parseModel(%q) = %q, encoding/json reads %q", body, model, want)
		}
		// "stream" as Ollama's *bool reads it, when it is a boolean or null.
		var sref struct {
			Stream *bool `json:"stream"`
		}
		if json.Unmarshal(body, &sref) == nil {
			if fields.streamSet != (sref.Stream != nil) || sref.Stream != nil && *sref.Stream != fields.stream {
				t.Fatalf("parseRequest(%q) stream = %v (set %v), encoding/json reads %v", body, fields.stream, fields.streamSet, sref.Stream)
			}
		}
	})
}

func TestTailTokens(t *testing.T) {
	stream := strings.Repeat(`{"model":"m","message":{"content":"tok"},"done":false}`+"\n", 200) +
		`{"model":"m","done":true,"prompt_eval_count":12,"prompt_eval_duration":5,"eval_count":34,"eval_duration":9}` + "\n"
	for _, chunk := range []int{1, 7, 100, 5000} {
		var tl tail
		for i := 0; i < len(stream); i += chunk {
			tl.add([]byte(stream[i:min(i+chunk, len(stream))]))
		}
		if p, c := tl.tokens(); p != 12 || c != 34 {
			t.Fatalf("chunk %d: tokens = %d, %d; want 12, 34", chunk, p, c)
		}
	}
	// A generate's last line carries the whole context before the counts;
	// the tail only needs what follows it.
	var gen tail
	gen.add([]byte(`{"model":"llama3","created_at":"2026-12-01T10:00:00.123456789Z","response":"","done":true,"done_reason":"stop","context":[` +
		strings.Repeat("128006,", 3000) + `128009],"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,` +
		`"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}` + "\n"))
	if p, c := gen.tokens(); p != 26 || c != 282 {
		t.Fatalf("generate tokens = %d, %d; want 26, 282", p, c)
	}
	var sse tail
	sse.add([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7,\"total_tokens\":10}}\n\ndata: [DONE]\n\n"))
	if p, c := sse.tokens(); p != 3 || c != 7 {
		t.Fatalf("sse tokens = %d, %d; want 3, 7", p, c)
	}
	// Anthropic's /v1/messages (its message_delta carries both) and the
	// Responses API name them input_tokens and output_tokens.
	var anthropic tail
	anthropic.add([]byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":12,\"output_tokens\":7}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	if p, c := anthropic.tokens(); p != 12 || c != 7 {
		t.Fatalf("anthropic tokens = %d, %d; want 12, 7", p, c)
	}
	var responses tail
	responses.add([]byte(`{"id":"resp_1","output":[],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"total_tokens":7}}`))
	if p, c := responses.tokens(); p != 5 || c != 2 {
		t.Fatalf("responses tokens = %d, %d; want 5, 2", p, c)
	}
}

func TestTailComplete(t *testing.T) {
	tests := []struct {
		kind streamKind
		body string
		want bool
	}{
		{ndjsonBody, `{"done":false}` + "\n" + `{"done":true,"eval_count":2}` + "\n", true},
		{ndjsonBody, `{"done":true,"eval_count":2}`, false}, // its line break never came
		{ndjsonBody, `{"done":false}` + "\n", false},
		{ndjsonBody, `{"status":"success"}` + "\n", true},
		{ndjsonBody, `{"status":"pulling manifest"}` + "\n", false},
		{ndjsonBody, `{"response":"","done":true,"context":[` + strings.Repeat("1,", 400) + `2],"eval_count":9,"eval_duration":7}` + "\n", true},
		{sseBody, "data: {}\n\ndata: [DONE]\n\n", true},
		{sseBody, "data: {}\n\n", false},
		{sseBody, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", true},
		{plainBody, `{"done":true}` + "\n", false},
	}
	for _, tt := range tests {
		var tl tail
		tl.add([]byte(tt.body))
		if got := tl.complete(tt.kind); got != tt.want {
			t.Errorf("complete(%d, %q) = %v; want %v", tt.kind, tt.body, got, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"0.17.4", "0.17.4", 0},
		{"0.9.0", "0.17.4", -1},
		{"1.0.0", "0.99.99", 1},
		{"0.17.4-rc1", "0.17.4", -1},
		{"v0.5", "0.5.0", 0},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func BenchmarkParseModel(b *testing.B) {
	body := []byte(`{"model":"llama3","messages":[{"role":"user","content":"Why is the sky blue? Answer in one short paragraph."}],"stream":true,"options":{"temperature":0.2}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseModel(body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestShortReasonHidesAddresses(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 41234},
		Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 11434}, Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 11434},
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for err, want := range map[error]string{
		fmt.Errorf("read response: %w", reset):   "read response: read: connection reset by peer",
		reset:                                    "read: connection reset by peer",
		refused:                                  "connection refused",
		errors.New("node closed the connection"): "node closed the connection",
	} {
		if got := shortReason(err); got != want || strings.Contains(got, "10.0.0") {
			t.Errorf("shortReason(%v) = %q; want %q", err, got, want)
		}
	}
}
