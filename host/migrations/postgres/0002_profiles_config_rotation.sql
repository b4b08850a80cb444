-- Expiration strategies, device profiles, config properties, and what the broker knows.

-- ON-DEMAND | AT-EVERY-REQUEST | AFTER-X-REQUESTS:<n> | TIME-BASED:<seconds>
ALTER TABLE accounts ADD COLUMN expiration TEXT NOT NULL DEFAULT 'ON-DEMAND';

CREATE TABLE profiles (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name       TEXT NOT NULL,
    publish    TEXT NOT NULL,   -- JSON array of topic templates
    subscribe  TEXT NOT NULL,   -- JSON array of topic filter templates
    config     TEXT NOT NULL,   -- JSON array of [name, JSON text] pairs
    expiration TEXT,            -- NULL: the account's strategy
    PRIMARY KEY (account_id, name)
);

-- The topics a device was created with (account prefix and device id substituted),
-- its password's age and use, and which revision of it the broker has.
ALTER TABLE devices ADD COLUMN profile TEXT;
ALTER TABLE devices ADD COLUMN publish TEXT NOT NULL DEFAULT '[]';
ALTER TABLE devices ADD COLUMN subscribe TEXT NOT NULL DEFAULT '[]';
ALTER TABLE devices ADD COLUMN password_set_at BIGINT NOT NULL DEFAULT 0;  -- unix milliseconds
ALTER TABLE devices ADD COLUMN served BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN broker_revision BIGINT NOT NULL DEFAULT 0;

CREATE TABLE device_config (
    account_id TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,   -- JSON text
    PRIMARY KEY (account_id, device_id, name),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
);
