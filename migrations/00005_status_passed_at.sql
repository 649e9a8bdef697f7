-- +goose Up
-- When a check of the node last passed: a passive "unreachable" mark holds
-- until one passes after it (fleet.MarkHolds).
ALTER TABLE node_status ADD COLUMN passed_at timestamptz;

-- +goose Down
ALTER TABLE node_status DROP COLUMN passed_at;
