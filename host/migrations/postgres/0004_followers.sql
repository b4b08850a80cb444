-- What other nodes need to follow changes by revision: deletions leave a tombstone,
-- and both tables are read by revision.
CREATE TABLE sim_tombstones (
    iccid    TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
CREATE INDEX sims_by_revision ON sims (revision);
CREATE INDEX sim_tombstones_by_revision ON sim_tombstones (revision);
