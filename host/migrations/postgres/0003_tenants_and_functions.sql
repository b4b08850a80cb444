-- Tenant access and tenant functions.

-- API keys an account's own people use; only a digest of the (random) secret is kept.
CREATE TABLE tenant_keys (
    key           TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    secret_digest BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Uploaded components, content-addressed, so every node can load any version.
CREATE TABLE function_versions (
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    route       TEXT NOT NULL,
    version     TEXT NOT NULL,   -- SHA-256 of the component bytes, hex
    interface   TEXT NOT NULL,   -- the wasi:http handler interface it exports
    component   BYTEA NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, route, version)
);

-- Which version serves an account's route; no row: the platform's component.
CREATE TABLE active_functions (
    account_id   TEXT NOT NULL,
    route        TEXT NOT NULL,
    version      TEXT NOT NULL,
    activated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, route),
    FOREIGN KEY (account_id, route, version) REFERENCES function_versions (account_id, route, version)
);

-- Per-account function limits; NULL: the node's defaults.
ALTER TABLE accounts ADD COLUMN fn_deadline_ms BIGINT;
ALTER TABLE accounts ADD COLUMN fn_memory_mib BIGINT;
