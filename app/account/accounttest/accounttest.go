// Package accounttest is the behaviour every account store must show (the
// embedded SQLite store and the Postgres store), as one test suite that each
// adapter runs against its real database:
//
//	func TestAccounts(t *testing.T) {
//		accounttest.Run(t, func(t *testing.T) accounttest.Store { return newStore(t) })
//	}
package accounttest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// Store is the method set of app.AccountStore, declared here so that the
// adapters' tests need not import the handler package.
type Store interface {
	Users(ctx context.Context) ([]account.User, error)
	User(ctx context.Context, id int64) (account.User, error)
	UserByName(ctx context.Context, username string) (account.User, error)
	CountUsers(ctx context.Context) (int, error)
	CreateUser(ctx context.Context, u account.User) (account.User, error)
	UpdateUser(ctx context.Context, u account.User) (account.User, error)
	DeleteUser(ctx context.Context, id int64) error
	EndSessions(ctx context.Context, id int64) error
	Keys(ctx context.Context) ([]account.Key, error)
	CreateKey(ctx context.Context, k account.Key) (account.Key, error)
	KeyByHash(ctx context.Context, hash string) (account.Key, error)
	RevokeKey(ctx context.Context, id int64) error
	RecordUsage(ctx context.Context, usage []account.Usage) error
}

// Run runs the suite; open returns an empty store for each subtest group.
func Run(t *testing.T, open func(t *testing.T) Store) {
	t.Run("Users", func(t *testing.T) { t.Parallel(); testUsers(t, open(t)) })
	t.Run("Keys", func(t *testing.T) { t.Parallel(); testKeys(t, open(t)) })
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testUsers(t *testing.T, s Store) {
	ctx := ctxFor(t)
	if n, err := s.CountUsers(ctx); err != nil || n != 0 {
		t.Fatalf("CountUsers on an empty store = %d, %v", n, err)
	}
	if us, err := s.Users(ctx); err != nil || us == nil || len(us) != 0 {
		t.Fatalf("Users on an empty store = %#v, %v; want an empty, non-nil list", us, err)
	}

	alice, err := s.CreateUser(ctx, account.User{Username: " alice ", Role: account.RoleAdmin, PasswordHash: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if alice.ID == 0 || alice.Username != "alice" || alice.Role != account.RoleAdmin || alice.PasswordHash != "h1" ||
		alice.CreatedAt.IsZero() || time.Since(alice.CreatedAt) > time.Minute {
		t.Fatalf("created %+v", alice)
	}
	bob, err := s.CreateUser(ctx, account.User{Username: "bob", Role: account.RoleViewer, PasswordHash: "h2"})
	if err != nil || bob.ID <= alice.ID {
		t.Fatalf("create bob = %+v, %v", bob, err)
	}

	t.Run("ErrConflict", func(t *testing.T) {
		for _, name := range []string{"alice", "ALICE"} {
			_, err := s.CreateUser(ctx, account.User{Username: name, Role: account.RoleViewer, PasswordHash: "x"})
			if !errors.Is(err, fleet.ErrConflict) {
				t.Errorf("CreateUser(%q) = %v, want ErrConflict", name, err)
			}
		}
	})
	t.Run("ErrValidation", func(t *testing.T) {
		for _, u := range []account.User{
			{Username: "", Role: account.RoleAdmin, PasswordHash: "x"},
			{Username: "carol", Role: "root", PasswordHash: "x"},
			{Username: "carol", Role: account.RoleAdmin},
			{Username: "car ol", Role: account.RoleAdmin, PasswordHash: "x"},
		} {
			var v *fleet.ValidationError
			if _, err := s.CreateUser(ctx, u); !errors.As(err, &v) {
				t.Errorf("CreateUser(%+v) = %v, want a *fleet.ValidationError", u, err)
			}
		}
	})
	t.Run("Read", func(t *testing.T) {
		got, err := s.User(ctx, bob.ID)
		if err != nil || got.Username != "bob" || got.Role != account.RoleViewer || !got.CreatedAt.Equal(bob.CreatedAt) {
			t.Fatalf("User(bob) = %+v, %v; want %+v", got, err, bob)
		}
		got, err = s.UserByName(ctx, "Alice")
		if err != nil || got.ID != alice.ID || got.PasswordHash != "h1" {
			t.Fatalf("UserByName(Alice) = %+v, %v", got, err)
		}
		if _, err := s.User(ctx, bob.ID+100); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("User(missing) = %v, want ErrNotFound", err)
		}
		if _, err := s.UserByName(ctx, "nobody"); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("UserByName(missing) = %v, want ErrNotFound", err)
		}
		us, err := s.Users(ctx)
		if err != nil || len(us) != 2 || us[0].ID != alice.ID || us[1].ID != bob.ID {
			t.Fatalf("Users = %+v, %v", us, err)
		}
		if n, err := s.CountUsers(ctx); err != nil || n != 2 {
			t.Fatalf("CountUsers = %d, %v", n, err)
		}
	})
	t.Run("Update", func(t *testing.T) {
		time.Sleep(2 * time.Millisecond)
		upd := bob
		upd.Username = "renamed-ignored"
		upd.Role, upd.PasswordHash = account.RoleAdmin, "h3"
		got, err := s.UpdateUser(ctx, upd)
		if err != nil {
			t.Fatal(err)
		}
		if got.Username != "bob" || got.Role != account.RoleAdmin || got.PasswordHash != "h3" || !got.UpdatedAt.After(bob.UpdatedAt) {
			t.Fatalf("updated %+v (was %+v)", got, bob)
		}
		upd.ID = bob.ID + 100
		if _, err := s.UpdateUser(ctx, upd); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("UpdateUser(missing) = %v, want ErrNotFound", err)
		}
	})
	t.Run("EndSessions", func(t *testing.T) {
		for want := int64(1); want <= 2; want++ {
			if err := s.EndSessions(ctx, alice.ID); err != nil {
				t.Fatal(err)
			}
			got, err := s.User(ctx, alice.ID)
			if err != nil || got.TokenEpoch != want || got.PasswordHash != "h1" {
				t.Fatalf("after EndSessions: %+v, %v; want token epoch %d", got, err, want)
			}
		}
		// A password change leaves the epoch alone.
		upd, _ := s.User(ctx, alice.ID)
		upd.PasswordHash = "h1b"
		if got, err := s.UpdateUser(ctx, upd); err != nil || got.TokenEpoch != 2 {
			t.Fatalf("UpdateUser = %+v, %v; want token epoch 2", got, err)
		}
		if err := s.EndSessions(ctx, bob.ID+100); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("EndSessions(missing) = %v, want ErrNotFound", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		if err := s.DeleteUser(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, bob.ID); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("second delete = %v, want ErrNotFound", err)
		}
		if n, _ := s.CountUsers(ctx); n != 1 {
			t.Fatalf("CountUsers after delete = %d", n)
		}
		// The name is free again.
		if _, err := s.CreateUser(ctx, account.User{Username: "bob", Role: account.RoleViewer, PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ErrLastAdmin", func(t *testing.T) {
		alice, _ := s.User(ctx, alice.ID)
		viewer := alice
		viewer.Role = account.RoleViewer
		if _, err := s.UpdateUser(ctx, viewer); !errors.Is(err, account.ErrLastAdmin) || !errors.Is(err, fleet.ErrConflict) {
			t.Fatalf("demoting the last admin = %v, want ErrLastAdmin", err)
		}
		if err := s.DeleteUser(ctx, alice.ID); !errors.Is(err, account.ErrLastAdmin) {
			t.Fatalf("deleting the last admin = %v, want ErrLastAdmin", err)
		}
		if got, err := s.UpdateUser(ctx, alice); err != nil || got.Role != account.RoleAdmin {
			t.Fatalf("the last admin's own update = %+v, %v", got, err)
		}
		// Two admins demoting each other at once: one wins, one admin stays.
		carol, err := s.CreateUser(ctx, account.User{Username: "carol", Role: account.RoleAdmin, PasswordHash: "h"})
		if err != nil {
			t.Fatal(err)
		}
		for round := range 10 {
			errs := make(chan error, 2)
			for _, u := range []account.User{alice, carol} {
				go func() {
					u.Role = account.RoleViewer
					_, err := s.UpdateUser(ctx, u)
					errs <- err
				}()
			}
			e1, e2 := <-errs, <-errs
			if (e1 == nil) == (e2 == nil) || !errors.Is(errors.Join(e1, e2), account.ErrLastAdmin) {
				t.Fatalf("round %d: concurrent demotions = %v, %v; want one to fail with ErrLastAdmin", round, e1, e2)
			}
			for _, u := range []account.User{alice, carol} {
				if _, err := s.UpdateUser(ctx, u); err != nil { // both admins again
					t.Fatal(err)
				}
			}
		}
	})
}

func testKeys(t *testing.T, s Store) {
	ctx := ctxFor(t)
	if ks, err := s.Keys(ctx); err != nil || ks == nil || len(ks) != 0 {
		t.Fatalf("Keys on an empty store = %#v, %v; want an empty, non-nil list", ks, err)
	}
	plain, prefix, hash := account.NewKey()
	k1, err := s.CreateKey(ctx, account.Key{Name: " ci ", Prefix: prefix, Hash: hash, RPMLimit: 60})
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID == 0 || k1.Name != "ci" || k1.Prefix != prefix || k1.Hash != account.HashKey(plain) || k1.RPMLimit != 60 ||
		k1.Revoked() || k1.Requests != 0 || k1.LastUsedAt != nil || time.Since(k1.CreatedAt) > time.Minute {
		t.Fatalf("created %+v", k1)
	}
	_, prefix2, hash2 := account.NewKey()
	k2, err := s.CreateKey(ctx, account.Key{Name: "web", Prefix: prefix2, Hash: hash2})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ErrConflict", func(t *testing.T) {
		if _, err := s.CreateKey(ctx, account.Key{Name: "dup", Prefix: prefix, Hash: hash}); !errors.Is(err, fleet.ErrConflict) {
			t.Fatalf("duplicate hash = %v, want ErrConflict", err)
		}
	})
	t.Run("ErrValidation", func(t *testing.T) {
		var v *fleet.ValidationError
		if _, err := s.CreateKey(ctx, account.Key{Name: " ", Prefix: "p", Hash: "h"}); !errors.As(err, &v) {
			t.Fatalf("empty name = %v, want a *fleet.ValidationError", err)
		}
		if _, err := s.CreateKey(ctx, account.Key{Name: "n", Prefix: "p", Hash: "h", RPMLimit: -1}); !errors.As(err, &v) {
			t.Fatalf("negative limit = %v, want a *fleet.ValidationError", err)
		}
	})
	t.Run("Lookup", func(t *testing.T) {
		got, err := s.KeyByHash(ctx, hash)
		if err != nil || got.ID != k1.ID || got.RPMLimit != 60 {
			t.Fatalf("KeyByHash = %+v, %v", got, err)
		}
		if _, err := s.KeyByHash(ctx, account.HashKey("nope")); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("KeyByHash(missing) = %v, want ErrNotFound", err)
		}
	})
	t.Run("Usage", func(t *testing.T) {
		t0 := time.Now().UTC().Truncate(time.Millisecond)
		err := s.RecordUsage(ctx, []account.Usage{
			{KeyID: k1.ID, Requests: 1, PromptTokens: 10, CompletionTokens: 20, LastUsedAt: t0},
			{KeyID: k1.ID, Requests: 2, PromptTokens: 1, CompletionTokens: 2, LastUsedAt: t0.Add(time.Second)},
			{KeyID: k2.ID + 100, Requests: 5, LastUsedAt: t0}, // unknown: ignored
		})
		if err != nil {
			t.Fatal(err)
		}
		// An older record adds its counts but does not move the last use back.
		if err := s.RecordUsage(ctx, []account.Usage{{KeyID: k1.ID, Requests: 1, LastUsedAt: t0.Add(-time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordUsage(ctx, nil); err != nil {
			t.Fatalf("RecordUsage(nil) = %v", err)
		}
		ks, err := s.Keys(ctx)
		if err != nil || len(ks) != 2 {
			t.Fatalf("Keys = %+v, %v", ks, err)
		}
		got := ks[0]
		if got.Requests != 4 || got.PromptTokens != 11 || got.CompletionTokens != 22 || got.LastUsedAt == nil ||
			!got.LastUsedAt.Equal(t0.Add(time.Second)) {
			t.Fatalf("usage of k1 = %+v (last used %v), want 4 requests, 11+22 tokens, last used %v", got, got.LastUsedAt, t0.Add(time.Second))
		}
		if ks[1].Requests != 0 || ks[1].LastUsedAt != nil {
			t.Fatalf("usage of k2 = %+v, want none", ks[1])
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		if err := s.RevokeKey(ctx, k1.ID); err != nil {
			t.Fatal(err)
		}
		got, err := s.KeyByHash(ctx, hash)
		if err != nil || !got.Revoked() || time.Since(*got.RevokedAt) > time.Minute {
			t.Fatalf("after revoke: %+v, %v", got, err)
		}
		first := *got.RevokedAt
		if err := s.RevokeKey(ctx, k1.ID); err != nil {
			t.Fatalf("revoking twice = %v, want nil", err)
		}
		if again, _ := s.KeyByHash(ctx, hash); !again.RevokedAt.Equal(first) {
			t.Fatalf("second revoke moved revoked_at from %v to %v", first, again.RevokedAt)
		}
		if err := s.RevokeKey(ctx, k2.ID+100); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("RevokeKey(missing) = %v, want ErrNotFound", err)
		}
		ks, _ := s.Keys(ctx)
		if len(ks) != 2 || !ks[0].Revoked() || ks[1].Revoked() {
			t.Fatalf("Keys after revoke = %+v", ks)
		}
	})
}
