-- Per-tenant recording retention (issue 13). A session expires at `expires_at`: its start plus
-- the tenant's recording retention when it started (every event of the session leaves the log
-- then, by its Nats-TTL), capped to its start plus a shorter retention the tenant set later.
-- The API never serves a session past it, and the projector's sweep deletes it and its frames.
-- NULL: recorded before per-tenant retention (the job retention applies, as before).
ALTER TABLE sessions ADD COLUMN expires_at timestamptz;
CREATE INDEX sessions_expires ON sessions (expires_at) WHERE expires_at IS NOT NULL;
