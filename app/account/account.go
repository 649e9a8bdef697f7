// Package account is the vocabulary of users and API keys shared by the
// handler (package app), the stores (infra/sqlite, infra/postgres) and the
// CLI: the record types, roles, password hashing and key generation. Like
// package fleet it never imports the handler or a driver, so a store can
// return its types without importing app.
//
// Errors: stores return fleet.ErrNotFound for a missing user or key,
// fleet.ErrConflict for a taken username and ErrLastAdmin for a write that
// would leave no admin; the functions here return a *fleet.ValidationError
// for bad input.
package account

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/aivonx/aivonx/app/fleet"
)

// ErrLastAdmin is what a store returns when an update or a delete would
// leave no admin; it matches fleet.ErrConflict. Stores check it in the
// same transaction as the write, so that two admins demoting each other
// at once cannot both succeed.
var ErrLastAdmin = fmt.Errorf("%w: the last admin cannot be removed or demoted", fleet.ErrConflict)

// Role is what a user may do.
type Role string

const (
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
	// RoleViewer may read management and state routes (GET), nothing else.
	RoleViewer Role = "viewer"
)

// ParseRole accepts "admin" and "viewer" (any case).
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleAdmin, RoleViewer:
		return r, nil
	}
	return "", &fleet.ValidationError{Field: "role", Msg: "must be admin or viewer"}
}

// User is a person who logs in to the API or the web UI.
type User struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
	Role     Role   `json:"role"`
	// PasswordHash is the bcrypt hash. It is never serialised.
	PasswordHash string `json:"-"`
	// TokenEpoch counts the user's logouts: tokens issued before the last
	// one are void. It is never serialised.
	TokenEpoch int64     `json:"-"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Validate normalises the username (trimmed) and checks the fields a store
// writes: a username of 1-64 characters without spaces or control
// characters, a known role and a password hash.
func (u *User) Validate() error {
	u.Username = strings.TrimSpace(u.Username)
	if err := ValidateUsername(u.Username); err != nil {
		return err
	}
	if _, err := ParseRole(string(u.Role)); err != nil {
		return err
	}
	if u.PasswordHash == "" {
		return &fleet.ValidationError{Field: "password", Msg: "is required"}
	}
	return nil
}

// ValidateUsername checks a username: 1-64 characters, no whitespace or
// control characters.
func ValidateUsername(name string) error {
	switch {
	case name == "":
		return &fleet.ValidationError{Field: "username", Msg: "is required"}
	case utf8.RuneCountInString(name) > 64:
		return &fleet.ValidationError{Field: "username", Msg: "must be at most 64 characters"}
	case strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return &fleet.ValidationError{Field: "username", Msg: "must not contain spaces or control characters"}
	}
	return nil
}

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 8

// HashPassword validates a new password and returns its bcrypt hash. bcrypt
// reads at most 72 bytes, so longer passwords are refused rather than
// silently truncated.
func HashPassword(password string) (string, error) {
	switch {
	case utf8.RuneCountInString(password) < MinPasswordLen:
		return "", &fleet.ValidationError{Field: "password", Msg: fmt.Sprintf("must be at least %d characters", MinPasswordLen)}
	case len(password) > 72:
		return "", &fleet.ValidationError{Field: "password", Msg: "must be at most 72 bytes"}
	}
	b, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(b), nil
}

// dummyHash is compared against when a login names no known user, so that
// the answer takes as long as for a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("aivonx-no-such-user"), bcrypt.DefaultCost)

// CheckPassword reports whether password matches hash. An empty hash (no
// such user) is compared against a dummy hash so that both cases take the
// same time.
func CheckPassword(hash, password string) bool {
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// Key is an API key of an inference client. The plaintext exists only once,
// in the answer to its creation; stores keep its SHA-256 hash.
type Key struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	// Prefix is the start of the plaintext ("aivx_AbCd"), shown in lists so
	// that an operator can tell keys apart.
	Prefix string `json:"prefix"`
	// Hash is HashKey(plaintext). It is never serialised.
	Hash string `json:"-"`
	// RPMLimit is the most requests per minute the key may make; zero means
	// no limit.
	RPMLimit  int        `json:"rpm_limit"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	// Usage so far.
	Requests         int64      `json:"requests"`
	PromptTokens     int64      `json:"prompt_tokens"`
	CompletionTokens int64      `json:"completion_tokens"`
	LastUsedAt       *time.Time `json:"last_used_at"`
}

// Revoked reports whether the key was revoked.
func (k Key) Revoked() bool { return k.RevokedAt != nil }

// Validate normalises the name (trimmed) and checks the fields a store
// writes.
func (k *Key) Validate() error {
	k.Name = strings.TrimSpace(k.Name)
	switch {
	case k.Name == "":
		return &fleet.ValidationError{Field: "name", Msg: "is required"}
	case utf8.RuneCountInString(k.Name) > 100:
		return &fleet.ValidationError{Field: "name", Msg: "must be at most 100 characters"}
	case !fleet.Printable(k.Name):
		return &fleet.ValidationError{Field: "name", Msg: "must not contain control characters"}
	case k.RPMLimit < 0:
		return &fleet.ValidationError{Field: "rpm_limit", Msg: "must not be negative"}
	case k.Hash == "" || k.Prefix == "":
		return errors.New("key: hash and prefix are required")
	}
	return nil
}

// Usage is what one key did since the last time usage was recorded; stores
// add it to the key's totals.
type Usage struct {
	KeyID            int64
	Requests         int64
	PromptTokens     int64
	CompletionTokens int64
	LastUsedAt       time.Time
}

// KeyPrefix starts every API key, so that keys are recognisable in code
// and in secret scanners.
const KeyPrefix = "aivx_"

const (
	keyRandLen   = 32
	keyLen       = len(KeyPrefix) + keyRandLen
	displayLen   = len(KeyPrefix) + 4
	base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// NewKey returns a new key: its plaintext ("aivx_" and 32 random base62
// characters, about 190 bits), the prefix to display and the hash to store.
func NewKey() (plaintext, prefix, hash string) {
	b := make([]byte, 0, keyLen)
	b = append(b, KeyPrefix...)
	var buf [1]byte
	for len(b) < keyLen {
		rand.Read(buf[:]) // never returns an error (crypto/rand, Go 1.24+)
		// Rejection sampling: 248 = 4*62, so the digits stay uniform.
		if buf[0] < 248 {
			b = append(b, base62Digits[buf[0]%62])
		}
	}
	plaintext = string(b)
	return plaintext, plaintext[:displayLen], HashKey(plaintext)
}

// LooksLikeKey reports whether s has the shape of a key NewKey makes. The
// handler looks up only such strings, so that the dummy keys OpenAI clients
// send ("ollama", "sk-…") cost no lookup.
func LooksLikeKey(s string) bool {
	if len(s) != keyLen || !strings.HasPrefix(s, KeyPrefix) {
		return false
	}
	for i := len(KeyPrefix); i < len(s); i++ {
		if strings.IndexByte(base62Digits, s[i]) < 0 {
			return false
		}
	}
	return true
}

// HashKey returns the hex SHA-256 of a key's plaintext. A fast hash is right
// here: the key is 190 random bits, not a password.
func HashKey(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}

// MergeUsage sums usage records of the same key, keeping the latest use, so
// that a store writes one update per key. Order follows first appearance.
func MergeUsage(us []Usage) []Usage {
	out := make([]Usage, 0, len(us))
	at := make(map[int64]int, len(us))
	for _, u := range us {
		i, ok := at[u.KeyID]
		if !ok {
			at[u.KeyID] = len(out)
			out = append(out, u)
			continue
		}
		m := &out[i]
		m.Requests += u.Requests
		m.PromptTokens += u.PromptTokens
		m.CompletionTokens += u.CompletionTokens
		if u.LastUsedAt.After(m.LastUsedAt) {
			m.LastUsedAt = u.LastUsedAt
		}
	}
	return out
}
