-- The authorization code flow (RFC 6749 §4.1, RFC 7636, OIDC Core §3.1; auth/authorize.c,
-- auth/code.c). One row per authorization request, in three stages:
--  * made by the authorization endpoint once the client, its redirect_uri and every parameter
--    were checked: the login page carries only its id, so nothing the browser posts back can
--    change what was asked (and a 4 KiB state never travels through a form);
--  * given a user and a code (its SHA-256 only, as every high-entropy secret) by the login
--    that answered it, exactly once;
--  * consumed by the token endpoint, exactly once (a conditional UPDATE: SECURITY O12), the
--    session made from it recorded so that a second redemption revokes it (O11).
CREATE TABLE authorizations (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    client_id        text NOT NULL CHECK (length(client_id) BETWEEN 1 AND 128),
    redirect_uri     text NOT NULL CHECK (length(redirect_uri) BETWEEN 1 AND 2048),
    redirect_given   boolean NOT NULL,  -- RFC 6749 §4.1.3: then the token request repeats it
    scope            text NOT NULL CHECK (length(scope) <= 1024),
    state            text CHECK (length(state) <= 4096),
    nonce            text CHECK (length(nonce) <= 256),
    code_challenge   text NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),  -- S256 only
    expires_at       timestamptz NOT NULL,  -- the login must come before this
    user_id          uuid,
    auth_time        timestamptz,
    code_sha256      bytea CHECK (octet_length(code_sha256) = 32),
    code_expires_at  timestamptz,
    consumed_at      timestamptz,
    session_id       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    CHECK ((code_sha256 IS NULL) = (user_id IS NULL))
);
-- Code redemption: by the SHA-256 of the presented code.
CREATE UNIQUE INDEX authorizations_code ON authorizations (code_sha256) WHERE code_sha256 IS NOT NULL;
CREATE INDEX authorizations_expiry ON authorizations (expires_at);
CREATE TRIGGER authorizations_updated_at BEFORE UPDATE ON authorizations
    FOR EACH ROW EXECUTE FUNCTION tessera_set_updated_at();
