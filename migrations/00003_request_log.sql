-- +goose Up
-- The request log: one row per finished proxied or management request,
-- written in batches by each replica, read newest first by GET
-- /api/requests and the web UI. Rows older than --request-log-days are
-- deleted by the replicas themselves (at most once an hour each).

CREATE TABLE request_log (
    id                bigserial        PRIMARY KEY,
    -- When the request arrived.
    started_at        timestamptz      NOT NULL,
    request_id        text             NOT NULL DEFAULT '',
    -- "key:<name>", "user:<username>", or '' for an anonymous request.
    who               text             NOT NULL DEFAULT '',
    client            text             NOT NULL DEFAULT '',
    method            text             NOT NULL,
    path              text             NOT NULL,
    model             text             NOT NULL DEFAULT '',
    node              text             NOT NULL DEFAULT '',
    status            integer          NOT NULL,
    duration_ms       double precision NOT NULL DEFAULT 0,
    ttfb_ms           double precision NOT NULL DEFAULT 0,
    prompt_tokens     bigint           NOT NULL DEFAULT 0,
    completion_tokens bigint           NOT NULL DEFAULT 0,
    bytes             bigint           NOT NULL DEFAULT 0,
    error             text             NOT NULL DEFAULT ''
);
-- Newest first, and the retention delete.
CREATE INDEX request_log_started_at_idx ON request_log (started_at DESC, id DESC);
-- The UI's filters by model and by node.
CREATE INDEX request_log_model_idx ON request_log (model, started_at DESC);
CREATE INDEX request_log_node_idx ON request_log (node, started_at DESC);

-- +goose Down
DROP TABLE request_log;
