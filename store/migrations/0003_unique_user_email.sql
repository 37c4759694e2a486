-- An address names at most one live account per tenant. With duplicates allowed, a stranger who
-- signed up with a victim's address made it ambiguous, and an ambiguous address logs nobody in
-- and sends no reset mail (auth/login.c, auth/recovery.c): the victim lost login by email and
-- account recovery. Sign-up, PATCH /me and `tessera admin user create` now answer 409 / refuse.
DROP INDEX users_tenant_email;
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, lower(email))
    WHERE deleted_at IS NULL AND email IS NOT NULL;
