-- +goose Up
-- The fleet: the nodes an admin configured, the worker's last observed pass
-- (the hot copy lives in Redis; this one survives a Redis loss and feeds the
-- UI) and the runtime settings. Users and API keys come in later files.

CREATE TABLE nodes (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL,
    -- Normalised by fleet.NormalizeURL before it is written.
    base_url   text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT nodes_base_url_key UNIQUE (base_url)
);

-- One row per node: the last status the worker observed (fleet.Status).
CREATE TABLE node_status (
    node_id           bigint      PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    healthy           boolean     NOT NULL,
    latency_ns        bigint      NOT NULL DEFAULT 0,
    version           text        NOT NULL DEFAULT '',
    -- Arrays of the nodes' own /api/tags and /api/ps objects (fleet.Model).
    models            jsonb       NOT NULL DEFAULT '[]',
    loaded            jsonb       NOT NULL DEFAULT '[]',
    -- NULL until the first probe (models: the first successful refresh).
    checked_at        timestamptz,
    models_checked_at timestamptz,
    reason            text        NOT NULL DEFAULT '',
    passes            integer     NOT NULL DEFAULT 0,
    fails             integer     NOT NULL DEFAULT 0
);

-- A single row holding fleet.Settings as JSON, so that new settings need no
-- migration. No row means fleet.DefaultSettings().
CREATE TABLE settings (
    id         integer     PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE settings;
DROP TABLE node_status;
DROP TABLE nodes;
