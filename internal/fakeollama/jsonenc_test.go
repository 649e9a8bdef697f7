package fakeollama

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " backslash \`, "<script>&amp;</script>",
		"ctl \x00\x01\x1f\x7f \b\f\n\r\t", "utf8 é ü 日本 🎉", "bad \xff\xfe utf8",
		"seps \u2028 \u2029", "trailing\xc3",
	} {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("a<b>&\"\\\x00\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}

func TestAppendTimeMatchesMarshalJSON(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC),
		time.Now().UTC(),
	} {
		want, _ := tm.MarshalJSON()
		if got := appendTime(nil, tm); string(got) != string(want) {
			t.Errorf("got %s want %s", got, want)
		}
	}
}
