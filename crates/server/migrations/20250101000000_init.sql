-- burrowd's schema. Kept to SQL that SQLite and PostgreSQL both accept (no AUTOINCREMENT,
-- no SQLite-only types, no column named "user", which PostgreSQL reserves), so a PostgreSQL
-- migration set can mirror this one (with identity columns for the INTEGER PRIMARY KEYs).
-- Times are Unix milliseconds. Secrets (tokens, tickets) are stored only as SHA-256 hex.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    token_hash    TEXT    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE workspaces (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    owner_id         INTEGER NOT NULL REFERENCES users (id),
    agent_token_hash TEXT    NOT NULL UNIQUE,
    created_at_ms    BIGINT  NOT NULL,
    last_seen_ms     BIGINT,
    -- Comma-separated port numbers, as last reported by the agent's hello.
    allowed_ports    TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE sessions (
    id                   TEXT    PRIMARY KEY,
    user_id              INTEGER NOT NULL REFERENCES users (id),
    workspace_id         INTEGER NOT NULL REFERENCES workspaces (id),
    created_at_ms        BIGINT  NOT NULL,
    force_relay          INTEGER NOT NULL DEFAULT 0,
    ticket_hash          TEXT    NOT NULL,
    ticket_used          INTEGER NOT NULL DEFAULT 0,
    ticket_expires_at_ms BIGINT  NOT NULL
);

-- One row per access decision (grants and refusals) and per stream an agent reported.
-- Names rather than ids, so a row keeps its meaning whatever happens to the account later.
CREATE TABLE audit (
    id                 INTEGER PRIMARY KEY,
    at_ms              BIGINT  NOT NULL,
    user_name          TEXT,
    workspace_name     TEXT,
    port               INTEGER,
    session_id         TEXT,
    stream_id          BIGINT,
    started_at_ms      BIGINT,
    ended_at_ms        BIGINT,
    bytes_to_workspace BIGINT  NOT NULL DEFAULT 0,
    bytes_to_client    BIGINT  NOT NULL DEFAULT 0,
    path               TEXT    NOT NULL DEFAULT 'unknown',
    outcome            TEXT    NOT NULL,
    remote_addr        TEXT
);

-- A stream is recorded once however often its agent reports it. Rows that are not stream
-- reports have a NULL stream_id, and NULLs never collide in a unique index.
CREATE UNIQUE INDEX audit_stream ON audit (session_id, stream_id);
CREATE INDEX audit_user ON audit (user_name, id);
