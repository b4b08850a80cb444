-- Settings and counters of this database (master-key check value, revisions).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- One row per SIM; the PSK is sealed under the master key.
CREATE TABLE sims (
    iccid      TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    psk        BYTEA NOT NULL,
    revision   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A device is (account, device id) and remembers the SIM that created it.
-- client_id and username are unique across the whole broker, not only the account.
CREATE TABLE devices (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    device_id  TEXT NOT NULL,
    iccid      TEXT NOT NULL,
    client_id  TEXT NOT NULL UNIQUE,
    username   TEXT NOT NULL UNIQUE,
    password   BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
