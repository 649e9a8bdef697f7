package fleet_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/fleet"
)

func TestNormalizeURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "ollama", want: "http://ollama:11434"},
		{in: "ollama:11434", want: "http://ollama:11434"},
		{in: "http://10.0.0.5", want: "http://10.0.0.5:11434"},
		{in: "http://10.0.0.5/", want: "http://10.0.0.5:11434"},
		{in: "  HTTP://GPU-1:8080  ", want: "http://gpu-1:8080"},
		{in: "https://h:8443", want: "https://h:8443"},
		{in: "https://ollama.example.com", want: "https://ollama.example.com:443"},
		{in: "httpd-box", want: "http://httpd-box:11434"}, // the upstream left this without a scheme
		{in: "[::1]:11434", want: "http://[::1]:11434"},
		{in: "http://[::1]", want: "http://[::1]:11434"},
		{in: "", wantErr: true},
		{in: "ftp://x", wantErr: true},
		{in: "http://user:pw@x:1", wantErr: true},
		{in: "http://x:11434/api", wantErr: true},
		{in: "http://x:11434?a=b", wantErr: true},
		{in: "http://x:0", wantErr: true},
		{in: "http://x:65536", wantErr: true},
		{in: "http://x:", wantErr: true},
		{in: "http://:80", wantErr: true},
		{in: "http://a b:1", wantErr: true},
		{in: "http://gpu_1.lan", want: "http://gpu_1.lan:11434"},
		{in: "http://grün.lan", wantErr: true},           // the dialer does not resolve it; xn--grn-0ra.lan it does
		{in: "http://\xe8\xe8.lan", wantErr: true},       // not UTF-8: lowering it made a longer, different host
		{in: "http://[fe80::1%25eth0]:1", wantErr: true}, // zones are not for a shared setting
		{in: strings.Repeat("a", 254), wantErr: true},    // longer than DNS allows; normalised, it was also too long to read back
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := fleet.NormalizeURL(tt.in)
			if tt.wantErr {
				var ve *fleet.ValidationError
				if !errors.As(err, &ve) || ve.Field != "base_url" {
					t.Fatalf("NormalizeURL(%q) = %q, %v; want a base_url ValidationError", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			// Normalising is idempotent.
			if again, err := fleet.NormalizeURL(got); err != nil || again != got {
				t.Fatalf("NormalizeURL(%q) = %q, %v; not idempotent", got, again, err)
			}
		})
	}
}

func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{"ollama", "http://10.0.0.5", "https://h:8443", "[::1]:1", "http://x:0", "\x00", "http://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := fleet.NormalizeURL(s)
		if err != nil {
			return
		}
		again, err := fleet.NormalizeURL(got)
		if err != nil || again != got {
			t.Fatalf("NormalizeURL(%q) = %q; again = %q, %v", s, got, again, err)
		}
	})
}

func TestModelKey(t *testing.T) {
	tests := map[string]string{
		"llama3":                 "llama3:latest",
		"llama3:latest":          "llama3:latest",
		" Llama3:8B ":            "llama3:8b",
		"registry:5000/ns/model": "registry:5000/ns/model:latest",
		"hf.co/user/repo:Q4_K_M": "hf.co/user/repo:q4_k_m",
		"":                       "",
		"ns/model:v1":            "ns/model:v1",
		// Ollama's defaults, filled in by its name parser.
		"library/llama3":                          "llama3:latest",
		"Registry.Ollama.AI/library/llama3:8b":    "llama3:8b",
		"registry.ollama.ai/someone/model":        "someone/model:latest",
		"library/ns/model":                        "library/ns/model:latest",
		"other.registry.example/library/llama3:1": "other.registry.example/library/llama3:1",
		"llama3:": "llama3:latest",
		"https://registry.ollama.ai/library/llama3": "llama3:latest",
		"http://host:5000/ns/model:v2":              "host:5000/ns/model:v2",
		":":                                         "",
	}
	for in, want := range tests {
		if got := fleet.ModelKey(in); got != want {
			t.Errorf("ModelKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func model(name string) fleet.Model {
	raw, _ := json.Marshal(map[string]string{"name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z"})
	var m fleet.Model
	if err := json.Unmarshal(raw, &m); err != nil {
		panic(err)
	}
	return m
}

func TestModelJSONRoundTrip(t *testing.T) {
	in := `{"name":"tiny:latest","model":"tiny:latest","size":508771,"details":{"family":"llama"}}`
	var m fleet.Model
	if err := json.Unmarshal([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != "tiny:latest" {
		t.Fatalf("Name = %q", m.Name)
	}
	out, err := json.Marshal(m)
	if err != nil || string(out) != in {
		t.Fatalf("Marshal = %s, %v; want the node's object untouched", out, err)
	}
}

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func node(id int64, enabled bool) fleet.Node {
	return fleet.Node{ID: id, Name: fmt.Sprintf("n%d", id), BaseURL: fmt.Sprintf("http://n%d:11434", id), Enabled: enabled}
}

func healthy(id int64, age time.Duration, latency time.Duration, models ...string) fleet.Status {
	s := fleet.Status{NodeID: id, Healthy: true, Latency: latency, CheckedAt: now.Add(-age)}
	for _, m := range models {
		s.Models = append(s.Models, model(m))
	}
	return s
}

func ids(cands []fleet.Candidate) []int64 {
	out := []int64{}
	for _, c := range cands {
		out = append(out, c.Node.ID)
	}
	return out
}

func TestCandidates(t *testing.T) {
	routing := fleet.Routing{Now: now, MaxAge: 30 * time.Second}
	tests := []struct {
		name     string
		nodes    []fleet.Node
		statuses []fleet.Status
		model    string
		excluded map[int64]bool
		want     []int64
		wantErr  error
		wantType any
	}{
		{
			name:     "OK",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "llama3:latest"), healthy(2, time.Second, 0, "llama3:latest")},
			model:    "llama3",
			want:     []int64{1, 2},
		},
		{
			name:     "ImplicitLatestTag",
			nodes:    []fleet.Node{node(1, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "llama3")},
			model:    "llama3:latest",
			want:     []int64{1},
		},
		{
			name:     "DisabledNodeIsNeverACandidate",
			nodes:    []fleet.Node{node(1, false), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "m:latest"), healthy(2, time.Second, 0, "m:latest")},
			model:    "m",
			want:     []int64{2},
		},
		{
			name:     "UnhealthyNodeSkipped",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{{NodeID: 1, CheckedAt: now, Models: []fleet.Model{model("m")}}, healthy(2, time.Second, 0, "m")},
			model:    "m",
			want:     []int64{2},
		},
		{
			name:     "PassiveMarkExcludes",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "m"), healthy(2, time.Second, 0, "m")},
			model:    "m",
			excluded: map[int64]bool{1: true},
			want:     []int64{2},
		},
		{
			// With the worker down, a node a replica re-probed itself is the
			// only fresh one: it must not take all the traffic.
			name:     "FreshNotPreferredOverStale",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Hour, 0, "m"), healthy(2, time.Second, 0, "m")},
			model:    "m",
			want:     []int64{1, 2},
		},
		{
			name:     "StaleFleetStillServes",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Hour, 0, "m"), healthy(2, time.Hour, 0, "m")},
			model:    "m",
			want:     []int64{1, 2},
		},
		{
			name:     "ErrModelNotFound",
			nodes:    []fleet.Node{node(1, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "m")},
			model:    "other",
			wantType: &fleet.ModelNotFoundError{},
		},
		{
			name:     "ErrModelUnavailable",
			nodes:    []fleet.Node{node(1, true), node(2, true)},
			statuses: []fleet.Status{{NodeID: 1, CheckedAt: now, Models: []fleet.Model{model("m")}}, healthy(2, time.Second, 0, "other")},
			model:    "m",
			wantType: &fleet.ModelUnavailableError{},
			wantErr:  fleet.ErrNoCandidate,
		},
		{
			// A drained node's model is unavailable, not unknown: to a 404
			// the ollama CLI answers by pulling it onto every other node.
			name:     "ModelOnlyOnADisabledNodeIsUnavailable",
			nodes:    []fleet.Node{node(1, false), node(2, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "m"), healthy(2, time.Second, 0, "other")},
			model:    "m",
			wantType: &fleet.ModelUnavailableError{},
			wantErr:  fleet.ErrNoCandidate,
		},
		{
			name:    "ErrNoCandidateWhenNothingIsHealthy",
			nodes:   []fleet.Node{node(1, true)},
			model:   "m",
			wantErr: fleet.ErrNoCandidate,
		},
		{
			name:    "ErrNoCandidateWithNoNodes",
			model:   "m",
			wantErr: fleet.ErrNoCandidate,
		},
		{
			name:     "StatusOfUnknownNodeIgnored",
			nodes:    []fleet.Node{node(1, true)},
			statuses: []fleet.Status{healthy(1, time.Second, 0, "m"), healthy(9, time.Second, 0, "m")},
			model:    "m",
			want:     []int64{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := routing
			r.Excluded = func(id int64, _ fleet.Status) bool { return tt.excluded[id] }
			got, err := fleet.NewSnapshot(tt.nodes, tt.statuses).Candidates(tt.model, r)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantType != nil {
				if err == nil || fmt.Sprintf("%T", errors.Unwrap(err)) == "" {
					t.Fatalf("err = %v, want %T", err, tt.wantType)
				}
				if fmt.Sprintf("%T", err) != fmt.Sprintf("%T", tt.wantType) {
					t.Fatalf("err = %T (%v), want %T", err, err, tt.wantType)
				}
			}
			if tt.wantErr == nil && tt.wantType == nil {
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(ids(got)) != fmt.Sprint(tt.want) {
					t.Fatalf("candidates = %v, want %v", ids(got), tt.want)
				}
			}
		})
	}
}

func TestNarrowLowestLatency(t *testing.T) {
	c := func(id int64, ms int) fleet.Candidate {
		return fleet.Candidate{Node: node(id, true), Latency: time.Duration(ms) * time.Millisecond}
	}
	tests := []struct {
		name     string
		strategy fleet.Strategy
		in       []fleet.Candidate
		want     []int64
		wantRest []int64
	}{
		{"LeastActiveKeepsAll", fleet.LeastActive, []fleet.Candidate{c(1, 1), c(2, 100)}, []int64{1, 2}, nil},
		{"Fastest", fleet.LowestLatency, []fleet.Candidate{c(1, 10), c(2, 100), c(3, 50)}, []int64{1}, []int64{2, 3}},
		{"NearTiesKept", fleet.LowestLatency, []fleet.Candidate{c(1, 10), c(2, 12), c(3, 50)}, []int64{1, 2}, []int64{3}},
		{"UnknownLatencyFallsBackToAll", fleet.LowestLatency, []fleet.Candidate{c(1, 0), c(2, 0)}, []int64{1, 2}, nil},
		{"UnknownLatencyLosesToKnown", fleet.LowestLatency, []fleet.Candidate{c(1, 0), c(2, 30)}, []int64{2}, []int64{1}},
		{"Single", fleet.LowestLatency, []fleet.Candidate{c(1, 99)}, []int64{1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rest := tt.strategy.Narrow(tt.in)
			if fmt.Sprint(ids(got), ids(rest)) != fmt.Sprint(tt.want, tt.wantRest) {
				t.Fatalf("Narrow = %v, %v; want %v, %v", ids(got), ids(rest), tt.want, tt.wantRest)
			}
		})
	}
}

func TestPickLeast(t *testing.T) {
	loads := []int{3, 1, 2, 1}
	seen := map[int]int{}
	calls := 0
	rnd := func(k int) int { calls++; return calls % k } // deterministic, but not always 0
	for range 100 {
		seen[fleet.PickLeast(len(loads), func(i int) int { return loads[i] }, rnd)]++
	}
	if seen[0] != 0 || seen[2] != 0 {
		t.Fatalf("picked a node that is not least loaded: %v", seen)
	}
	if seen[1] == 0 || seen[3] == 0 {
		t.Fatalf("ties must be broken both ways, got %v", seen)
	}
	if got := fleet.PickLeast(0, nil, rnd); got != -1 {
		t.Fatalf("PickLeast(0) = %d, want -1", got)
	}
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []string{"least_active", "lowest_latency"} {
		if got, err := fleet.ParseStrategy(s); err != nil || string(got) != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	var ve *fleet.ValidationError
	if _, err := fleet.ParseStrategy("random"); !errors.As(err, &ve) || ve.Field != "strategy" {
		t.Errorf("ParseStrategy(random) err = %v, want a strategy ValidationError", err)
	}
}

func TestStatusFresh(t *testing.T) {
	s := fleet.Status{CheckedAt: now.Add(-20 * time.Second)}
	if !s.Fresh(now, 30*time.Second) || s.Fresh(now, 10*time.Second) || (fleet.Status{}).Fresh(now, time.Hour) {
		t.Fatal("Fresh is wrong")
	}
}

func ExamplePickLeast() {
	inFlight := []int{2, 0, 5}
	i := fleet.PickLeast(len(inFlight), func(i int) int { return inFlight[i] }, func(int) int { return 0 })
	fmt.Println(i)
	// Output: 1
}

func TestMarkHolds(t *testing.T) {
	marked := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		st   fleet.Status
		want bool
	}{
		{"CheckedBefore", fleet.Status{Healthy: true, CheckedAt: marked.Add(-time.Second), PassedAt: marked.Add(-time.Second), Passes: 3}, true},
		{"PassedSince", fleet.Status{Healthy: true, CheckedAt: marked.Add(time.Second), PassedAt: marked.Add(time.Second), Passes: 4}, false},
		// Still healthy under the fall threshold, but the check failed: the
		// node stays out.
		{"FailedSince", fleet.Status{Healthy: true, CheckedAt: marked.Add(time.Second), PassedAt: marked.Add(-time.Second), Fails: 1}, true},
		// A check passed after the mark, then one failed (under the fall
		// threshold): the mark was lifted and does not come back.
		{"PassedThenFailed", fleet.Status{Healthy: true, CheckedAt: marked.Add(2 * time.Second), PassedAt: marked.Add(time.Second), Fails: 1}, false},
		{"NoPassKnown", fleet.Status{Healthy: true, CheckedAt: marked.Add(time.Second)}, true},
	} {
		if got := fleet.MarkHolds(marked, tt.st); got != tt.want {
			t.Errorf("%s: MarkHolds = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestMarkedShowsTheNewestReason: a node marked for a cut stream whose
// probes then fail for another reason is shown with the probes' reason.
func TestMarkedShowsTheNewestReason(t *testing.T) {
	marked := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	before := fleet.Status{Healthy: true, CheckedAt: marked.Add(-time.Second)}
	if got := fleet.Marked(before, marked, "unexpected EOF"); got.Healthy || got.Reason != "unreachable: unexpected EOF" {
		t.Fatalf("checked before the mark: %+v", got)
	}
	failedSince := fleet.Status{Healthy: true, CheckedAt: marked.Add(time.Second), Fails: 1, Reason: "connection refused"}
	if got := fleet.Marked(failedSince, marked, "unexpected EOF"); got.Healthy || got.Reason != "connection refused" {
		t.Fatalf("a probe failed since: %+v", got)
	}
}
