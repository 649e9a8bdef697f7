// Package history holds the types of the request log: one record per
// finished request (who, model, node, status, duration, tokens), written in
// batches by the handler and read back by GET /api/requests and the web
// UI's request history. It is a leaf package, so that the stores (SQLite,
// Postgres) implement the handler's RequestLog without importing it.
package history

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one finished request.
type Record struct {
	// ID is the store's own key; zero before the record is written.
	ID int64 `json:"id"`
	// Time is when the request arrived.
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
	// Who is the user or API key behind the request ("key:ci-bot",
	// "user:alice"), empty for an anonymous one.
	Who    string `json:"who"`
	Client string `json:"client"` // the client's address
	Method string `json:"method"`
	Path   string `json:"path"`
	// Model is the model the request named, as the fleet lists it when it
	// does ("llama3:latest" for "llama3"); Node the name of the node that
	// served it. Both are empty when they do not apply.
	Model      string  `json:"model"`
	Node       string  `json:"node"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	// TTFBMS is the time to the response headers (for a stream, to the
	// first token).
	TTFBMS           float64 `json:"ttfb_ms"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Bytes            int64   `json:"bytes"`
	// Error is why the request failed, or why its stream was cut.
	Error string `json:"error"`
}

// Query selects records. Zero fields do not filter.
type Query struct {
	Model, Node, Who string // exact
	// StatusMin and StatusMax bound the status, inclusive.
	StatusMin, StatusMax int
	// Failed keeps the requests that failed: a status of 400 or above, or
	// an error recorded with a 200 (a stream cut mid-way).
	Failed bool
	// Since and Until bound the time, inclusive.
	Since, Until time.Time
	// Limit is the most records returned (a store may cap it at
	// MaxLimit+1); Offset skips that many of the newest matches.
	Limit, Offset int
}

// MaxLimit is the largest page GET /api/requests serves.
const MaxLimit = 200

// Field limits: longer values are cut before they are stored, so that a
// hostile client cannot fill the log with huge strings.
const (
	MaxPathLen  = 512
	MaxTextLen  = 256 // model, node, who, request ID, client
	MaxErrorLen = 500
)

// Clean makes the record storable and returns it: text fields are valid
// UTF-8 without NUL bytes (a request path may decode to anything, and
// Postgres refuses both), cut to their limits.
func (r Record) Clean() Record {
	r.Path = Clip(r.Path, MaxPathLen)
	r.Model = Clip(r.Model, MaxTextLen)
	r.Node = Clip(r.Node, MaxTextLen)
	r.Who = Clip(r.Who, MaxTextLen)
	r.RequestID = Clip(r.RequestID, MaxTextLen)
	r.Client = Clip(r.Client, MaxTextLen)
	r.Method = Clip(r.Method, 16)
	r.Error = Clip(r.Error, MaxErrorLen)
	return r
}

// Clip cuts s to at most n bytes of valid UTF-8 without NUL bytes: what a
// client sent, made fit for a log or a record.
func Clip(s string, n int) string {
	if len(s) > n {
		s = s[:n] // a rune cut in half is dropped below
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}

// Match reports whether r satisfies the filters of q (not its paging): the
// reference semantics the stores implement in SQL.
func (q Query) Match(r Record) bool {
	switch {
	case q.Model != "" && r.Model != q.Model,
		q.Node != "" && r.Node != q.Node,
		q.Who != "" && r.Who != q.Who,
		q.StatusMin != 0 && r.Status < q.StatusMin,
		q.StatusMax != 0 && r.Status > q.StatusMax,
		q.Failed && r.Status < 400 && r.Error == "",
		!q.Since.IsZero() && r.Time.Before(q.Since),
		!q.Until.IsZero() && r.Time.After(q.Until):
		return false
	}
	return true
}
