-- Why a token is disabled: 'manual' or 'leaked'; NULL on a disabled token reads as 'manual'.
ALTER TABLE tokens ADD COLUMN disabled_reason TEXT;
-- The last five distinct client addresses that presented the token, newest first:
-- JSON [{"ip", "last_seen_at"}]; NULL when none yet.
ALTER TABLE tokens ADD COLUMN recent_ips TEXT;
