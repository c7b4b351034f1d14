-- Writes waiting for the FHIR server: nothing a clinician entered is lost
-- when the server fails, times out, or Passerelle restarts.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,   -- the screening id (also keys the FHIR identifiers)
    launch        TEXT NOT NULL,
    payload       BLOB NOT NULL,      -- encrypted: the transaction Bundle
    summary       TEXT NOT NULL,      -- JSON shown when recorded (no patient data)
    status        TEXT NOT NULL,      -- pending | sent | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX outbox_status ON outbox (status);
