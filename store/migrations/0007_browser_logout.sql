-- Signing out of the browser signs out of the applications it signed in (auth/logout.c,
-- OIDC RP-Initiated Logout 1.0).
--  * A client registers where the browser may be sent after a logout it asked for (§2: the
--    OP "MUST NOT perform post-logout redirection" to a URI not registered, byte for byte).
--  * Each authorization records the browser session that answered it (the login page's new
--    one, or the cookie's), and the session its code makes inherits that link: ending the
--    browser session ends every application session it begot, as Keycloak's SSO logout does.
--    No foreign key: a browser session is purged a day after its 7 days, while the sessions
--    it begot may live longer; a dangling link then ends nothing.
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}';
ALTER TABLE authorizations ADD COLUMN sso_session_id uuid;
ALTER TABLE sessions ADD COLUMN sso_session_id uuid;
-- The logout's lookup of the live sessions a browser session begot.
CREATE INDEX sessions_sso ON sessions (tenant_id, sso_session_id)
    WHERE sso_session_id IS NOT NULL AND revoked_at IS NULL;
