-- Tessera schema, PostgreSQL. Times are milliseconds since the Unix epoch (UTC), JSON
-- is text, digests are hex: the same columns as the SQLite schema, so that one mapping
-- (crates/store/src/rows.rs) reads both.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL,            -- JSON array of permission strings
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,          -- argon2id PHC string
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT
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
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_account ON sessions(account_id);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                   -- JSON
);
INSERT INTO settings (key, value) VALUES ('gateway_version', '0');

CREATE TABLE tokens (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    note                   TEXT,
    hash                   TEXT NOT NULL UNIQUE,  -- SHA-256 of the value, hex; never the value
    display                TEXT NOT NULL,
    prev_hash              TEXT UNIQUE,
    prev_valid_until       BIGINT,
    scopes                 TEXT,                  -- JSON array, NULL = follows the account
    allowed_cidrs          TEXT,                  -- JSON array, NULL = any address
    rate_limit_requests    BIGINT,
    rate_limit_per_seconds BIGINT,
    disabled               BOOLEAN NOT NULL DEFAULT FALSE,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    expires_at             BIGINT,
    last_used_at           BIGINT,
    last_used_ip           TEXT,
    usage_allowed          BIGINT NOT NULL DEFAULT 0,
    usage_denied           BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);

-- One chain for every node: appends take a transaction-scoped advisory lock first
-- (crates/store/src/postgres/audit_chain.rs), so seq has no gaps and each entry's hash
-- covers the one before it.
CREATE TABLE audit_log (
    seq              BIGINT PRIMARY KEY,
    time             BIGINT NOT NULL,
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
CREATE INDEX audit_by_username ON audit_log(actor_username, seq);
CREATE INDEX audit_by_time ON audit_log(time);

-- The access log: one row a use, indexed for the list's filters (token, account,
-- time) and for retention (time).
CREATE TABLE access_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time       BIGINT NOT NULL,
    token_id   TEXT,
    account_id TEXT,
    listener   TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    status     INTEGER NOT NULL,
    code       TEXT NOT NULL,
    ip         TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX access_by_token ON access_log(token_id, id);
CREATE INDEX access_by_account ON access_log(account_id, id);
CREATE INDEX access_by_time ON access_log(time);

CREATE TABLE gateway_services (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    upstreams  TEXT NOT NULL,          -- JSON array of base URLs
    timeout_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE gateway_routes (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    service_id             TEXT NOT NULL REFERENCES gateway_services(id),
    path_prefix            TEXT NOT NULL,
    methods                TEXT,       -- JSON array, NULL = every method
    auth                   TEXT NOT NULL,
    scopes                 TEXT NOT NULL,
    rate_limit_requests    BIGINT,
    rate_limit_per_seconds BIGINT,
    strip_prefix           BOOLEAN NOT NULL,
    created_at             BIGINT NOT NULL
);
CREATE INDEX gateway_routes_by_service ON gateway_routes(service_id);
