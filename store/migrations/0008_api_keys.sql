-- Personal API keys (DESIGN §4; auth/apikey.c). A user mints them with an access token of
-- theirs; a key then acts for that user through the client whose token minted it, with a
-- scope no wider than that token's (a key is never a way to widen a grant).
--  * client_id: the client the key acts through. Deleting the client ends its keys, as it
--    ends its tokens.
--  * A key is looked up by the SHA-256 of the whole presented value (api_keys_sha256, made
--    in 0001), never by its display prefix (SECURITY K01).
--  * Revoking one writes a 'key' revocation (its id), spread to every shard and instance as
--    DESIGN §1's protocol spreads the others, so a shard's cached answer dies at once.
ALTER TABLE api_keys ADD COLUMN client_id text;
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
-- NOT VALID: the rows there all satisfy the narrower check, so neither widened check scans a
-- large table under its lock; new rows are checked all the same.
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('jti', 'sid', 'sub', 'client', 'key')) NOT VALID;
-- A key that is not live, presented at /verify or introspection, is audited with the address
-- that presented it as the actor (SECURITY K07: a guesser of keys is seen).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('user', 'client', 'admin', 'system', 'address')) NOT VALID;
-- GET /me/api-keys and the per-user cap count a user's live keys; the index of 0001 by
-- deleted_at (a column nothing sets) goes.
DROP INDEX api_keys_tenant;
CREATE INDEX api_keys_user_live ON api_keys (tenant_id, user_id, created_at)
    WHERE revoked_at IS NULL;
