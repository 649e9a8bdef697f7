-- +goose Up
-- Users of the API and the web UI, and the API keys of inference clients
-- with their usage. Passwords are bcrypt hashes; keys are stored as the
-- SHA-256 of their plaintext, which is shown once at creation.

CREATE TABLE users (
    id            bigserial   PRIMARY KEY,
    username      text        NOT NULL,
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Usernames are unique without regard to case.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE api_keys (
    id                bigserial   PRIMARY KEY,
    name              text        NOT NULL,
    -- The first characters of the plaintext, for display.
    prefix            text        NOT NULL,
    hash              text        NOT NULL,
    -- Requests per minute; 0 means no limit.
    rpm_limit         integer     NOT NULL DEFAULT 0 CHECK (rpm_limit >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    requests          bigint      NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    last_used_at      timestamptz,
    CONSTRAINT api_keys_hash_key UNIQUE (hash)
);

-- +goose Down
DROP TABLE api_keys;
DROP TABLE users;
