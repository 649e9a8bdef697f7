package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// readAccountJSON decodes a small JSON body; it answers 400 itself and returns
// false when the body is not valid JSON for v, naming the field at fault in
// the management API's shape rather than in Go's terms.
func (h *Handler) readAccountJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAuthBody))
	if err != nil {
		status, msg := h.bodyReadFailure(err)
		writeError(w, ollamaDialect, status, msg)
		return false
	}
	if !utf8.Valid(body) {
		// encoding/json would save "\xff" as "\ufffd" without a word.
		writeError(w, ollamaDialect, http.StatusBadRequest, "request body must be valid UTF-8")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err = dec.Decode(v); err == nil {
		return true
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		writeFieldErrors(w, fieldErrors{typeErr.Field: {"must be " + jsonKind(typeErr.Type.Kind())}})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for it.
		field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		writeFieldErrors(w, fieldErrors{field: {"is not a known field"}})
	default:
		writeError(w, ollamaDialect, http.StatusBadRequest, "request body must be a JSON object")
	}
	return false
}

// jsonKind names what JSON value a Go field of kind k takes.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// writeAccountErr answers a store error about the user or key id: a 404
// says what was not found, in the node API's words, rather than the
// store's wrapped error.
func writeAccountErr(w http.ResponseWriter, r *http.Request, what string, id int64, err error) {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, ollamaDialect, http.StatusNotFound, what+" not found: "+strconv.FormatInt(id, 10))
		return
	case errors.Is(err, account.ErrLastAdmin):
		err = &accountConflict{"the last admin cannot be removed or demoted"}
	}
	writeErr(w, r, ollamaDialect, err)
}

// accountPathID reads the {id} path value; it answers 404 itself when it is not a
// number.
func accountPathID(w http.ResponseWriter, r *http.Request, what string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, ollamaDialect, http.StatusNotFound, what+" not found")
		return 0, false
	}
	return id, true
}

func (h *Handler) handleUserList(w http.ResponseWriter, r *http.Request) {
	users, err := h.ext.auth.store.Users(r.Context())
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	writeJSON(w, http.StatusOK, users)
}

func (h *Handler) handleUserCreate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Role     string `json:"role"`
	}
	if !h.readAccountJSON(w, r, &body) {
		return
	}
	role, err := account.ParseRole(body.Role)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	if err := account.ValidateUsername(body.Username); err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	hash, err := account.HashPassword(body.Password)
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	u, err := h.ext.auth.store.CreateUser(r.Context(), account.User{Username: body.Username, Role: role, PasswordHash: hash})
	if errors.Is(err, fleet.ErrConflict) {
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "errors": fieldErrors{"username": {"is taken"}}})
		return
	}
	if err != nil {
		writeErr(w, r, ollamaDialect, err)
		return
	}
	h.log.Info("user created", "username", u.Username, "role", string(u.Role), "by", principalFrom(r.Context()).Username)
	writeJSON(w, http.StatusCreated, u)
}

// handleUserUpdate changes a password and/or a role. The last admin cannot
// be demoted.
func (h *Handler) handleUserUpdate(w http.ResponseWriter, r *http.Request) {
	id, ok := accountPathID(w, r, "user")
	if !ok {
		return
	}
	var body struct {
		Password *string `json:"password"`
		Role     *string `json:"role"`
	}
	if !h.readAccountJSON(w, r, &body) {
		return
	}
	st := h.ext.auth
	u, err := st.store.User(r.Context(), id)
	if err != nil {
		writeAccountErr(w, r, "user", id, err)
		return
	}
	if body.Role != nil {
		role, err := account.ParseRole(*body.Role)
		if err != nil {
			writeErr(w, r, ollamaDialect, err)
			return
		}
		u.Role = role // the store keeps the last admin (account.ErrLastAdmin)
	}
	if body.Password != nil {
		if u.PasswordHash, err = account.HashPassword(*body.Password); err != nil {
			writeErr(w, r, ollamaDialect, err)
			return
		}
	}
	if u, err = st.store.UpdateUser(r.Context(), u); err != nil {
		writeAccountErr(w, r, "user", id, err)
		return
	}
	h.log.Info("user updated", "username", u.Username, "role", string(u.Role), "password_changed", body.Password != nil,
		"by", principalFrom(r.Context()).Username)
	writeJSON(w, http.StatusOK, u)
}

// handleUserDelete deletes a user, but never the last admin.
func (h *Handler) handleUserDelete(w http.ResponseWriter, r *http.Request) {
	id, ok := accountPathID(w, r, "user")
	if !ok {
		return
	}
	st := h.ext.auth
	u, err := st.store.User(r.Context(), id)
	if err != nil {
		writeAccountErr(w, r, "user", id, err)
		return
	}
	if err := st.store.DeleteUser(r.Context(), id); err != nil {
		writeAccountErr(w, r, "user", id, err)
		return
	}
	h.log.Info("user deleted", "username", u.Username, "by", principalFrom(r.Context()).Username)
	w.WriteHeader(http.StatusNoContent)
}

type accountConflict struct{ msg string }

func (e *accountConflict) Error() string        { return e.msg }
func (e *accountConflict) Is(target error) bool { return target == fleet.ErrConflict }
