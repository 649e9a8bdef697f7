package fleet

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors shared by the handler, the worker and the storage
// adapters. Adapters translate their driver errors into these at their
// boundary, so callers compare with errors.Is and never import a driver.
var (
	// ErrNotFound means the requested node (or other record) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a write would break a uniqueness rule, such as two
	// nodes with the same base URL.
	ErrConflict = errors.New("conflict")
	// ErrNoCandidate means no enabled, healthy node can take the request.
	ErrNoCandidate = errors.New("no healthy nodes available")
	// ErrUnavailable means a dependency (database, cache) cannot be reached
	// right now; the caller may retry later.
	ErrUnavailable = errors.New("temporarily unavailable")
)

// ModelNotFoundError reports that no enabled node lists the model.
type ModelNotFoundError struct{ Model string }

func (e *ModelNotFoundError) Error() string { return fmt.Sprintf("model '%s' not found", e.Model) }

// ModelUnavailableError reports that the model exists on the fleet but every
// node that serves it is down, disabled or marked unreachable.
type ModelUnavailableError struct{ Model string }

func (e *ModelUnavailableError) Error() string {
	return fmt.Sprintf("model '%s' is only on nodes that are unavailable", e.Model)
}

// Is lets errors.Is(err, ErrNoCandidate) match, since both mean 503.
func (e *ModelUnavailableError) Is(target error) bool { return target == ErrNoCandidate }

// ValidationError is a problem with one field of an admin's input.
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Msg }

// Printable reports whether s is valid UTF-8 without control characters.
// Names an admin gives show up in terminals, log lines and metric labels,
// where an escape sequence, a carriage return or a NUL would be taken for
// something else.
func Printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0
}
