-- The broker asks the platform: nothing is provisioned per device, so the broker's
-- revision of each device goes. Applications get MQTT credentials of their own, and
-- every credential that stops working leaves a row other nodes follow by revision to
-- tell their brokers (old rows are pruned).
ALTER TABLE devices DROP COLUMN broker_revision;

CREATE TABLE apps (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name       TEXT NOT NULL,
    client_id  TEXT NOT NULL UNIQUE,
    username   TEXT NOT NULL UNIQUE,
    password   BLOB NOT NULL,   -- sealed
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE revocations (
    revision   INTEGER PRIMARY KEY,
    username   TEXT NOT NULL,
    created_at INTEGER NOT NULL   -- unix seconds
);
