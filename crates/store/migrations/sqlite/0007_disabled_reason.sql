-- Why a token is disabled: 'manual' or 'leaked'; NULL on a disabled token reads as 'manual'.
ALTER TABLE tokens ADD COLUMN disabled_reason TEXT;
