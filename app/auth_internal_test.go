package app

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/aivonx/aivonx/app/account"
)

// Tokens issued before logouts had epochs carried sha256(password hash):
// they stay valid for a user who never logged out since, and every logout
// or password change gives a new version.
func TestTokenVersion(t *testing.T) {
	sum := sha256.Sum256([]byte("$2a$hash"))
	before := hex.EncodeToString(sum[:6])
	u := account.User{PasswordHash: "$2a$hash"}
	if got := tokenVersion(u); got != before {
		t.Fatalf("epoch 0: %s, want the pre-epoch version %s", got, before)
	}
	seen := map[string]bool{before: true}
	for _, v := range []account.User{{PasswordHash: "$2a$hash", TokenEpoch: 1}, {PasswordHash: "$2a$hash", TokenEpoch: 2}, {PasswordHash: "$2a$other"}} {
		if got := tokenVersion(v); seen[got] {
			t.Fatalf("%+v repeats version %s", v, got)
		} else {
			seen[got] = true
		}
	}
}
