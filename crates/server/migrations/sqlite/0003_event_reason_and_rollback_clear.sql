-- Keelson's `keelson_reason` event attribute: the agent's slug for why an update failed
-- (e.g. esp_full, boot_not_blessed). NULL for update_engine's events, which never carry one.
ALTER TABLE events ADD COLUMN reason TEXT;

-- A node is never offered a version it rolled back from (grants.outcome = 3) until an admin
-- clears it: this is when (unix seconds); NULL while the version is still blocked.
ALTER TABLE grants ADD COLUMN rollback_cleared_at BIGINT;
