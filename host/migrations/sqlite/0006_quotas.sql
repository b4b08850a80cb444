-- Per-account storage quotas, set by the operator with the function limits;
-- NULL: the node's default (see `Quota::default_limit`).
ALTER TABLE accounts ADD COLUMN q_function_versions INTEGER;
ALTER TABLE accounts ADD COLUMN q_function_bytes INTEGER;
ALTER TABLE accounts ADD COLUMN q_devices_per_sim INTEGER;
ALTER TABLE accounts ADD COLUMN q_devices INTEGER;
ALTER TABLE accounts ADD COLUMN q_profiles INTEGER;
ALTER TABLE accounts ADD COLUMN q_config_per_device INTEGER;
