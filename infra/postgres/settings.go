package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/aivonx/aivonx/app/fleet"
)

// Settings returns the saved runtime settings, or fleet.DefaultSettings()
// when none were saved. Fields missing from the stored value (added by a
// later release) take their defaults.
func (s *Store) Settings(ctx context.Context) (fleet.Settings, error) {
	const q = `SELECT value FROM settings WHERE id = 1`
	var raw []byte
	err := s.pool.QueryRow(ctx, q).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return fleet.DefaultSettings(), nil
	}
	if err != nil {
		return fleet.Settings{}, translate("read settings", err, "")
	}
	st := fleet.DefaultSettings()
	if err := json.Unmarshal(raw, &st); err != nil {
		return fleet.Settings{}, fmt.Errorf("read settings: %w", err)
	}
	if err := st.Validate(); err != nil {
		return fleet.Settings{}, fmt.Errorf("read settings: stored value: %w", err)
	}
	return st, nil
}

// SaveSettings validates st (filling zero fields with defaults) and stores
// it, replacing the previous settings; it returns what was stored. It
// returns the *fleet.ValidationError of [fleet.Settings.Validate] as is.
func (s *Store) SaveSettings(ctx context.Context, st fleet.Settings) (fleet.Settings, error) {
	if err := st.Validate(); err != nil {
		return fleet.Settings{}, err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return fleet.Settings{}, fmt.Errorf("save settings: %w", err)
	}
	const q = `INSERT INTO settings (id, value) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET value = excluded.value, updated_at = now()`
	if _, err := s.pool.Exec(ctx, q, raw); err != nil {
		return fleet.Settings{}, translate("save settings", err, "")
	}
	return st, nil
}
