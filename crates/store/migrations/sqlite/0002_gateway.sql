-- Gateway configuration: upstream services and the routes to them.

CREATE TABLE gateway_services (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    upstreams  TEXT NOT NULL,          -- JSON array of base URLs
    timeout_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE gateway_routes (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    service_id             TEXT NOT NULL REFERENCES gateway_services(id),
    path_prefix            TEXT NOT NULL,
    methods                TEXT,       -- JSON array, NULL = every method
    auth                   TEXT NOT NULL,
    scopes                 TEXT NOT NULL,
    rate_limit_requests    INTEGER,
    rate_limit_per_seconds INTEGER,
    strip_prefix           INTEGER NOT NULL,
    created_at             INTEGER NOT NULL
);
CREATE INDEX gateway_routes_by_service ON gateway_routes(service_id);

INSERT INTO settings (key, value) VALUES ('gateway_version', '0');
