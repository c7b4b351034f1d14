-- Passerelle's own state in PostgreSQL, shared by every instance behind a
-- load balancer: the same tables as the SQLite store (migrations/sqlite),
-- with the outbox's claims, plus the queue's index the leader keeps.
-- Every sealed column holds AES-256-GCM ciphertext (a nonce, then the
-- sealed bytes) made with PASSERELLE_SESSION_KEY: no patient data in clear.

-- An authorization in progress: single use, bound to the browser that started it.
CREATE TABLE launch_state (
    state         TEXT PRIMARY KEY,
    browser       TEXT NOT NULL,
    iss           TEXT NOT NULL,
    ehr_launch    BIGINT NOT NULL,
    secret        BYTEA NOT NULL,     -- sealed: PKCE verifier and nonce
    created_at    BIGINT NOT NULL
);

-- A launch: one chart opened in one browser; any instance continues it.
CREATE TABLE launches (
    id            TEXT PRIMARY KEY,
    browser       TEXT NOT NULL,
    iss           TEXT NOT NULL,
    context       BYTEA NOT NULL,     -- sealed JSON: patient, encounter, fhirUser, ...
    granted       TEXT NOT NULL,
    tokens        BYTEA NOT NULL,     -- sealed JSON: access, refresh, id token
    expires_at    BIGINT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL
);
CREATE INDEX launches_browser ON launches (browser);

-- Writes waiting for the FHIR server. An instance claims the rows it sends
-- (claimed_by, claimed_until, with FOR UPDATE SKIP LOCKED): no other takes
-- them before the lease is over.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,
    launch        TEXT NOT NULL,
    payload       BYTEA NOT NULL,     -- sealed: the transaction Bundle
    summary       BYTEA NOT NULL,     -- sealed JSON shown when recorded
    status        TEXT NOT NULL,      -- pending | sent | failed
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    BYTEA,              -- sealed
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_until BIGINT
);
CREATE INDEX outbox_status ON outbox (status);

-- The coordinators' queue of each EHR, as the leader synced it: one row
-- per Task, sealed (it names the patient). `seq` grows with every change,
-- so an instance reads only what changed since the row it saw last.
CREATE SEQUENCE queue_seq;
CREATE TABLE queue_tasks (
    iss           TEXT NOT NULL,
    id            TEXT NOT NULL,
    version       BIGINT NOT NULL,    -- meta.versionId: an older one never replaces a newer
    task          BYTEA NOT NULL,     -- sealed JSON of the queue's Task
    seq           BIGINT NOT NULL,
    PRIMARY KEY (iss, id)
);
CREATE INDEX queue_tasks_seq ON queue_tasks (iss, seq);

-- Where the leader's sync stands (watermark, last sync, care team, closed
-- loops), sealed.
CREATE TABLE queue_meta (
    iss           TEXT PRIMARY KEY,
    meta          BYTEA NOT NULL
);
