-- Device registry (tags, ShellHub's pending/accepted/rejected states, heartbeat presence),
-- API keys (never their secrets) and tenants.
ALTER TABLE devices
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN status text NOT NULL DEFAULT 'accepted',
    -- unknown: never sent a heartbeat; online; offline: missed its heartbeats.
    ADD COLUMN presence text NOT NULL DEFAULT 'unknown',
    ADD COLUMN updated_at timestamptz;
CREATE INDEX devices_tenant_tags ON devices USING gin (tags);
CREATE INDEX devices_presence_seen ON devices (presence, last_seen_at);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    name        text NOT NULL,
    role        text NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at DESC);

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL
);
