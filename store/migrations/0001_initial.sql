-- store/migrations/0001_initial.sql: every table DESIGN §4-§5 names.
--
-- Conventions (issue 4, SECURITY T05/T08):
--  * every tenant-owned row has tenant_id NOT NULL REFERENCES tenants, created_at and updated_at
--    (kept by the trigger tessera_set_updated_at), and deleted_at where deletion is soft;
--  * a row that points at another tenant-owned row does so through (tenant_id, id), so the
--    database itself refuses a link across tenants;
--  * high-entropy secrets are stored only as SHA-256 (bytea, 32 bytes), private keys sealed
--    (crypto/seal.h);
--  * every index below names the lookup that needs it.
-- Identifiers are UUIDs made by the application (UUIDv7, crypto/ct.h) or gen_random_uuid().

CREATE FUNCTION tessera_set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The issuer path segment {base}/t/{slug} (DESIGN §5): lowercase so /t/ACME is never acme
    -- (SECURITY T06).
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9-]{1,63}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
-- Tenant by slug on every request; unique even after soft deletion, so an issuer URL is never
-- handed to a second tenant.
CREATE UNIQUE INDEX tenants_slug ON tenants (slug);

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    username        text NOT NULL CHECK (length(username) BETWEEN 1 AND 128),
    email           text CHECK (length(email) <= 320),
    email_verified  boolean NOT NULL DEFAULT false,
    password_hash   text,  -- PHC string (Argon2id, or an imported bcrypt hash); NULL: no password
    disabled        boolean NOT NULL DEFAULT false,
    failed_logins   integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until    timestamptz,
    last_login_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (tenant_id, id)
);
-- Login by username, case-insensitively, within one tenant (T05: same name in two tenants).
CREATE UNIQUE INDEX users_tenant_username ON users (tenant_id, lower(username))
    WHERE deleted_at IS NULL;
CREATE INDEX users_tenant_email ON users (tenant_id, lower(email))
    WHERE deleted_at IS NULL AND email IS NOT NULL;

CREATE TABLE user_identities (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    user_id     uuid NOT NULL,
    provider    text NOT NULL,  -- federation provider name, per tenant
    subject     text NOT NULL,  -- the provider's sub
    email       text,
    claims      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- Federated login: (provider, sub) to the local user.
CREATE UNIQUE INDEX user_identities_subject ON user_identities (tenant_id, provider, subject);
CREATE INDEX user_identities_user ON user_identities (tenant_id, user_id);

CREATE TABLE clients (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    client_id         text NOT NULL CHECK (length(client_id) BETWEEN 1 AND 128),
    secret_sha256     bytea CHECK (octet_length(secret_sha256) = 32),  -- NULL: public client
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    grants            text[] NOT NULL DEFAULT '{}',
    scopes            text[] NOT NULL DEFAULT '{}',
    redirect_uris     text[] NOT NULL DEFAULT '{}',
    token_lifetime_s  integer NOT NULL DEFAULT 900 CHECK (token_lifetime_s > 0),
    first_party       boolean NOT NULL DEFAULT false,
    can_introspect    boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (tenant_id, id)
);
-- Client authentication at the token endpoint: by client_id (then compared with the path
-- tenant, T02). Unique across tenants so a client_id never names two clients.
CREATE UNIQUE INDEX clients_client_id ON clients (client_id);
CREATE INDEX clients_tenant ON clients (tenant_id, created_at) WHERE deleted_at IS NULL;

CREATE TABLE sessions (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    user_id               uuid,
    client_id             text,
    -- Refresh token rotation (DESIGN §4, RFC 9700 §4.14): the current token's digest and the
    -- previous one, whose reuse revokes the session.
    refresh_sha256        bytea CHECK (octet_length(refresh_sha256) = 32),
    refresh_prev_sha256   bytea CHECK (octet_length(refresh_prev_sha256) = 32),
    amr                   text[] NOT NULL DEFAULT '{}',
    ip                    inet,
    user_agent            text,
    last_seen_at          timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL,  -- sliding expiry
    absolute_expires_at   timestamptz NOT NULL,  -- its cap
    revoked_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- Session by id is the primary key (refresh token rt_<session-id>.…); logout-all by user.
CREATE INDEX sessions_user ON sessions (tenant_id, user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expiry ON sessions (absolute_expires_at);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    user_id       uuid,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix        text NOT NULL CHECK (length(prefix) = 8),  -- display only, never a lookup key
    sha256        bytea NOT NULL CHECK (octet_length(sha256) = 32),
    scopes        text[] NOT NULL DEFAULT '{}',
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- API key check: by the SHA-256 of the presented key (DESIGN §4).
CREATE UNIQUE INDEX api_keys_sha256 ON api_keys (sha256);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, user_id) WHERE deleted_at IS NULL;

CREATE TABLE roles (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX roles_tenant_name ON roles (tenant_id, lower(name)) WHERE deleted_at IS NULL;

CREATE TABLE scopes (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),  -- RFC 6749 §3.3 token
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX scopes_tenant_name ON scopes (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE role_scopes (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    role_id     uuid NOT NULL,
    scope_id    uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_id, scope_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, scope_id) REFERENCES scopes (tenant_id, id) ON DELETE CASCADE
);

-- A role granted to a user or to a client (client_credentials tokens carry its scopes).
CREATE TABLE role_bindings (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    role_id     uuid NOT NULL,
    user_id     uuid,
    client_ref  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (client_ref IS NULL)),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, client_ref) REFERENCES clients (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX role_bindings_user ON role_bindings (tenant_id, user_id, role_id)
    WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX role_bindings_client ON role_bindings (tenant_id, client_ref, role_id)
    WHERE client_ref IS NOT NULL;

CREATE TABLE signing_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    kid             text NOT NULL CHECK (length(kid) BETWEEN 1 AND 128),
    alg             text NOT NULL CHECK (alg IN ('RS256', 'PS256', 'ES256', 'EdDSA')),
    state           text NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    public_jwk      jsonb NOT NULL,
    -- crypto/seal.h blob of the private JWK, owner binding "<tenant id>\0<kid>".
    private_sealed  bytea NOT NULL,
    master_key_id   integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    retired_at      timestamptz,
    not_after       timestamptz,  -- a retired key stays in the JWKS until then
    CHECK (state <> 'retired' OR not_after IS NOT NULL)
);
-- Verification picks the key by (tenant, kid), never by kid alone (T05).
CREATE UNIQUE INDEX signing_keys_kid ON signing_keys (tenant_id, kid);
-- JWKS and signing: the tenant's keys by state; at most one active and one next per tenant.
CREATE INDEX signing_keys_state ON signing_keys (tenant_id, state);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (tenant_id) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (tenant_id) WHERE state = 'next';

CREATE TABLE revocations (
    -- Shards catch up by "seq > last seen"; bigserial never goes back. A sequence value is
    -- taken before commit, so a reader keeps a small overlap window rather than assuming
    -- commit order equals seq order.
    seq         bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    kind        text NOT NULL CHECK (kind IN ('jti', 'sid', 'sub', 'client')),
    value       text NOT NULL CHECK (length(value) BETWEEN 1 AND 256),
    expires_at  timestamptz NOT NULL,  -- the revoked token's exp: the entry is useless after it
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revocations_lookup ON revocations (tenant_id, kind, value);
CREATE INDEX revocations_expiry ON revocations (expires_at);

CREATE TABLE audit_log (
    seq         bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'client', 'admin', 'system')),
    actor_id    text,
    action      text NOT NULL,
    target_kind text,
    target_id   text,
    ip          inet,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, created_at DESC);

CREATE TABLE one_time_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    user_id     uuid NOT NULL,
    purpose     text NOT NULL CHECK (purpose IN ('email_verify', 'password_reset', 'magic_link',
                                                 'invite', 'authorization_code')),
    sha256      bytea NOT NULL CHECK (octet_length(sha256) = 32),
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX one_time_tokens_sha256 ON one_time_tokens (sha256);
CREATE INDEX one_time_tokens_expiry ON one_time_tokens (expires_at);

CREATE TABLE email_outbox (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    to_address       text NOT NULL CHECK (length(to_address) BETWEEN 3 AND 320),
    subject          text NOT NULL,
    body_text        text NOT NULL,
    body_html        text,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The sender takes the due pending messages oldest first.
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE state = 'pending';

-- KEK service: a tenant's named key-encryption keys, versioned, each sealed under the master key.
CREATE TABLE kek_versions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version        integer NOT NULL CHECK (version >= 1),
    state          text NOT NULL DEFAULT 'active'
                   CHECK (state IN ('active', 'retired', 'destroyed')),
    key_sealed     bytea,  -- NULL once destroyed
    master_key_id  integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX kek_versions_name ON kek_versions (tenant_id, name, version);
CREATE UNIQUE INDEX kek_versions_one_active ON kek_versions (tenant_id, name)
    WHERE state = 'active';

CREATE TABLE kek_blobs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    kek_id      uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    FOREIGN KEY (tenant_id, kek_id) REFERENCES kek_versions (tenant_id, id)
);
CREATE UNIQUE INDEX kek_blobs_name ON kek_blobs (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX kek_blobs_kek ON kek_blobs (tenant_id, kek_id);

-- Relationship tuples (object#relation@subject, Zanzibar style) for authorization checks.
CREATE TABLE authz_tuples (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    object_type       text NOT NULL,
    object_id         text NOT NULL,
    relation          text NOT NULL,
    subject_type      text NOT NULL,
    subject_id        text NOT NULL,
    subject_relation  text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Check: does (object, relation) hold for subject; expand: who holds (object, relation).
CREATE UNIQUE INDEX authz_tuples_key ON authz_tuples (tenant_id, object_type, object_id, relation,
                                                      subject_type, subject_id, subject_relation);
CREATE INDEX authz_tuples_subject ON authz_tuples (tenant_id, subject_type, subject_id);

-- updated_at on every table that has one.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT table_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND column_name = 'updated_at'
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION tessera_set_updated_at()',
                       t || '_updated_at', t);
    END LOOP;
END
$$;
