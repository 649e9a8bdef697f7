package app

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/aivonx/aivonx/app/fleet"
)

// The union lists models as Ollama does, the latest first, comparing times
// as times (nodes write them in their own zones), the latest copy winning.
func TestUnionModelsOrder(t *testing.T) {
	model := func(raw string) fleet.Model {
		var m fleet.Model
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a := fleet.Member{Status: fleet.Status{Models: []fleet.Model{
		model(`{"name":"old:latest","modified_at":"2026-11-01T10:00:00Z"}`),
		model(`{"name":"shared:latest","modified_at":"2026-11-03T10:00:00Z","digest":"a"}`),
	}, Loaded: []fleet.Model{
		model(`{"name":"soon:latest","expires_at":"2026-11-03T10:01:00Z"}`),
		model(`{"name":"later:latest","expires_at":"2026-11-03T10:09:00Z"}`),
	}}}
	b := fleet.Member{Status: fleet.Status{Models: []fleet.Model{
		// 17:30+08:00 is 09:30Z: older than old's 10:00Z, though after it as text.
		model(`{"name":"zoned:latest","modified_at":"2026-11-01T17:30:00+08:00"}`),
		model(`{"name":"shared:latest","modified_at":"2026-11-03T19:00:00+08:00","digest":"b"}`),
		model(`{"name":"b-first:latest","modified_at":"2026-11-02T09:30:00Z"}`),
	}}}
	names := func(ms []fleet.Model) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	tags := unionModels([]fleet.Member{a, b}, func(s fleet.Status) []fleet.Model { return s.Models }, modifiedAt)
	if want := []string{"shared:latest", "b-first:latest", "old:latest", "zoned:latest"}; !slices.Equal(names(tags), want) {
		t.Fatalf("tags %v, want %v", names(tags), want)
	}
	// b's copy, 19:00+08:00, is 11:00Z: later than a's 10:00Z.
	if string(tags[0].Raw) != `{"name":"shared:latest","modified_at":"2026-11-03T19:00:00+08:00","digest":"b"}` {
		t.Fatalf("the copy kept is %s; want b's, the later", tags[0].Raw)
	}
	ps := unionModels([]fleet.Member{a, b}, func(s fleet.Status) []fleet.Model { return s.Loaded }, expiresAt)
	if want := []string{"later:latest", "soon:latest"}; !slices.Equal(names(ps), want) {
		t.Fatalf("ps %v, want %v (the longest remaining first)", names(ps), want)
	}
}
