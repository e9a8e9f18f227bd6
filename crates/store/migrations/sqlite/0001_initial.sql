-- Times are microseconds since the Unix epoch (UTC) in both backends, so
-- ordering and range filters behave identically; JSON is stored as text.

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    key_hash      TEXT    NOT NULL UNIQUE,
    key_prefix    TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_us    INTEGER NOT NULL,
    last_used_us  INTEGER,
    revoked_us    INTEGER
);

CREATE TABLE sessions (
    id                TEXT    PRIMARY KEY,
    identity          TEXT,
    client_name       TEXT,
    client_version    TEXT,
    protocol_version  TEXT,
    started_us        INTEGER NOT NULL,
    ended_us          INTEGER
);
CREATE INDEX sessions_started ON sessions (started_us);
CREATE INDEX sessions_active ON sessions (ended_us);

CREATE TABLE audit_log (
    id               TEXT    PRIMARY KEY,
    time_us          INTEGER NOT NULL,
    identity         TEXT,
    session_id       TEXT,
    client_name      TEXT,
    client_version   TEXT,
    method           TEXT    NOT NULL,
    upstream         TEXT,
    target           TEXT,
    arguments_digest TEXT,
    arguments        TEXT,
    duration_ms      INTEGER,
    outcome          TEXT    NOT NULL,
    error            TEXT
);
CREATE INDEX audit_time ON audit_log (time_us);
CREATE INDEX audit_identity_time ON audit_log (identity, time_us);
CREATE INDEX audit_session_time ON audit_log (session_id, time_us);

CREATE TABLE health_reports (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us   INTEGER NOT NULL,
    upstream  TEXT    NOT NULL,
    status    TEXT    NOT NULL,
    detail    TEXT    NOT NULL
);
CREATE INDEX health_upstream ON health_reports (upstream, id);
CREATE INDEX health_time ON health_reports (time_us);

CREATE TABLE tool_pins (
    tool                TEXT    PRIMARY KEY,
    hash                TEXT    NOT NULL,
    definition          TEXT    NOT NULL,
    first_seen_us       INTEGER NOT NULL,
    approved_us         INTEGER,
    pending_hash        TEXT,
    pending_definition  TEXT,
    pending_since_us    INTEGER
);
