-- Per-account storage quotas, set by the operator with the function limits;
-- NULL: the node's default (see `Quota::default_limit`).
ALTER TABLE accounts ADD COLUMN q_function_versions BIGINT;
ALTER TABLE accounts ADD COLUMN q_function_bytes BIGINT;
ALTER TABLE accounts ADD COLUMN q_devices_per_sim BIGINT;
ALTER TABLE accounts ADD COLUMN q_devices BIGINT;
ALTER TABLE accounts ADD COLUMN q_profiles BIGINT;
ALTER TABLE accounts ADD COLUMN q_config_per_device BIGINT;
-- Devices per account as a counter kept with every creation and deletion, so the
-- quota costs one row however large the account; devices per SIM through an index.
ALTER TABLE accounts ADD COLUMN device_count BIGINT NOT NULL DEFAULT 0;
UPDATE accounts SET device_count = (SELECT COUNT(*) FROM devices WHERE devices.account_id = accounts.id);
CREATE INDEX devices_by_sim ON devices (account_id, iccid);
