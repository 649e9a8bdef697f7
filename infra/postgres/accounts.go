package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/aivonx/aivonx/app/account"
)

// The account methods of Store keep users and API keys (migration
// 00002_accounts.sql). They satisfy app.AccountStore.

type userRow struct {
	ID           int64     `db:"id"`
	Username     string    `db:"username"`
	PasswordHash string    `db:"password_hash"`
	TokenEpoch   int64     `db:"token_epoch"`
	Role         string    `db:"role"`
	CreatedAt    time.Time `db:"created_at"`
	UpdatedAt    time.Time `db:"updated_at"`
}

func (r userRow) user() account.User {
	return account.User{ID: r.ID, Username: r.Username, PasswordHash: r.PasswordHash, TokenEpoch: r.TokenEpoch,
		Role: account.Role(r.Role), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

const userColumns = "id, username, password_hash, token_epoch, role, created_at, updated_at"

// Users returns every user ordered by ID.
func (s *Store) Users(ctx context.Context) ([]account.User, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY id`)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[userRow])
	if err != nil {
		return nil, translate("list users", err, "")
	}
	users := make([]account.User, len(rs))
	for i, r := range rs {
		users[i] = r.user()
	}
	return users, nil
}

// User returns the user with the given ID, or an error matching
// fleet.ErrNotFound.
func (s *Store) User(ctx context.Context, id int64) (account.User, error) {
	return s.oneUser(ctx, fmt.Sprintf("user %d", id), "", `SELECT `+userColumns+` FROM users WHERE id = $1`, id)
}

// UserByName returns the user with the given username (compared without
// regard to case), or an error matching fleet.ErrNotFound.
func (s *Store) UserByName(ctx context.Context, username string) (account.User, error) {
	return s.oneUser(ctx, "user "+username, "", `SELECT `+userColumns+` FROM users WHERE lower(username) = lower($1)`, strings.TrimSpace(username))
}

// CountUsers returns how many users exist.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, translate("count users", err, "")
}

// CreateUser validates and inserts u and returns it with its ID and times.
// It returns a *fleet.ValidationError for bad input and an error matching
// fleet.ErrConflict when the username is taken.
func (s *Store) CreateUser(ctx context.Context, u account.User) (account.User, error) {
	if err := u.Validate(); err != nil {
		return account.User{}, err
	}
	const q = `INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING ` + userColumns
	return s.oneUser(ctx, "create user", "username "+u.Username+" is taken", q, u.Username, u.PasswordHash, string(u.Role))
}

// UpdateUser replaces the role and password hash of the user with ID u.ID
// (its username stays) and returns the stored user. It returns a
// *fleet.ValidationError for bad input and fleet.ErrNotFound when no such
// user exists.
func (s *Store) UpdateUser(ctx context.Context, u account.User) (account.User, error) {
	if err := u.Validate(); err != nil {
		return account.User{}, err
	}
	op := fmt.Sprintf("update user %d", u.ID)
	var out account.User
	err := s.keepingAdmin(ctx, op, u.ID, u.Role != account.RoleAdmin, func(tx pgx.Tx) (int64, error) {
		rows, err := tx.Query(ctx, `UPDATE users SET password_hash = $2, role = $3, updated_at = now() WHERE id = $1 RETURNING `+userColumns,
			u.ID, u.PasswordHash, string(u.Role))
		if err != nil {
			return 0, err
		}
		users, err := pgx.CollectRows(rows, pgx.RowToStructByName[userRow])
		if len(users) == 1 {
			out = users[0].user()
		}
		return int64(len(users)), err
	})
	return out, err
}

// DeleteUser deletes a user, or returns an error matching fleet.ErrNotFound
// (or account.ErrLastAdmin for the last admin).
func (s *Store) DeleteUser(ctx context.Context, id int64) error {
	return s.keepingAdmin(ctx, fmt.Sprintf("delete user %d", id), id, true, func(tx pgx.Tx) (int64, error) {
		tag, err := tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
		return tag.RowsAffected(), err
	})
}

// keepingAdmin runs write on user id in one transaction with the check
// that, when write takes the admin role from id (removes), another admin
// stays. The admins' rows are locked first: under READ COMMITTED two
// admins demoting each other at once would each still see the other.
func (s *Store) keepingAdmin(ctx context.Context, op string, id int64, removes bool, write func(pgx.Tx) (int64, error)) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return translate(op, err, "")
	}
	defer tx.Rollback(ctx)
	if removes {
		rows, err := tx.Query(ctx, `SELECT id FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE`)
		if err != nil {
			return translate(op, err, "")
		}
		admins, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return translate(op, err, "")
		}
		if len(admins) == 1 && admins[0] == id {
			return fmt.Errorf("%s: %w", op, account.ErrLastAdmin)
		}
	}
	n, err := write(tx)
	if err != nil {
		return translate(op, err, "")
	}
	if n == 0 {
		return translate(op, pgx.ErrNoRows, "")
	}
	return translate(op, tx.Commit(ctx), "")
}

// EndSessions increments the user's token epoch, or returns an error
// matching fleet.ErrNotFound.
func (s *Store) EndSessions(ctx context.Context, id int64) error {
	op := fmt.Sprintf("end sessions of user %d", id)
	tag, err := s.pool.Exec(ctx, `UPDATE users SET token_epoch = token_epoch + 1 WHERE id = $1`, id)
	if err != nil {
		return translate(op, err, "")
	}
	if tag.RowsAffected() == 0 {
		return translate(op, pgx.ErrNoRows, "")
	}
	return nil
}

func (s *Store) oneUser(ctx context.Context, op, conflict, q string, args ...any) (account.User, error) {
	rows, _ := s.pool.Query(ctx, q, args...)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[userRow])
	if err != nil {
		return account.User{}, translate(op, err, conflict)
	}
	return r.user(), nil
}

type keyRow struct {
	ID               int64      `db:"id"`
	Name             string     `db:"name"`
	Prefix           string     `db:"prefix"`
	Hash             string     `db:"hash"`
	RPMLimit         int        `db:"rpm_limit"`
	CreatedAt        time.Time  `db:"created_at"`
	RevokedAt        *time.Time `db:"revoked_at"`
	Requests         int64      `db:"requests"`
	PromptTokens     int64      `db:"prompt_tokens"`
	CompletionTokens int64      `db:"completion_tokens"`
	LastUsedAt       *time.Time `db:"last_used_at"`
}

func (r keyRow) key() account.Key {
	return account.Key{ID: r.ID, Name: r.Name, Prefix: r.Prefix, Hash: r.Hash, RPMLimit: r.RPMLimit,
		CreatedAt: r.CreatedAt, RevokedAt: r.RevokedAt, Requests: r.Requests, PromptTokens: r.PromptTokens,
		CompletionTokens: r.CompletionTokens, LastUsedAt: r.LastUsedAt}
}

const keyColumns = "id, name, prefix, hash, rpm_limit, created_at, revoked_at, requests, prompt_tokens, completion_tokens, last_used_at"

// Keys returns every API key, revoked ones included, ordered by ID.
func (s *Store) Keys(ctx context.Context) ([]account.Key, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY id`)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return nil, translate("list keys", err, "")
	}
	keys := make([]account.Key, len(rs))
	for i, r := range rs {
		keys[i] = r.key()
	}
	return keys, nil
}

// CreateKey validates and inserts k (name, prefix, hash, RPM limit) and
// returns it with its ID and creation time; usage starts at zero. It returns
// a *fleet.ValidationError for bad input and fleet.ErrConflict when the
// hash exists.
func (s *Store) CreateKey(ctx context.Context, k account.Key) (account.Key, error) {
	if err := k.Validate(); err != nil {
		return account.Key{}, err
	}
	const q = `INSERT INTO api_keys (name, prefix, hash, rpm_limit) VALUES ($1, $2, $3, $4) RETURNING ` + keyColumns
	return s.oneKey(ctx, "create key", "key exists", q, k.Name, k.Prefix, k.Hash, k.RPMLimit)
}

// KeyByHash returns the key whose hash is hash, revoked or not, or an error
// matching fleet.ErrNotFound.
func (s *Store) KeyByHash(ctx context.Context, hash string) (account.Key, error) {
	return s.oneKey(ctx, "key by hash", "", `SELECT `+keyColumns+` FROM api_keys WHERE hash = $1`, hash)
}

func (s *Store) oneKey(ctx context.Context, op, conflict, q string, args ...any) (account.Key, error) {
	rows, _ := s.pool.Query(ctx, q, args...)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[keyRow])
	if err != nil {
		return account.Key{}, translate(op, err, conflict)
	}
	return r.key(), nil
}

// RevokeKey marks a key revoked (a no-op when it already is), or returns an
// error matching fleet.ErrNotFound.
func (s *Store) RevokeKey(ctx context.Context, id int64) error {
	op := fmt.Sprintf("revoke key %d", id)
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return translate(op, err, "")
	}
	if tag.RowsAffected() == 0 {
		return translate(op, pgx.ErrNoRows, "")
	}
	return nil
}

// RecordUsage adds each record to its key's totals and moves its last use
// forward, in one statement. Records of unknown keys are ignored.
func (s *Store) RecordUsage(ctx context.Context, usage []account.Usage) error {
	usage = account.MergeUsage(usage)
	if len(usage) == 0 {
		return nil
	}
	ids := make([]int64, len(usage))
	reqs := make([]int64, len(usage))
	prompt := make([]int64, len(usage))
	completion := make([]int64, len(usage))
	at := make([]time.Time, len(usage))
	for i, u := range usage {
		ids[i], reqs[i], prompt[i], completion[i], at[i] = u.KeyID, u.Requests, u.PromptTokens, u.CompletionTokens, u.LastUsedAt
	}
	const q = `UPDATE api_keys k SET
		requests = k.requests + u.requests,
		prompt_tokens = k.prompt_tokens + u.prompt,
		completion_tokens = k.completion_tokens + u.completion,
		last_used_at = greatest(k.last_used_at, u.at)
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[]) AS u(id, requests, prompt, completion, at)
		WHERE k.id = u.id`
	_, err := s.pool.Exec(ctx, q, ids, reqs, prompt, completion, at)
	return translate("record usage", err, "")
}
