-- Personal API keys (DESIGN §4; auth/apikey.c). A user mints them with an access token of
-- theirs from a first-party client; a key then acts for that user through that client, with
-- a scope no wider than the token's (a key is never a way to widen a grant).
--  * client_id: the client the key acts through. Deleting the client ends its keys, as it
--    ends its tokens; narrowing its scopes narrows theirs.
--  * A key is looked up by the SHA-256 of the whole presented value (api_keys_sha256, made
--    in 0001), never by its display prefix (SECURITY K01).
--  * Revoking one writes a 'key' revocation (its id), spread to every shard and instance as
--    DESIGN §1's protocol spreads the others, so a shard's cached answer dies at once.
ALTER TABLE api_keys ADD COLUMN client_id text CHECK (length(client_id) BETWEEN 1 AND 128);
-- The cap and GET /me/api-keys read a user's keys by creation; the index of 0001 by
-- deleted_at (a column nothing sets) goes.
DROP INDEX api_keys_tenant;
CREATE INDEX api_keys_user_created ON api_keys (tenant_id, user_id, created_at);

-- A user holds at most 100 live keys (GET /me/api-keys lists them in one page) and mints at
-- most 1,000 a day (expired and revoked keys stay rows). Concurrent mints of one user take
-- turns on the user's row; each count then runs on a snapshot taken after the lock (READ
-- COMMITTED: a new one per statement of a function), so it sees the keys committed before
-- it. A statement's own CTE could not: its snapshot predates the wait. The refusal is a
-- unique violation, which the server answers 409.
CREATE FUNCTION tessera_api_keys_cap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM users WHERE tenant_id = NEW.tenant_id AND id = NEW.user_id FOR UPDATE;
    IF (SELECT count(*) FROM api_keys WHERE tenant_id = NEW.tenant_id AND user_id = NEW.user_id
        AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) >= 100
       OR (SELECT count(*) FROM api_keys WHERE tenant_id = NEW.tenant_id AND user_id = NEW.user_id
        AND created_at > now() - interval '1 day') >= 1000 THEN
        RAISE EXCEPTION 'the user holds the most API keys allowed' USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_keys_cap BEFORE INSERT ON api_keys
    FOR EACH ROW WHEN (NEW.user_id IS NOT NULL) EXECUTE FUNCTION tessera_api_keys_cap();

-- NOT VALID: the rows there all satisfy the narrower checks, so neither widened check scans a
-- large table under its lock; new rows are checked all the same.
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('jti', 'sid', 'sub', 'client', 'key')) NOT VALID;
-- A key that is not live, presented at /verify or introspection, is audited with the address
-- that presented it as the actor (SECURITY K07: a guesser of keys is seen).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('user', 'client', 'admin', 'system', 'address')) NOT VALID;
