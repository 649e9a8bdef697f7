-- +goose Up
-- Logging out ends every token and session of a user: a token carries a
-- version derived from the user's password hash and this epoch, which a
-- logout increments.
ALTER TABLE users ADD COLUMN token_epoch bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN token_epoch;
