-- Tessera schema, SQLite. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL,            -- JSON array of permission strings
    builtin     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,          -- argon2id PHC string
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

CREATE TABLE account_roles (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role_name  TEXT NOT NULL REFERENCES roles(name),
    PRIMARY KEY (account_id, role_name)
);
CREATE INDEX account_roles_by_role ON account_roles(role_name);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,          -- SHA-256 of the session id, hex
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                   -- JSON
);

CREATE TABLE tokens (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    note                   TEXT,
    hash                   TEXT NOT NULL UNIQUE,  -- SHA-256 of the value, hex; never the value
    display                TEXT NOT NULL,
    prev_hash              TEXT UNIQUE,
    prev_valid_until       INTEGER,
    scopes                 TEXT,                  -- JSON array, NULL = follows the account
    allowed_cidrs          TEXT,                  -- JSON array, NULL = any address
    rate_limit_requests    INTEGER,
    rate_limit_per_seconds INTEGER,
    disabled               INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    expires_at             INTEGER,
    last_used_at           INTEGER,
    last_used_ip           TEXT,
    usage_allowed          INTEGER NOT NULL DEFAULT 0,
    usage_denied           INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);

CREATE TABLE audit_log (
    seq              INTEGER PRIMARY KEY,
    time             INTEGER NOT NULL,
    action           TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    actor_account_id TEXT,
    actor_username   TEXT,
    actor_token_id   TEXT,
    target_type      TEXT,
    target_id        TEXT,
    target_name      TEXT,
    ip               TEXT,
    user_agent       TEXT,
    details          TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX audit_by_action ON audit_log(action, seq);
CREATE INDEX audit_by_target ON audit_log(target_id, seq);
CREATE INDEX audit_by_actor ON audit_log(actor_account_id, seq);
CREATE INDEX audit_by_time ON audit_log(time);

CREATE TABLE access_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    token_id   TEXT,
    account_id TEXT,
    listener   TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    status     INTEGER NOT NULL,
    code       TEXT NOT NULL,
    ip         TEXT NOT NULL,
    latency_ms REAL NOT NULL
);
CREATE INDEX access_by_token ON access_log(token_id, time);
CREATE INDEX access_by_account ON access_log(account_id, id);
