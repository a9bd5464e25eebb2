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
