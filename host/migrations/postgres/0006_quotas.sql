-- Per-account storage quotas, set by the operator with the function limits;
-- NULL: the node's default (see `Quota::default_limit`).
ALTER TABLE accounts ADD COLUMN q_function_versions BIGINT;
ALTER TABLE accounts ADD COLUMN q_function_bytes BIGINT;
ALTER TABLE accounts ADD COLUMN q_devices_per_sim BIGINT;
ALTER TABLE accounts ADD COLUMN q_devices BIGINT;
ALTER TABLE accounts ADD COLUMN q_profiles BIGINT;
ALTER TABLE accounts ADD COLUMN q_config_per_device BIGINT;
