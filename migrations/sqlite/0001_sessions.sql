-- Passerelle's own state: only what FHIR has no place for.

-- An authorization in progress: single use, bound to the browser that started it.
CREATE TABLE launch_state (
    state         TEXT PRIMARY KEY,
    browser       TEXT NOT NULL,
    iss           TEXT NOT NULL,
    ehr_launch    INTEGER NOT NULL,
    secret        BLOB NOT NULL,      -- encrypted: PKCE verifier and nonce
    created_at    INTEGER NOT NULL
);

-- A launch: one chart opened in one browser. Tokens never leave the server
-- and are stored encrypted.
CREATE TABLE launches (
    id            TEXT PRIMARY KEY,
    browser       TEXT NOT NULL,
    iss           TEXT NOT NULL,
    context       TEXT NOT NULL,      -- JSON: patient, encounter, fhirUser, banner, style, intent, tenant, fhirContext
    granted       TEXT NOT NULL,      -- granted scopes
    tokens        BLOB NOT NULL,      -- encrypted JSON: access, refresh, id token
    expires_at    INTEGER NOT NULL,   -- access token expiry, unix seconds
    csrf          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
CREATE INDEX launches_browser ON launches (browser);
