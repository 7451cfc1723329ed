-- Apps in the browser, each on an origin of its own (see burrow_proto::app_origin).
-- Same portable SQL as the first migration; secrets are stored only as SHA-256 hex, and
-- every row expires (Unix milliseconds).

-- A dashboard login: the HttpOnly session cookie's secret, instead of the API token kept
-- in the page.
CREATE TABLE web_sessions (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    secret_hash   TEXT    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL,
    expires_at_ms BIGINT  NOT NULL
);

-- One-time codes that carry a launch from the dashboard's origin to an app's origin.
-- web_session_id is NULL for launches made with an API token.
CREATE TABLE app_codes (
    id             INTEGER PRIMARY KEY,
    code_hash      TEXT    NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    workspace_id   INTEGER NOT NULL REFERENCES workspaces (id),
    port           INTEGER NOT NULL,
    path           TEXT    NOT NULL,
    embedded       INTEGER NOT NULL DEFAULT 0,
    web_session_id INTEGER REFERENCES web_sessions (id) ON DELETE CASCADE,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL,
    used           INTEGER NOT NULL DEFAULT 0
);

-- The credential cookie of one app's origin: good for that user's workspace port only,
-- and only while the web session it was minted under (if any) lives.
CREATE TABLE app_credentials (
    id             INTEGER PRIMARY KEY,
    secret_hash    TEXT    NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    workspace_id   INTEGER NOT NULL REFERENCES workspaces (id),
    port           INTEGER NOT NULL,
    web_session_id INTEGER REFERENCES web_sessions (id) ON DELETE CASCADE,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);

CREATE INDEX app_codes_web_session ON app_codes (web_session_id);
CREATE INDEX app_credentials_web_session ON app_credentials (web_session_id);

-- The one workspace port an app's session may reach; NULL: any port the agent allows.
ALTER TABLE sessions ADD COLUMN app_port INTEGER;
