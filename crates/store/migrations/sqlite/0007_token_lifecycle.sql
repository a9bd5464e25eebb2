-- Why a token is disabled: 'manual' or 'leaked'; NULL on a disabled token reads as 'manual'.
ALTER TABLE tokens ADD COLUMN disabled_reason TEXT;
-- The last five distinct client addresses that presented the token, newest first:
-- JSON [{"ip", "last_seen_at"}]; NULL when none yet.
ALTER TABLE tokens ADD COLUMN recent_ips TEXT;
-- A quota: uses a period allows, its refill ('daily', 'monthly', NULL: never), what
-- the period that starts at quota_period_start has spent, and when it was last set.
ALTER TABLE tokens ADD COLUMN quota_limit INTEGER;
ALTER TABLE tokens ADD COLUMN quota_refill TEXT;
ALTER TABLE tokens ADD COLUMN quota_used INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN quota_period_start INTEGER;
ALTER TABLE tokens ADD COLUMN quota_set_at INTEGER;

-- Webhook subscriptions; `events` is a JSON array of event names.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    description TEXT,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- Every event announced, so that one noticed again (another node, a restart) is not.
CREATE TABLE webhook_events (
    id         TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
-- One delivery per event and subscribed webhook; `attempts` is a JSON array.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        TEXT NOT NULL,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
