-- Tether bridge schema (PostgreSQL). Times are Unix milliseconds; flags are 0/1 integers; ids are
-- random text. Keep in step with migrations/sqlite.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    pairing_failures     BIGINT NOT NULL DEFAULT 0,
    pairing_locked_until BIGINT NOT NULL DEFAULT 0,
    UNIQUE (issuer, subject)
);

CREATE TABLE companions (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    platform      TEXT NOT NULL CHECK (platform IN ('APNS', 'FCM')),
    push_token    TEXT UNIQUE,
    app_id        TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    active        BIGINT NOT NULL DEFAULT 1,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    removed_at    BIGINT
);
CREATE INDEX companions_account ON companions (account_id, active);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    account_id    TEXT REFERENCES accounts (id),
    public_key    BYTEA NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    model         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('PENDING', 'ACTIVE', 'REVOKED', 'EXPIRED')),
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX devices_account ON devices (account_id, status);

CREATE TABLE pairings (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices (id),
    code_hash     BYTEA NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'EXPIRED')),
    account_id    TEXT REFERENCES accounts (id),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    confirmed_at  BIGINT
);
CREATE INDEX pairings_code ON pairings (code_hash, status);

CREATE TABLE device_token_ids (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX device_token_ids_expiry ON device_token_ids (expires_at);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    device_id        TEXT NOT NULL REFERENCES devices (id),
    kind             TEXT NOT NULL CHECK (kind IN ('SIGN_IN', 'REGISTRATION')),
    rp_id            TEXT NOT NULL,
    fido_url         TEXT,
    idempotency_key  TEXT NOT NULL,
    number_code      TEXT NOT NULL,
    context          TEXT NOT NULL,
    envelope         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('QUEUED', 'SENT', 'CLAIMED', 'COMPLETED', 'DENIED', 'EXPIRED', 'FAILED')),
    reason           TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    claimed_by       TEXT REFERENCES companions (id),
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX deliveries_account_status ON deliveries (account_id, status, expires_at);
CREATE INDEX deliveries_expiry ON deliveries (status, expires_at);

CREATE TABLE outbox (
    id             TEXT PRIMARY KEY,
    delivery_id    TEXT NOT NULL REFERENCES deliveries (id),
    companion_id   TEXT NOT NULL REFERENCES companions (id),
    status         TEXT NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED', 'CANCELLED')),
    attempts       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until    BIGINT NOT NULL DEFAULT 0,
    leased_by      TEXT,
    last_error     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_delivery ON outbox (delivery_id);

CREATE TABLE audit_log (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    account_id   TEXT,
    actor        TEXT NOT NULL,
    event        TEXT NOT NULL,
    client_addr  TEXT,
    outcome      TEXT NOT NULL,
    detail       TEXT
);
CREATE INDEX audit_log_account ON audit_log (account_id, id);
