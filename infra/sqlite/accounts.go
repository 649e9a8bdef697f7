package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
)

// accountTime is the fixed-width UTC format of the account tables' times:
// unlike RFC3339Nano it keeps trailing zeros, so strings compare as times.
const accountTime = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(accountTime) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(accountTime, s)
	return t
}

func parseNullTime(s sql.NullString) *time.Time {
	if !s.Valid {
		return nil
	}
	t := parseTime(s.String)
	return &t
}

const userColumns = `id, username, password_hash, token_epoch, role, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (account.User, error) {
	var u account.User
	var created, updated string
	if err := row.Scan(&u.ID, &u.Username, &u.PasswordHash, &u.TokenEpoch, &u.Role, &created, &updated); err != nil {
		return account.User{}, err
	}
	u.CreatedAt, u.UpdatedAt = parseTime(created), parseTime(updated)
	return u, nil
}

// Users returns every user ordered by ID.
func (s *Store) Users(ctx context.Context) ([]account.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY id`)
	if err != nil {
		return nil, translateAccount("list users", err, "")
	}
	defer rows.Close()
	users := []account.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, translateAccount("list users", err, "")
		}
		users = append(users, u)
	}
	return users, translateAccount("list users", rows.Err(), "")
}

// User returns the user with the given ID, or an error matching
// fleet.ErrNotFound.
func (s *Store) User(ctx context.Context, id int64) (account.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, id))
	return u, translateAccount(fmt.Sprintf("user %d", id), err, "")
}

// UserByName returns the user with the given username (compared without
// regard to ASCII case), or an error matching fleet.ErrNotFound.
func (s *Store) UserByName(ctx context.Context, username string) (account.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE username = ?`, strings.TrimSpace(username)))
	return u, translateAccount("user "+username, err, "")
}

// CountUsers returns how many users exist.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, translateAccount("count users", err, "")
}

// CreateUser validates and inserts u and returns it with its ID and times.
// It returns a *fleet.ValidationError for bad input and an error matching
// fleet.ErrConflict when the username is taken.
func (s *Store) CreateUser(ctx context.Context, u account.User) (account.User, error) {
	if err := u.Validate(); err != nil {
		return account.User{}, err
	}
	now := time.Now().UTC()
	u.CreatedAt, u.UpdatedAt = parseTime(fmtTime(now)), parseTime(fmtTime(now))
	res, err := s.db.ExecContext(ctx, `INSERT INTO users (username, password_hash, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
		u.Username, u.PasswordHash, string(u.Role), fmtTime(now), fmtTime(now))
	if err != nil {
		return account.User{}, translateAccount("create user", err, "username "+u.Username+" is taken")
	}
	u.ID, err = res.LastInsertId()
	return u, translateAccount("create user", err, "")
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
	err := s.keepingAdmin(ctx, op, u.ID, u.Role != account.RoleAdmin, func(tx *sql.Tx) (sql.Result, error) {
		return tx.ExecContext(ctx, `UPDATE users SET password_hash = ?, role = ?, updated_at = ? WHERE id = ?`,
			u.PasswordHash, string(u.Role), fmtTime(time.Now()), u.ID)
	})
	if err != nil {
		return account.User{}, err
	}
	return s.User(ctx, u.ID)
}

// DeleteUser deletes a user, or returns an error matching fleet.ErrNotFound
// (or account.ErrLastAdmin for the last admin).
func (s *Store) DeleteUser(ctx context.Context, id int64) error {
	return s.keepingAdmin(ctx, fmt.Sprintf("delete user %d", id), id, true, func(tx *sql.Tx) (sql.Result, error) {
		return tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
	})
}

// keepingAdmin runs write on user id in one transaction (immediate, so
// writers take turns) with the check that, when write takes the admin role
// from id (removes), another admin stays.
func (s *Store) keepingAdmin(ctx context.Context, op string, id int64, removes bool, write func(*sql.Tx) (sql.Result, error)) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return translateAccount(op, err, "")
	}
	defer tx.Rollback()
	if removes {
		var others int
		var isAdmin bool
		err := tx.QueryRowContext(ctx, `SELECT
			COALESCE(SUM(role = 'admin' AND id <> ?1), 0), COALESCE(MAX(role = 'admin' AND id = ?1), 0) FROM users`, id).Scan(&others, &isAdmin)
		if err != nil {
			return translateAccount(op, err, "")
		}
		if isAdmin && others == 0 {
			return fmt.Errorf("%s: %w", op, account.ErrLastAdmin)
		}
	}
	res, err := write(tx)
	if err != nil {
		return translateAccount(op, err, "")
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return translateAccount(op, sql.ErrNoRows, "")
	}
	return translateAccount(op, tx.Commit(), "")
}

// EndSessions increments the user's token epoch, or returns an error
// matching fleet.ErrNotFound.
func (s *Store) EndSessions(ctx context.Context, id int64) error {
	op := fmt.Sprintf("end sessions of user %d", id)
	res, err := s.db.ExecContext(ctx, `UPDATE users SET token_epoch = token_epoch + 1 WHERE id = ?`, id)
	if err != nil {
		return translateAccount(op, err, "")
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return translateAccount(op, sql.ErrNoRows, "")
	}
	return nil
}

const keyColumns = `id, name, prefix, hash, rpm_limit, created_at, revoked_at, requests, prompt_tokens, completion_tokens, last_used_at`

func scanKey(row interface{ Scan(...any) error }) (account.Key, error) {
	var k account.Key
	var created string
	var revoked, lastUsed sql.NullString
	if err := row.Scan(&k.ID, &k.Name, &k.Prefix, &k.Hash, &k.RPMLimit, &created, &revoked,
		&k.Requests, &k.PromptTokens, &k.CompletionTokens, &lastUsed); err != nil {
		return account.Key{}, err
	}
	k.CreatedAt = parseTime(created)
	k.RevokedAt, k.LastUsedAt = parseNullTime(revoked), parseNullTime(lastUsed)
	return k, nil
}

// Keys returns every API key, revoked ones included, ordered by ID.
func (s *Store) Keys(ctx context.Context) ([]account.Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY id`)
	if err != nil {
		return nil, translateAccount("list keys", err, "")
	}
	defer rows.Close()
	keys := []account.Key{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, translateAccount("list keys", err, "")
		}
		keys = append(keys, k)
	}
	return keys, translateAccount("list keys", rows.Err(), "")
}

// CreateKey validates and inserts k (name, prefix, hash, RPM limit) and
// returns it with its ID and creation time; usage starts at zero. It returns
// a *fleet.ValidationError for bad input and fleet.ErrConflict when the
// hash exists.
func (s *Store) CreateKey(ctx context.Context, k account.Key) (account.Key, error) {
	if err := k.Validate(); err != nil {
		return account.Key{}, err
	}
	now := fmtTime(time.Now())
	res, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (name, prefix, hash, rpm_limit, created_at) VALUES (?, ?, ?, ?, ?)`,
		k.Name, k.Prefix, k.Hash, k.RPMLimit, now)
	if err != nil {
		return account.Key{}, translateAccount("create key", err, "key exists")
	}
	id, err := res.LastInsertId()
	if err != nil {
		return account.Key{}, translateAccount("create key", err, "")
	}
	return s.key(ctx, id)
}

func (s *Store) key(ctx context.Context, id int64) (account.Key, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
	return k, translateAccount(fmt.Sprintf("key %d", id), err, "")
}

// KeyByHash returns the key whose hash is hash, revoked or not, or an error
// matching fleet.ErrNotFound.
func (s *Store) KeyByHash(ctx context.Context, hash string) (account.Key, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE hash = ?`, hash))
	return k, translateAccount("key by hash", err, "")
}

// RevokeKey marks a key revoked (a no-op when it already is), or returns an
// error matching fleet.ErrNotFound.
func (s *Store) RevokeKey(ctx context.Context, id int64) error {
	op := fmt.Sprintf("revoke key %d", id)
	res, err := s.db.ExecContext(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`, fmtTime(time.Now()), id)
	if err != nil {
		return translateAccount(op, err, "")
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return translateAccount(op, sql.ErrNoRows, "")
	}
	return nil
}

// RecordUsage adds each record to its key's totals and moves its last use
// forward, in one transaction. Records of unknown keys are ignored.
func (s *Store) RecordUsage(ctx context.Context, usage []account.Usage) error {
	if len(usage) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return translateAccount("record usage", err, "")
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE api_keys SET
		requests = requests + ?1, prompt_tokens = prompt_tokens + ?2, completion_tokens = completion_tokens + ?3,
		last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ?4 THEN ?4 ELSE last_used_at END
		WHERE id = ?5`)
	if err != nil {
		return translateAccount("record usage", err, "")
	}
	defer stmt.Close()
	for _, u := range account.MergeUsage(usage) {
		if _, err := stmt.ExecContext(ctx, u.Requests, u.PromptTokens, u.CompletionTokens, fmtTime(u.LastUsedAt), u.KeyID); err != nil {
			return translateAccount("record usage", err, "")
		}
	}
	return translateAccount("record usage", tx.Commit(), "")
}

// translateAccount maps driver errors of the account tables to fleet's
// sentinels as translate does; conflict says what a unique violation means.
func translateAccount(op string, err error, conflict string) error {
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("%w: %s", fleet.ErrConflict, conflict)
	}
	return translate(op, err)
}
