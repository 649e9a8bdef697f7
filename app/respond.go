package app

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/aivonx/aivonx/app/fleet"
)

// dialect is the error shape a route speaks: Ollama's {"error":"…"},
// OpenAI's {"error":{"message":…}} or Anthropic's
// {"type":"error","error":{"type":…,"message":…}} (Ollama's /v1/messages).
type dialect int

const (
	ollamaDialect dialect = iota
	openAIDialect
	anthropicDialect
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with status and message in the route's own error shape.
// dialectOf is the error shape of a path that has no route to say:
// Anthropic's for /v1/messages and below, the OpenAI one elsewhere under
// /v1/, Ollama's everywhere else.
func dialectOf(path string) dialect {
	switch {
	case path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/"):
		return anthropicDialect
	case strings.HasPrefix(path, "/v1/"):
		return openAIDialect
	}
	return ollamaDialect
}

func writeError(w http.ResponseWriter, d dialect, status int, msg string) {
	if d == openAIDialect {
		typ := "api_error"
		if status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusRequestHeaderFieldsTooLarge {
			typ = "invalid_request_error"
		}
		writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
		return
	}
	if d == anthropicDialect {
		writeJSON(w, status, anthropicError(status, msg))
		return
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

// anthropicError is Anthropic's error object, its type named by status as
// the Anthropic SDKs expect.
func anthropicError(status int, msg string) map[string]any {
	typ := "api_error"
	switch status {
	case http.StatusBadRequest, http.StatusRequestHeaderFieldsTooLarge:
		typ = "invalid_request_error"
	case http.StatusUnauthorized:
		typ = "authentication_error"
	case http.StatusForbidden:
		typ = "permission_error"
	case http.StatusNotFound:
		typ = "not_found_error"
	case http.StatusRequestEntityTooLarge:
		typ = "request_too_large"
	case http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case http.StatusServiceUnavailable:
		typ = "overloaded_error"
	}
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
}

// errorStatus is the one mapping from errors to HTTP statuses. Errors it does
// not know become 500 with a generic message; their details belong in the
// log, never in a response.
func errorStatus(err error) (int, string) {
	var notFound *fleet.ModelNotFoundError
	var invalid *fleet.ValidationError
	switch {
	case errors.As(err, &notFound):
		return http.StatusNotFound, err.Error()
	case errors.As(err, &invalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, fleet.ErrNoCandidate):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, fleet.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, fleet.ErrConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, fleet.ErrUnavailable):
		return http.StatusServiceUnavailable, "the store is unavailable (database down, or its disk full?): this change was not saved, try again shortly; proxying is not affected"
	}
	return http.StatusInternalServerError, "internal error"
}

func writeErr(w http.ResponseWriter, r *http.Request, d dialect, err error) {
	// A field's error also names the field, as the management API's do, so
	// that a form shows it under that field ("error" is unchanged).
	var invalid *fleet.ValidationError
	if d == ollamaDialect && errors.As(err, &invalid) && invalid.Field != "" {
		writeFieldErrors(w, fieldErrors{invalid.Field: {invalid.Msg}})
		return
	}
	status, msg := errorStatus(err)
	if status == http.StatusInternalServerError {
		if info := accessFrom(r.Context()); info != nil {
			info.err = err
		}
	}
	writeError(w, d, status, msg)
}
