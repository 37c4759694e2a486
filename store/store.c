/* store/store.c: the shard's store connections, the typed statements, and the fan-out of
 * instance-wide events from the one subscriber to every shard. See store.h. */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "store/sql.h"

#define STORE_EVENTS_PENDING_MAX 256 /* per destination shard while its ring is full */
#define STORE_PG_STALL_MS 20 /* a connection with queries in flight and no answer for this long is
                              * passed over while another one answers (statements take well
                              * under a millisecond; a busy pipeline answers every few µs) */

struct store_stmt_def {
    const char *name;
    bool read_only; /* may be answered by the replica */
    const char *sql;
};

/* Every statement filters by tenant (SECURITY T08): by slug, resolved in the same
 * statement, or by the tenant id a previous one returned. */
/* What a user sees of their own row (GET and PATCH /me): never the hash or the counters. */
#define STORE_USER_PROFILE                                                                                 \
    "json_build_object('id', id, 'username', username, 'email', email, 'email_verified', email_verified, " \
    "'created_at', created_at, 'updated_at', updated_at, 'last_login_at', last_login_at)::text "

/* What a tenant admin sees of a user (auth/admin.c): the state, never the hash. */
#define STORE_ADMIN_USER_JSON                                                                              \
    "json_build_object('id', id, 'username', username, 'email', email, 'email_verified', email_verified, " \
    "'disabled', disabled, 'locked_until', locked_until, 'failed_logins', failed_logins, "                  \
    "'created_at', created_at, 'last_login_at', last_login_at)"
static const struct store_stmt_def store_stmts[STORE_STMT_COUNT] = {
    [STORE_TENANT_BY_SLUG] = {
        "tenant_by_slug", true,
        "SELECT id, name, settings::text, coalesce(settings->>'registration', 'closed') = 'open' "
        "FROM tenants WHERE slug = $1 AND deleted_at IS NULL" },
    /* DESIGN §4: the JWKS holds the active and next keys and the retired ones still in
     * their not_after window; the active key first, then the newest. */
    [STORE_JWKS_BY_SLUG] = {
        "jwks_by_slug", true,
        "SELECT t.id, (SELECT json_build_object('keys', coalesce(json_agg(k.public_jwk "
        "ORDER BY k.state = 'active' DESC, k.created_at DESC), '[]'::json))::text "
        "FROM signing_keys k WHERE k.tenant_id = t.id AND (k.state IN ('active', 'next') "
        "OR (k.state = 'retired' AND k.not_after > now()))) "
        "FROM tenants t WHERE t.slug = $1 AND t.deleted_at IS NULL" },
    /* The user and its audit record commit together (SECURITY F12: audit events are rows
     * written with the change). */
    [STORE_USER_REGISTER] = {
        "user_register", false,
        "WITH u AS (INSERT INTO users (tenant_id, username, email, password_hash) "
        "VALUES ($1, $2, $3, $4) RETURNING id, tenant_id, created_at), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, "
        "target_id, ip, request_id) SELECT tenant_id, 'user', id::text, 'user_registered', "
        "'user', id::text, $5::inet, $6 FROM u) "
        "SELECT id, to_json(created_at) #>> '{}' FROM u" },
    /* Client authentication by client_id within the path's tenant (SECURITY T02). */
    [STORE_CLIENT_BY_ID] = {
        "client_by_id", true,
        "SELECT c.id, t.id, encode(c.secret_sha256, 'hex'), array_to_string(c.grants, ' '), "
        "array_to_string(c.scopes, ' '), c.token_lifetime_s, c.can_introspect "
        "FROM clients c JOIN tenants t ON t.id = c.tenant_id "
        "WHERE c.client_id = $1 AND t.slug = $2 AND c.deleted_at IS NULL AND t.deleted_at IS NULL" },
    /* The keys a shard signs and verifies with: the JWKS's set, active first, at most
     * KEYSET_KEYS_MAX (8) of them. */
    [STORE_TENANT_KEYS] = {
        "tenant_keys", true,
        "SELECT t.id, k.kid, k.alg, k.state, encode(k.private_sealed, 'hex'), k.master_key_id, "
        "coalesce(extract(epoch FROM k.activated_at)::bigint, 0), "
        "coalesce(extract(epoch FROM k.not_after)::bigint, 0), "
        "coalesce(t.settings->'rate_limit', '{}'::jsonb)::text "
        "FROM tenants t LEFT JOIN signing_keys k ON k.tenant_id = t.id AND (k.state IN ('active', "
        "'next') OR (k.state = 'retired' AND k.not_after > now())) "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL "
        "ORDER BY k.state = 'active' DESC, k.state = 'next' DESC, k.created_at DESC LIMIT 8" },
    /* DESIGN §1's revocation protocol: the row (and its seq) first, then the fan-out. */
    [STORE_REVOKE] = {
        "revoke", false,
        "INSERT INTO revocations (tenant_id, kind, value, expires_at) "
        "VALUES ($1, $2, $3, to_timestamp($4)) RETURNING seq" },
    /* Catch-up reads the primary (SECURITY F03: a lagging replica would skip revocations).
     * A seq is taken before its transaction commits, so a smaller one may become visible
     * after a larger one was read: the last 5 s are read again (a revoking statement runs
     * under the 2 s statement_timeout), and applying a revocation twice is harmless. */
    [STORE_REVOKED_SINCE] = {
        "revoked_since", false,
        "SELECT seq, tenant_id, kind, value, extract(epoch FROM expires_at)::bigint, "
        "CASE WHEN kind = 'sub' THEN " STORE_NOT_BEFORE_OF("created_at") " END "
        "FROM revocations WHERE (seq > $1 OR created_at > now() - interval '5 seconds') "
        "AND expires_at > now() ORDER BY seq LIMIT 1000" },
    /* Login (auth/login.c) reads the primary: a lockout set a moment ago must hold. A
     * disabled or deleted user is not found (the same answer as an unknown one, SECURITY
     * P01). One of $3 and $4 is NULL; each branch of the UNION is one index scan
     * (users_tenant_username, users_tenant_email: an OR of the two, or a LIMIT over it, made
     * the planner scan the tenant's users, 10 ms at 20,000 users against 0.1 ms). An email may
     * name two users: both rows come back and the caller refuses. */
    [STORE_LOGIN_LOOKUP] = {
        "login_lookup", false,
        "SELECT t.id, coalesce(c.first_party, false), coalesce(array_to_string(c.scopes, ' '), ''), "
        "coalesce(c.token_lifetime_s, 0), u.id, u.password_hash, coalesce(u.locked_until > now(), false), "
        "encode(c.secret_sha256, 'hex'), coalesce('password' = ANY(c.grants), false) "
        "FROM tenants t "
        "LEFT JOIN clients c ON c.tenant_id = t.id AND c.client_id = $2 AND c.deleted_at IS NULL "
        "LEFT JOIN LATERAL (SELECT id, password_hash, locked_until FROM users WHERE tenant_id = t.id "
        "AND deleted_at IS NULL AND NOT disabled AND lower(username) = lower($3::text) UNION ALL "
        "SELECT id, password_hash, locked_until FROM users WHERE tenant_id = t.id AND deleted_at IS NULL "
        "AND NOT disabled AND email IS NOT NULL AND lower(email) = lower($4::text) LIMIT 2) u ON true "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL" },
    /* SECURITY P03/P04: consecutive failures counted under the row lock; from the threshold
     * on, each failure sets a wait that doubles up to a cap (never permanent). Below it
     * locked_until records the last failure (a past time locks nothing), so a count older
     * than the reset window starts again at 1. A try during the wait changes nothing: the
     * victim of a spray gets in once it ends. The audit row commits with the change. */
    [STORE_LOGIN_FAILED] = {
        "login_failed", false,
        "WITH c AS (SELECT id, coalesce(locked_until > now(), false) AS locked, "
        "CASE WHEN locked_until < now() - make_interval(secs => $9::int) THEN 1 "
        "ELSE failed_logins + 1 END AS n FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE), "
        "u AS (UPDATE users SET failed_logins = c.n, locked_until = CASE WHEN c.n >= $6::int "
        "THEN now() + make_interval(secs => least($7::int * power(2, least(c.n - $6::int, 30)), $8::int)) "
        "ELSE now() END FROM c WHERE users.id = c.id AND NOT c.locked RETURNING c.n), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'user', $2::text, CASE WHEN coalesce((SELECT n FROM u), 0) "
        ">= $6::int THEN 'locked_out' ELSE 'login_failed' END, 'user', $2::text, $3::inet, $4, "
        "jsonb_build_object('reason', CASE WHEN coalesce((SELECT locked FROM c), false) THEN 'locked' "
        "ELSE $5::text END, 'failures', (SELECT n FROM u))) "
        "SELECT coalesce((SELECT n FROM u), 0)" },
    /* The user's reset, the session and the audit row commit together; nothing happens when
     * the user was disabled, locked or given another password since the lookup. */
    [STORE_LOGIN_SUCCEEDED] = {
        "login_succeeded", false,
        "WITH u AS (UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = now(), "
        "password_hash = coalesce($10, password_hash) WHERE tenant_id = $1 AND id = $2 "
        "AND password_hash = $11 AND NOT disabled AND deleted_at IS NULL "
        "AND NOT coalesce(locked_until > now(), false) RETURNING id, tenant_id), "
        "s AS (INSERT INTO sessions (id, tenant_id, user_id, client_id, refresh_sha256, amr, ip, "
        "user_agent, expires_at, absolute_expires_at) SELECT $3, u.tenant_id, u.id, $4, "
        "decode($5, 'hex'), '{pwd}', $6::inet, $7, now() + make_interval(secs => $8::int), "
        "now() + make_interval(secs => $9::int) FROM u RETURNING id, user_id), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'user', s.user_id::text, 'login_succeeded', 'session', "
        "s.id::text, $6::inet, $12, jsonb_build_object('client_id', $4::text, 'rehashed', "
        "$10::text IS NOT NULL) FROM s) "
        "SELECT id FROM s" },
    /* RFC 9700 §4.14.2 rotation as one conditional UPDATE: under the row lock a second
     * presentation of the same token (this instance or another) no longer matches, so
     * exactly one succeeds (SECURITY O16). The caller's client must be the session's
     * (O18), a public caller only for a public client; the session live (O20) and its
     * user enabled; the sliding expiry moves up to the absolute cap. */
    [STORE_SESSION_ROTATE] = {
        "session_rotate", false,
        "UPDATE sessions s SET updated_at = now(), refresh_prev_sha256 = s.refresh_sha256, refresh_sha256 = decode($4, 'hex'), "
        "last_seen_at = now(), expires_at = least(now() + make_interval(secs => $7::int), "
        "s.absolute_expires_at) FROM tenants t, users u, clients c "
        "WHERE s.id = $2 AND t.slug = $1 AND t.deleted_at IS NULL AND s.tenant_id = t.id "
        "AND s.refresh_sha256 = decode($3, 'hex') AND s.client_id = $5 AND s.revoked_at IS NULL "
        "AND s.expires_at > now() AND s.absolute_expires_at > now() "
        "AND u.tenant_id = s.tenant_id AND u.id = s.user_id AND NOT u.disabled AND u.deleted_at IS NULL "
        "AND c.tenant_id = s.tenant_id AND c.client_id = s.client_id AND c.deleted_at IS NULL "
        "AND (NOT $6::boolean OR c.secret_sha256 IS NULL) "
        "RETURNING t.id, s.user_id, array_to_string(c.scopes, ' '), c.token_lifetime_s, "
        "extract(epoch FROM s.expires_at)::bigint" },
    /* RFC 9700 §4.14.2 reuse: the previous token presented again (by its own client) revokes
     * the session and, through a 'sid' revocation, every access token of it (SECURITY
     * O15); the revocation outlives the longest token the client could have been given. */
    [STORE_SESSION_REUSE] = {
        "session_reuse", false,
        "WITH s AS (UPDATE sessions s SET updated_at = now(), revoked_at = now() FROM tenants t "
        "WHERE s.id = $2 AND t.slug = $1 AND s.tenant_id = t.id AND s.client_id = $4 "
        "AND s.refresh_prev_sha256 = decode($3, 'hex') AND s.revoked_at IS NULL "
        "RETURNING s.id, s.tenant_id, s.user_id), "
        "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT s.tenant_id, 'sid', "
        "s.id::text, now() + make_interval(secs => greatest($7::int, coalesce((SELECT c.token_lifetime_s "
        "FROM clients c WHERE c.tenant_id = s.tenant_id AND c.client_id = $4), 0) + $7::int)) FROM s "
        "RETURNING seq, extract(epoch FROM expires_at)::bigint AS exp), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT s.tenant_id, 'client', $4, 'refresh_reuse_detected', 'session', "
        "s.id::text, $6::inet, $5, jsonb_build_object('user_id', s.user_id) FROM s) "
        "SELECT r.seq, s.tenant_id, s.id, r.exp FROM s, r" },
    /* Logout: the session ends and, by a 'sid' revocation outliving the longest token its
     * client could hold, every access token of it; the revocation is written even when the
     * row was already revoked or expired, since the presented token is still valid. */
    [STORE_SESSION_LOGOUT] = {
        "session_logout", false,
        "WITH s AS (UPDATE sessions SET updated_at = now(), revoked_at = now() WHERE tenant_id = $1 AND id = $2 "
        "AND user_id = $3 AND revoked_at IS NULL RETURNING id), "
        "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT $1, 'sid', $2::text, "
        "now() + make_interval(secs => coalesce((SELECT c.token_lifetime_s FROM clients c "
        "WHERE c.tenant_id = $1 AND c.client_id = $4), 0) + $5::int) "
        "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id) SELECT $1, 'user', $3::text, 'logout', 'session', $2::text, $6::inet, $7) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* Logout everywhere (the "sub not-before"): every session of the user not yet
     * revoked ends, and the user's tokens issued before the not-before are refused; one row
     * for the user, plus 'sid' rows only for the sessions active within the margin. */
    [STORE_SESSION_LOGOUT_ALL] = {
        "session_logout_all", false,
        "WITH u AS (SELECT $1::uuid AS tenant_id, $2::uuid AS id), "
        STORE_USER_SESSIONS_END("u", "$3")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'user', $2::text, 'logout_all', 'user', $2::text, $4::inet, "
        "$5, jsonb_build_object('sessions', (SELECT count(*) FROM s))) "
        STORE_USER_SESSIONS_END_ROWS },
    /* RFC 7009 §2.1: a refresh token revoked by its own client ends its session and every
     * access token of it. */
    [STORE_SESSION_REVOKE] = {
        "session_revoke", false,
        "WITH s AS (UPDATE sessions s SET updated_at = now(), revoked_at = now() FROM tenants t WHERE s.id = $2 "
        "AND t.slug = $1 AND s.tenant_id = t.id AND s.refresh_sha256 = decode($3, 'hex') "
        "AND s.client_id = $4 AND s.revoked_at IS NULL RETURNING s.id, s.tenant_id, s.user_id), "
        "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT s.tenant_id, 'sid', "
        "s.id::text, now() + make_interval(secs => coalesce((SELECT c.token_lifetime_s FROM clients c "
        "WHERE c.tenant_id = s.tenant_id AND c.client_id = $4), 0) + $5::int) FROM s "
        "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT s.tenant_id, 'client', $4, 'session_revoked', 'session', "
        "s.id::text, $6::inet, $7, jsonb_build_object('user_id', s.user_id) FROM s) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* GET /me/sessions: what a user sees of their sessions (no secret: no digest). */
    [STORE_SESSIONS_OF_USER] = {
        "sessions_of_user", true,
        "SELECT coalesce(json_agg(json_build_object('id', s.id, 'client_id', s.client_id, "
        "'ip', host(s.ip), 'user_agent', s.user_agent, 'created_at', s.created_at, "
        "'last_seen_at', s.last_seen_at, 'expires_at', least(s.expires_at, s.absolute_expires_at), "
        "'current', s.id = $3::uuid) ORDER BY s.created_at DESC), '[]'::json)::text "
        "FROM (SELECT * FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL "
        "AND expires_at > now() AND absolute_expires_at > now() ORDER BY created_at DESC LIMIT 100) s" },
    /* DELETE /me/sessions/{id}: only a live session of the caller's own user, and the 'sid'
     * revocation only when that update took (a user cannot revoke another's tokens). */
    [STORE_SESSION_REVOKE_OWN] = {
        "session_revoke_own", false,
        "WITH s AS (UPDATE sessions SET updated_at = now(), revoked_at = now() WHERE tenant_id = $1 AND user_id = $2 "
        "AND id = $3 AND revoked_at IS NULL RETURNING id, tenant_id, client_id), "
        STORE_SID_REVOCATIONS("s", "$4")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id) SELECT s.tenant_id, 'user', $2::text, 'session_revoked', 'session', s.id::text, "
        "$5::inet, $6 FROM s) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* GET /me (from the primary: a PATCH just answered is read back as written). */
    [STORE_USER_ME] = {
        "user_me", false,
        "SELECT " STORE_USER_PROFILE "FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL AND NOT disabled" },
    /* PATCH /me: a new address is unverified until proven again; the audit row with it. */
    [STORE_USER_PATCH] = {
        "user_patch", false,
        "WITH u AS (UPDATE users SET username = coalesce($3, username), "
        "email = CASE WHEN $4::text IS NULL THEN email ELSE nullif($4, '') END, "
        "email_verified = CASE WHEN $4::text IS NOT NULL AND lower(nullif($4, '')) IS DISTINCT FROM lower(email) "
        "THEN false ELSE email_verified END "
        "WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL AND NOT disabled RETURNING *), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, ip, "
        "request_id, details) SELECT u.tenant_id, 'user', $2::text, 'profile_updated', 'user', $2::text, "
        "$5::inet, $6, jsonb_build_object('username', $3::text IS NOT NULL, 'email', $4::text IS NOT NULL) "
        "FROM u) "
        "SELECT " STORE_USER_PROFILE "FROM u" },
    /* Issue 6, SECURITY P02: one statement makes the token, its mail and the audit row, or
     * nothing when the address names no single live, enabled user (an address shared by two
     * users names none, as at login). Earlier unused tokens of the purpose end now: only the
     * newest mail works. Only the token's SHA-256 is stored (P13); the address the token was
     * sent to is kept so a verification proves that address and no later one. */
    [STORE_RECOVERY_MAIL] = {
        "recovery_mail", false,
        "WITH u AS (SELECT u.id, u.tenant_id, u.email, u.email_verified FROM tenants t JOIN users u "
        "ON u.tenant_id = t.id WHERE t.slug = $1 AND t.deleted_at IS NULL AND u.deleted_at IS NULL "
        "AND NOT u.disabled AND u.email IS NOT NULL AND lower(u.email) = lower($2::text) LIMIT 2), "
        "one AS (SELECT id, tenant_id, email FROM u WHERE (SELECT count(*) FROM u) = 1 "
        "AND ($3::text <> 'email_verify' OR NOT u.email_verified)), "
        "x AS (UPDATE one_time_tokens o SET expires_at = now(), updated_at = now() FROM one "
        "WHERE o.tenant_id = one.tenant_id AND o.user_id = one.id AND o.purpose = $3::text "
        "AND o.used_at IS NULL AND o.expires_at > now()), "
        "k AS (INSERT INTO one_time_tokens (tenant_id, user_id, purpose, sha256, data, expires_at) "
        "SELECT tenant_id, id, $3::text, decode($4, 'hex'), jsonb_build_object('email', email), "
        "now() + make_interval(secs => $5::int) FROM one), "
        "m AS (INSERT INTO email_outbox (tenant_id, to_address, subject, body_text) "
        "SELECT tenant_id, email, $6, $7 FROM one), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id) SELECT tenant_id, 'user', id::text, $3::text || '_requested', 'user', id::text, "
        "$8::inet, $9 FROM one) "
        "SELECT count(*) FROM one" },
    /* SECURITY P13: the token is spent under its row lock (a concurrent replay waits, then
     * finds it used), the password set and the lockout cleared, every session of the user
     * revoked with its 'sid' revocation as logout-all does, and the audit row written. The
     * mail proved the address it went to: still the user's, it is marked verified. */
    [STORE_RECOVERY_RESET] = {
        "recovery_reset", false,
        "WITH k AS (UPDATE one_time_tokens o SET used_at = now(), updated_at = now() "
        "FROM tenants t, users u WHERE t.slug = $1 AND t.deleted_at IS NULL AND o.tenant_id = t.id "
        "AND o.sha256 = decode($2, 'hex') AND o.purpose = 'password_reset' AND o.used_at IS NULL "
        "AND o.expires_at > now() AND u.tenant_id = o.tenant_id AND u.id = o.user_id "
        "AND u.deleted_at IS NULL AND NOT u.disabled "
        "RETURNING o.tenant_id, o.user_id, o.data->>'email' AS email), "
        "p AS (UPDATE users SET password_hash = $3, failed_logins = 0, locked_until = NULL, "
        "email_verified = email_verified OR coalesce(lower(users.email) = lower(k.email), false), "
        "updated_at = now() FROM k WHERE users.tenant_id = k.tenant_id AND users.id = k.user_id "
        "RETURNING users.tenant_id, users.id), "
        STORE_USER_SESSIONS_END("p", "$4")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT p.tenant_id, 'user', p.id::text, 'password_reset', 'user', "
        "p.id::text, $5::inet, $6, jsonb_build_object('sessions', (SELECT count(*) FROM s)) FROM p) "
        STORE_USER_SESSIONS_END_ROWS },
    /* The token proves the address it was sent to: spent only while the user still has it. */
    [STORE_RECOVERY_VERIFY] = {
        "recovery_verify", false,
        "WITH k AS (UPDATE one_time_tokens o SET used_at = now(), updated_at = now() "
        "FROM tenants t, users u WHERE t.slug = $1 AND t.deleted_at IS NULL AND o.tenant_id = t.id "
        "AND o.sha256 = decode($2, 'hex') AND o.purpose = 'email_verify' AND o.used_at IS NULL "
        "AND o.expires_at > now() AND u.tenant_id = o.tenant_id AND u.id = o.user_id "
        "AND u.deleted_at IS NULL AND NOT u.disabled AND u.email IS NOT NULL "
        "AND lower(u.email) = lower(o.data->>'email') RETURNING o.tenant_id, o.user_id), "
        "v AS (UPDATE users SET email_verified = true, updated_at = now() FROM k "
        "WHERE users.tenant_id = k.tenant_id AND users.id = k.user_id "
        "RETURNING users.tenant_id, users.id, users.email), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT tenant_id, 'user', id::text, 'email_verified', 'user', id::text, "
        "$3::inet, $4, jsonb_build_object('email', email) FROM v) "
        "SELECT id FROM v" },
    /* RFC 7662 for a refresh token (auth/introspect.c): from the primary, as rotation changes
     * the current digest; only its own client learns anything (SECURITY O34). */
    [STORE_REFRESH_INTROSPECT] = {
        "refresh_introspect", false,
        "SELECT t.id, s.user_id, array_to_string(c.scopes, ' '), "
        "extract(epoch FROM least(s.expires_at, s.absolute_expires_at))::bigint, "
        "extract(epoch FROM s.created_at)::bigint "
        "FROM sessions s JOIN tenants t ON t.id = s.tenant_id "
        "JOIN users u ON u.tenant_id = s.tenant_id AND u.id = s.user_id "
        "JOIN clients c ON c.tenant_id = s.tenant_id AND c.client_id = s.client_id "
        "WHERE s.id = $2 AND t.slug = $1 AND t.deleted_at IS NULL AND s.refresh_sha256 = decode($3, 'hex') "
        "AND s.client_id = $4 AND s.revoked_at IS NULL AND s.expires_at > now() AND s.absolute_expires_at > now() "
        "AND NOT u.disabled AND u.deleted_at IS NULL AND c.deleted_at IS NULL" },
    /* POST /me/password: the stored hash the current password is checked against. */
    [STORE_USER_PASSWORD_HASH] = {
        "user_password_hash", false,
        "SELECT password_hash FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL "
        "AND NOT disabled" },
    /* ... and the change: the new hash, the lockout cleared, every other session revoked with
     * its 'sid' revocation (the asking one stays), the audit row. */
    [STORE_USER_PASSWORD_SET] = {
        "user_password_set", false,
        "WITH p AS (UPDATE users SET password_hash = $3, failed_logins = 0, locked_until = NULL "
        "WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL AND NOT disabled RETURNING tenant_id, id), "
        "s AS (UPDATE sessions SET updated_at = now(), revoked_at = now() FROM p WHERE sessions.tenant_id = p.tenant_id "
        "AND sessions.user_id = p.id AND sessions.id <> $4::uuid AND sessions.revoked_at IS NULL "
        "RETURNING sessions.id, sessions.tenant_id, sessions.client_id), "
        STORE_SID_REVOCATIONS("s", "$5")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT p.tenant_id, 'user', p.id::text, 'password_changed', 'user', "
        "p.id::text, $6::inet, $7, jsonb_build_object('sessions', (SELECT count(*) FROM s)) FROM p) "
        "SELECT r.seq, r.tenant_id, r.value, r.exp FROM p LEFT JOIN r ON true" },
    /* Tenant admin (auth/admin.c): every statement names the token's tenant ($1), so an id of
     * another tenant's user matches nothing (SECURITY T08). What an admin sees of a user:
     * never the hash. The list walks the (tenant_id, id) unique index by keyset: a page
     * starts after the last id of the previous one, whatever was added or deleted between. */
    [STORE_ADMIN_USERS_LIST] = {
        "admin_users_list", true,
        "WITH p AS (SELECT * FROM users WHERE tenant_id = $1 AND deleted_at IS NULL "
        "AND ($2::uuid IS NULL OR id > $2::uuid) AND ($3::text IS NULL "
        "OR strpos(lower(username), lower($3::text)) > 0 OR strpos(lower(email), lower($3::text)) > 0) "
        "ORDER BY id LIMIT $4::int + 1), "
        "page AS (SELECT * FROM p ORDER BY id LIMIT $4::int) "
        "SELECT json_build_object('users', coalesce((SELECT json_agg(" STORE_ADMIN_USER_JSON " ORDER BY id) "
        "FROM page), '[]'::json), 'next_cursor', CASE WHEN (SELECT count(*) FROM p) > $4::int "
        "THEN (SELECT id::text FROM page ORDER BY id DESC LIMIT 1) END)::text" },
    /* From the primary: an admin reads back at once what a change just committed. */
    [STORE_ADMIN_USER_GET] = {
        "admin_user_get", false,
        "SELECT " STORE_ADMIN_USER_JSON "::text FROM users WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL" },
    /* SECURITY O20: a disabled user's sessions end with their 'sid' revocations, in the same
     * statement as the flag and the audit row, so their access tokens are refused and their
     * refresh tokens invalid_grant as soon as the answer is given. */
    [STORE_ADMIN_USER_DISABLE] = {
        "admin_user_disable", false,
        "WITH u AS (UPDATE users SET disabled = true WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL RETURNING tenant_id, id), "
        STORE_USER_SESSIONS_END("u", "$4")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT u.tenant_id, 'client', $3::text, 'user_disabled', 'user', "
        "u.id::text, $5::inet, $6, jsonb_build_object('sessions', (SELECT count(*) FROM s)) FROM u) "
        STORE_USER_SESSIONS_END_ROWS },
    [STORE_ADMIN_USER_ENABLE] = {
        "admin_user_enable", false,
        "WITH u AS (UPDATE users SET disabled = false WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL RETURNING tenant_id, id), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id) SELECT u.tenant_id, 'client', $3::text, 'user_enabled', 'user', u.id::text, "
        "$4::inet, $5 FROM u) "
        "SELECT id FROM u" },
    /* SECURITY P04: the victim of a lockout spray is let in at once; the audit row keeps what
     * the lock was (o reads the row as it was before the update). */
    [STORE_ADMIN_USER_UNLOCK] = {
        "admin_user_unlock", false,
        "WITH o AS (SELECT failed_logins, locked_until FROM users WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL), "
        "u AS (UPDATE users SET failed_logins = 0, locked_until = NULL WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL RETURNING tenant_id, id), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT u.tenant_id, 'client', $3::text, 'user_unlocked', 'user', "
        "u.id::text, $4::inet, $5, jsonb_build_object('failed_logins', (SELECT failed_logins FROM o), "
        "'locked_until', (SELECT locked_until FROM o)) FROM u) "
        "SELECT id FROM u" },
    /* Soft delete, by an admin or by the user: the username and the address are free again
     * (the unique indexes are partial on deleted_at IS NULL); sessions end as on disable. */
    [STORE_USER_DELETE] = {
        "user_delete", false,
        "WITH u AS (UPDATE users SET deleted_at = now() WHERE tenant_id = $1 AND id = $2 "
        "AND deleted_at IS NULL RETURNING tenant_id, id), "
        STORE_USER_SESSIONS_END("u", "$5")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT u.tenant_id, $3::text, $4::text, 'user_deleted', 'user', "
        "u.id::text, $6::inet, $7, jsonb_build_object('sessions', (SELECT count(*) FROM s)) FROM u) "
        STORE_USER_SESSIONS_END_ROWS },
    /* GET /audit (auth/audit.c): keyset on seq, newest first; an absent filter is NULL. The
     * indexes of migration 0004 serve the tenant's newest rows and the actor and target
     * filters. A page a moment stale is harmless: the replica may answer. */
    [STORE_AUDIT_LIST] = {
        "audit_list", true,
        "WITH p AS (SELECT * FROM audit_log WHERE tenant_id = $1 AND ($2::text IS NULL OR action = $2::text) "
        "AND ($3::text IS NULL OR actor_id = $3::text) AND ($4::text IS NULL OR target_id = $4::text) "
        "AND ($5::bigint IS NULL OR created_at >= to_timestamp($5::bigint)) "
        "AND ($6::bigint IS NULL OR created_at < to_timestamp($6::bigint)) "
        "AND ($7::bigint IS NULL OR seq < $7::bigint) ORDER BY seq DESC LIMIT $8::int + 1), "
        "page AS (SELECT * FROM p ORDER BY seq DESC LIMIT $8::int) "
        "SELECT json_build_object('events', coalesce((SELECT json_agg(json_build_object('seq', seq, "
        "'time', created_at, 'actor_kind', actor_kind, 'actor_id', actor_id, 'action', action, "
        "'target_kind', target_kind, 'target_id', target_id, 'ip', host(ip), 'request_id', request_id, "
        "'details', details) ORDER BY seq DESC) FROM page), '[]'::json), 'next_cursor', "
        "CASE WHEN (SELECT count(*) FROM p) > $8::int THEN (SELECT min(seq)::text FROM page) END)::text" },
    /* Sign-up with an address (auth/register.c, SECURITY P02): one statement decides, so a
     * taken address answers like a free one after the same work. The insert yields to the
     * address's partial unique index (0003; Postgres infers that arbiter only when the
     * ON CONFLICT clause repeats the index predicate). A free address: the user, its
     * verification token and mail, its audit row. A taken one: no user, a mail to the
     * holder and an audit row about it. A taken username must still be 409, but DO NOTHING
     * would swallow it when the address is taken too (the arbiter is checked first), so the
     * address is left out of the insert then and the username index raises 23505. A token row
     * may reference the user inserted here: foreign keys are checked at the statement's end. */
    [STORE_USER_SIGNUP] = {
        "user_signup", false,
        "WITH named AS (SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1::uuid "
        "AND lower(username) = lower($2::text) AND deleted_at IS NULL) AS taken), "
        "u AS (INSERT INTO users (tenant_id, username, email, password_hash) "
        "SELECT $1::uuid, $2::text, CASE WHEN taken THEN NULL ELSE $3::text END, $4::text "
        "FROM named "
        "ON CONFLICT (tenant_id, lower(email)) WHERE deleted_at IS NULL AND email IS NOT NULL "
        "DO NOTHING RETURNING id, tenant_id, email), "
        "held AS (SELECT o.id, o.tenant_id, o.email FROM users o WHERE o.tenant_id = $1::uuid "
        "AND o.deleted_at IS NULL AND o.email IS NOT NULL AND lower(o.email) = lower($3::text) "
        "AND NOT EXISTS (SELECT 1 FROM u)), "
        "k AS (INSERT INTO one_time_tokens (tenant_id, user_id, purpose, sha256, data, expires_at) "
        "SELECT tenant_id, id, 'email_verify', decode($7::text, 'hex'), "
        "jsonb_build_object('email', email), now() + make_interval(secs => $8::int) FROM u), "
        "m AS (INSERT INTO email_outbox (tenant_id, to_address, subject, body_text) "
        "SELECT tenant_id, email, $9::text, $10::text FROM u "
        "UNION ALL SELECT tenant_id, email, $11::text, $12::text FROM held), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, "
        "target_id, ip, request_id) SELECT tenant_id, 'user', id::text, 'user_registered', "
        "'user', id::text, $5::inet, $6::text FROM u UNION ALL SELECT tenant_id, 'system', NULL, "
        "'signup_address_taken', 'user', id::text, $5::inet, $6::text FROM held) "
        "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM held)" },
    /* Batched audit events (auth/audit_batch.c): one JSON array of rows, each keeping the
     * moment of its event. An event of a tenant that does not exist is dropped by the join;
     * one already written by a batch whose answer was lost is skipped (its event_id). */
    [STORE_AUDIT_BATCH] = {
        "audit_batch", false,
        "INSERT INTO audit_log (tenant_id, event_id, actor_kind, actor_id, action, target_kind, "
        "target_id, ip, request_id, details, created_at, updated_at) "
        "SELECT t.id, e.event_id, e.actor_kind, e.actor_id, e.action, e.target_kind, e.target_id, "
        "e.ip, e.request_id, coalesce(e.details, '{}'::jsonb), to_timestamp(e.at_us / 1e6), "
        "to_timestamp(e.at_us / 1e6) "
        "FROM jsonb_to_recordset($1::jsonb) AS e(slug text, event_id uuid, actor_kind text, "
        "actor_id text, action text, target_kind text, target_id text, ip inet, request_id text, "
        "details jsonb, at_us bigint) JOIN tenants t ON t.slug = e.slug "
        "ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING" },
    /* The authorization endpoint's client: every check of RFC 6749 §4.1.2.1's "invalid or
     * missing redirect_uri" is made against these URIs before any redirect (SECURITY O30). */
    [STORE_AUTHZ_CLIENT] = {
        "authz_client", true,
        "SELECT t.id, array_to_string(c.grants, ' '), array_to_string(c.scopes, ' '), "
        "array_to_string(c.redirect_uris, E'\\n') "
        "FROM tenants t JOIN clients c ON c.tenant_id = t.id "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL AND c.client_id = $2 AND c.deleted_at IS NULL" },
    /* With a live browser session (sessions row without client: the SSO cookie's) whose
     * login is recent enough for max_age (OIDC Core §3.1.2.1), the request is answered at
     * once: its user, the session's login time as auth_time, a code. The session's sliding
     * expiry moves as a refresh's does. */
    [STORE_AUTHZ_CREATE] = {
        "authz_create", false,
        "WITH s AS (UPDATE sessions s SET updated_at = now(), last_seen_at = now(), expires_at = least(now() + "
        "make_interval(secs => $14::int), s.absolute_expires_at) FROM users u WHERE s.id = $11 "
        "AND s.tenant_id = $1 AND s.client_id IS NULL AND s.refresh_sha256 = decode($12, 'hex') "
        "AND s.revoked_at IS NULL AND s.expires_at > now() AND s.absolute_expires_at > now() "
        "AND u.tenant_id = s.tenant_id AND u.id = s.user_id AND NOT u.disabled AND u.deleted_at IS NULL "
        "AND ($16::int IS NULL OR s.created_at >= now() - make_interval(secs => $16::int)) "
        "RETURNING s.id, s.user_id, s.created_at), "
        "i AS (INSERT INTO authorizations (id, tenant_id, client_id, redirect_uri, redirect_given, scope, "
        "state, nonce, code_challenge, expires_at, user_id, auth_time, code_sha256, code_expires_at, "
        "sso_session_id) "
        "SELECT $2, $1, $3, $4, $5, coalesce($6, array_to_string(c.scopes, ' ')), $7, $8, $9, "
        "now() + make_interval(secs => $10::int), s.user_id, s.created_at, "
        "CASE WHEN s.user_id IS NOT NULL THEN decode($13, 'hex') END, "
        "CASE WHEN s.user_id IS NOT NULL THEN now() + make_interval(secs => $15::int) END, s.id "
        "FROM clients c LEFT JOIN s ON true "
        "WHERE c.tenant_id = $1 AND c.client_id = $3 AND c.deleted_at IS NULL "
        "RETURNING id, user_id, sso_session_id), "
        "l AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'user', i.user_id::text, 'sso_login', 'session', "
        "i.sso_session_id::text, $17::inet, $18, jsonb_build_object('client_id', $3::text) "
        "FROM i WHERE i.user_id IS NOT NULL) "
        "SELECT id, user_id IS NOT NULL FROM i" },
    /* The hosted login page's lookup, from the primary as STORE_LOGIN_LOOKUP's (a lockout set a
     * moment ago holds), with its columns; the second says the request still awaits a login.
     * The name typed is a username or an email (Keycloak's "username or email"): both are
     * looked for, and two different users (one's username another's email) are neither. */
    [STORE_AUTHZ_LOGIN_LOOKUP] = {
        "authz_login_lookup", false,
        "SELECT t.id, a.id IS NOT NULL, '', 0, u.id, u.password_hash, "
        "coalesce(u.locked_until > now(), false), NULL, false FROM tenants t "
        "LEFT JOIN authorizations a ON a.tenant_id = t.id AND a.id = $2 AND a.user_id IS NULL "
        "AND a.expires_at > now() "
        "LEFT JOIN LATERAL (SELECT id, password_hash, locked_until FROM users WHERE tenant_id = t.id "
        "AND deleted_at IS NULL AND NOT disabled AND lower(username) = lower($3::text) UNION "
        "SELECT id, password_hash, locked_until FROM users WHERE tenant_id = t.id AND deleted_at IS NULL "
        "AND NOT disabled AND email IS NOT NULL AND lower(email) = lower($4::text) LIMIT 2) u ON true "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL" },
    /* As STORE_LOGIN_SUCCEEDED, but what the login makes is the request's code (its SHA-256),
     * given once: a request already answered (or expired) takes no second one. The browser
     * session the cookie names is renewed in place when it is the same user's and live (a new
     * secret and login time: its applications' sessions and pending codes keep their link,
     * k), else ended (o) for a new one (b). */
    [STORE_AUTHZ_LOGIN_SUCCEEDED] = {
        "authz_login_succeeded", false,
        "WITH u AS (UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = now(), "
        "password_hash = coalesce($8, password_hash) WHERE tenant_id = $1 AND id = $2 "
        "AND password_hash = $9 AND NOT disabled AND deleted_at IS NULL "
        "AND NOT coalesce(locked_until > now(), false) RETURNING id, tenant_id), "
        "k AS (SELECT s.id FROM sessions s, u WHERE s.tenant_id = $1 AND s.id = $15 AND s.client_id IS NULL "
        "AND s.refresh_sha256 = decode($16, 'hex') AND s.revoked_at IS NULL AND s.user_id = u.id "
        "AND s.expires_at > now() AND s.absolute_expires_at > now()), "
        "z AS (UPDATE authorizations a SET user_id = u.id, auth_time = now(), "
        "code_sha256 = decode($4, 'hex'), code_expires_at = now() + make_interval(secs => $5::int), "
        "sso_session_id = coalesce((SELECT id FROM k), $10::uuid) FROM u WHERE a.tenant_id = u.tenant_id "
        "AND a.id = $3 AND a.user_id IS NULL AND a.expires_at > now() "
        "RETURNING a.client_id, a.redirect_uri, a.state, a.sso_session_id), "
        "b AS (INSERT INTO sessions (id, tenant_id, user_id, client_id, refresh_sha256, amr, ip, "
        "user_agent, expires_at, absolute_expires_at) SELECT $10, u.tenant_id, u.id, NULL, "
        "decode($11, 'hex'), '{pwd}', $6::inet, $12, now() + make_interval(secs => $13::int), "
        "now() + make_interval(secs => $14::int) FROM u, z WHERE z.sso_session_id = $10 RETURNING id), "
        "r AS (UPDATE sessions s SET updated_at = now(), refresh_sha256 = decode($17, 'hex'), created_at = now(), "
        "last_seen_at = now(), ip = $6::inet, user_agent = $12, "
        "expires_at = now() + make_interval(secs => $13::int), "
        "absolute_expires_at = now() + make_interval(secs => $14::int) FROM z WHERE s.tenant_id = $1 "
        "AND s.id = z.sso_session_id AND s.id = $15 AND s.revoked_at IS NULL RETURNING s.id), "
        "o AS (UPDATE sessions s SET updated_at = now(), revoked_at = now() FROM z WHERE z.sso_session_id = $10 "
        "AND s.tenant_id = $1 AND s.id = $15 AND s.client_id IS NULL "
        "AND s.refresh_sha256 = decode($16, 'hex') AND s.revoked_at IS NULL RETURNING s.id), "
        "l AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'user', $2::text, 'login_succeeded', 'session', "
        "z.sso_session_id::text, $6::inet, $7, jsonb_build_object('client_id', z.client_id, "
        "'flow', 'authorization_code', 'rehashed', $8::text IS NOT NULL, "
        "'renewed', EXISTS (SELECT 1 FROM r), 'replaced_session', (SELECT o.id FROM o)) FROM z) "
        "SELECT z.redirect_uri, z.state, z.client_id IS NOT NULL, z.sso_session_id FROM u LEFT JOIN z ON true" },
    /* The browser's logout: its session ends (the cookie's; no token was issued from it), and
     * every session its codes made with a 'sid' revocation each, with the audit row; so does
     * the session of a verified id_token_hint (its user and client; OIDC RP-Initiated Logout
     * §2), from any browser. Unless the post-logout redirect asked for is not the client's:
     * then nothing ends. */
    [STORE_SSO_LOGOUT] = {
        "sso_logout", false,
        "WITH ok AS (SELECT $7::text IS NULL OR EXISTS (SELECT 1 FROM clients c JOIN tenants t "
        "ON t.id = c.tenant_id WHERE t.slug = $1 AND t.deleted_at IS NULL AND c.client_id = $6 "
        "AND c.deleted_at IS NULL "
        "AND $7 = ANY (c.post_logout_redirect_uris)) AS v), "
        "b AS (UPDATE sessions s SET updated_at = now(), revoked_at = now() FROM tenants t, ok WHERE ok.v AND t.slug = $1 "
        "AND s.tenant_id = t.id AND s.id = $2 AND s.client_id IS NULL "
        "AND s.refresh_sha256 = decode($3, 'hex') AND s.revoked_at IS NULL "
        "RETURNING s.id, s.tenant_id, s.user_id), "
        STORE_SSO_APPS_END("b")
        "h AS (UPDATE sessions s SET updated_at = now(), revoked_at = now() FROM tenants t, ok WHERE ok.v AND t.slug = $1 "
        "AND s.tenant_id = t.id AND s.id = $9::uuid AND s.user_id = $10::uuid AND s.client_id = $11 "
        "AND s.revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM b WHERE b.id = s.sso_session_id) "
        "RETURNING s.id, s.tenant_id, s.client_id, s.user_id), "
        "e AS (SELECT id, tenant_id, client_id FROM k UNION ALL SELECT id, tenant_id, client_id FROM h), "
        STORE_SID_REVOCATIONS("e", "$8")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT x.tenant_id, 'user', x.user_id::text, 'logout', 'session', "
        "x.id::text, $4::inet, $5, jsonb_build_object('browser', x.browser, 'sessions', (SELECT count(*) FROM e), "
        "'hinted', EXISTS (SELECT 1 FROM h)) FROM (SELECT tenant_id, user_id, id, true AS browser FROM b "
        "UNION ALL SELECT tenant_id, user_id, id, false FROM h WHERE NOT EXISTS (SELECT 1 FROM b)) x) "
        "SELECT r.seq, r.tenant_id, r.value, r.exp, NULL::bigint, ok.v FROM ok LEFT JOIN r ON true" },
    /* After the logout, on a snapshot of its own: a session made by a code redemption that held
     * the browser session while the logout waited (STORE_CODE_REDEEM) is ended too. The
     * cookie's secret proves the browser session is the caller's. */
    [STORE_SSO_SWEEP] = {
        "sso_sweep", false,
        "WITH b AS (SELECT s.id, s.tenant_id, s.user_id FROM sessions s JOIN tenants t ON t.id = s.tenant_id "
        "WHERE t.slug = $1 AND s.id = $2 AND s.client_id IS NULL AND s.refresh_sha256 = decode($3, 'hex') "
        "AND s.revoked_at IS NOT NULL), "
        STORE_SSO_APPS_END("b")
        STORE_SID_REVOCATIONS("k", "$4")
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT b.tenant_id, 'user', b.user_id::text, 'logout', 'session', "
        "b.id::text, $5::inet, $6, jsonb_build_object('browser', true, 'sessions', (SELECT count(*) FROM k), "
        "'sweep', true) FROM b WHERE EXISTS (SELECT 1 FROM k)) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* Where a client may send the browser after a logout (OIDC RP-Initiated Logout §2): the
     * registration, a moment stale at worst, as the authorization endpoint's. */
    [STORE_LOGOUT_CLIENT] = {
        "logout_client", true,
        "SELECT $3::text = ANY (c.post_logout_redirect_uris) FROM tenants t JOIN clients c "
        "ON c.tenant_id = t.id WHERE t.slug = $1 AND t.deleted_at IS NULL AND c.client_id = $2 "
        "AND c.deleted_at IS NULL" },
    /* Code redemption reads the primary (SECURITY F03): a code consumed a moment ago is seen. */
    [STORE_CODE_READ] = {
        "code_read", false,
        "SELECT a.id, a.client_id, a.code_challenge, a.redirect_uri, a.redirect_given, "
        "a.consumed_at IS NOT NULL, a.code_expires_at <= now(), a.tenant_id, a.user_id, a.scope, "
        "a.nonce, extract(epoch FROM a.auth_time)::bigint, c.token_lifetime_s, "
        "'authorization_code' = ANY(c.grants), 'refresh_token' = ANY(c.grants) "
        "FROM authorizations a JOIN tenants t ON t.id = a.tenant_id "
        "LEFT JOIN clients c ON c.tenant_id = a.tenant_id AND c.client_id = a.client_id "
        "AND c.deleted_at IS NULL "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL AND a.code_sha256 = decode($2, 'hex')" },
    /* RFC 6749 §4.1.2: a code used twice revokes what was issued from it: its session and, by
     * a 'sid' revocation outliving the longest token the client could hold, every access
     * token of it; the revocation is written even when the session had already ended. */
    [STORE_CODE_REUSE] = {
        "code_reuse", false,
        "WITH a AS (SELECT id, session_id, user_id FROM authorizations WHERE tenant_id = $1 AND id = $2 "
        "AND client_id = $3 AND consumed_at IS NOT NULL AND session_id IS NOT NULL), "
        "s AS (UPDATE sessions SET updated_at = now(), revoked_at = now() FROM a WHERE sessions.tenant_id = $1 "
        "AND sessions.id = a.session_id AND sessions.revoked_at IS NULL RETURNING sessions.id), "
        "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT $1, 'sid', "
        "a.session_id::text, now() + make_interval(secs => coalesce((SELECT c.token_lifetime_s "
        "FROM clients c WHERE c.tenant_id = $1 AND c.client_id = $3), 0) + $4::int) FROM a "
        "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "
        "l AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT $1, 'client', $3, 'code_reuse_detected', 'session', "
        "a.session_id::text, $5::inet, $6, jsonb_build_object('user_id', a.user_id, "
        "'authorization_id', a.id) FROM a) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* The code consumed and its session made in one statement: under the row lock a second
     * redemption (this instance or another) finds it consumed, so exactly one wins (O12). A
     * code whose user was disabled or whose browser session ended is not consumed (then no
     * reuse is seen). The browser session is share-locked (k): a logout that comes first makes
     * this wait and see it ended; one that comes after waits for this commit, and its sweep
     * (STORE_SSO_SWEEP) sees the session made here. */
    [STORE_CODE_REDEEM] = {
        "code_redeem", false,
        "WITH k AS (SELECT b.id FROM authorizations a JOIN sessions b ON b.tenant_id = a.tenant_id "
        "AND b.id = a.sso_session_id WHERE a.tenant_id = $1 AND a.id = $2 AND b.revoked_at IS NULL "
        "FOR SHARE OF b), "
        "a AS (UPDATE authorizations a SET consumed_at = now(), session_id = $4 FROM users u "
        "WHERE a.tenant_id = $1 AND a.id = $2 AND a.client_id = $3 AND a.consumed_at IS NULL "
        "AND a.code_expires_at > now() AND u.tenant_id = a.tenant_id AND u.id = a.user_id "
        "AND NOT u.disabled AND u.deleted_at IS NULL "
        "AND (a.sso_session_id IS NULL OR a.sso_session_id IN (SELECT id FROM k)) "
        "RETURNING a.tenant_id, a.user_id, a.sso_session_id), "
        "s AS (INSERT INTO sessions (id, tenant_id, user_id, client_id, refresh_sha256, amr, ip, "
        "user_agent, expires_at, absolute_expires_at, sso_session_id) SELECT $4, a.tenant_id, a.user_id, $3, "
        "decode($5, 'hex'), '{pwd}', $6::inet, $7, now() + make_interval(secs => $8::int), "
        "now() + make_interval(secs => $9::int), a.sso_session_id FROM a RETURNING id) "
        "SELECT id FROM s" },
    [STORE_USERINFO] = {
        "userinfo", true,
        "SELECT json_strip_nulls(json_build_object('sub', id, "
        "'preferred_username', CASE WHEN 'profile' = ANY(string_to_array($3, ' ')) THEN username END, "
        "'updated_at', CASE WHEN 'profile' = ANY(string_to_array($3, ' ')) "
        "THEN extract(epoch FROM updated_at)::bigint END, "
        "'email', CASE WHEN 'email' = ANY(string_to_array($3, ' ')) THEN email END, "
        "'email_verified', CASE WHEN 'email' = ANY(string_to_array($3, ' ')) AND email IS NOT NULL "
        "THEN email_verified END))::text "
        "FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL AND NOT disabled" },
    /* Only a first-party client's token mints (a third party's delegated token must not turn
     * into a credential that outlives the grant); the cap is the trigger's of 0008, whose
     * refusal is a unique violation. */
    [STORE_APIKEY_CREATE] = {
        "apikey_create", false,
        "WITH u AS (SELECT tenant_id, id FROM users WHERE tenant_id = $1 AND id = $2 AND NOT disabled "
        "AND deleted_at IS NULL), "
        "c AS (SELECT 1 FROM clients WHERE tenant_id = $1 AND client_id = $3 AND first_party "
        "AND deleted_at IS NULL), "
        "k AS (INSERT INTO api_keys (tenant_id, user_id, client_id, name, prefix, sha256, scopes, expires_at) "
        "SELECT u.tenant_id, u.id, $3, $4, $5, decode($6, 'hex'), string_to_array($7, ' '), "
        "now() + make_interval(secs => $8::int) FROM u WHERE EXISTS (SELECT 1 FROM c) "
        "RETURNING id, tenant_id, prefix, created_at, expires_at), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT k.tenant_id, 'user', $2::text, 'api_key_created', 'api_key', "
        "k.id::text, $9::inet, $10, jsonb_build_object('prefix', k.prefix, 'client_id', $3::text) FROM k) "
        "SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM c), k.id, "
        "floor(extract(epoch FROM k.created_at))::bigint, floor(extract(epoch FROM k.expires_at))::bigint "
        "FROM (SELECT 1) one LEFT JOIN k ON true" },
    /* No row for a user deleted or of another tenant; a disabled user's keys are listed (their
     * admin may want to revoke them before enabling the user again). */
    [STORE_APIKEYS_OF_USER] = {
        "apikeys_of_user", true,
        "SELECT (SELECT coalesce(json_agg(json_build_object('id', k.id, 'prefix', k.prefix, "
        "'name', k.name, 'scope', array_to_string(k.scopes, ' '), 'client_id', k.client_id, "
        "'created_at', floor(extract(epoch FROM k.created_at))::bigint, "
        "'expires_at', floor(extract(epoch FROM k.expires_at))::bigint, "
        "'last_used_at', floor(extract(epoch FROM k.last_used_at))::bigint) "
        "ORDER BY k.created_at DESC), '[]'::json)::text "
        "FROM (SELECT * FROM api_keys WHERE tenant_id = u.tenant_id AND user_id = u.id "
        "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
        "ORDER BY created_at DESC LIMIT 100) k) " /* 100: the cap of 0008's trigger */
        "FROM users u WHERE u.tenant_id = $1 AND u.id = $2 AND u.deleted_at IS NULL" },
    /* Only a live key of the named user, and the 'key' revocation only when that update took;
     * the revocation outlives every shard's cached answer (auth/apikey.c) by far. */
    [STORE_APIKEY_REVOKE] = {
        "apikey_revoke", false,
        "WITH k AS (UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 "
        "AND user_id = $2 AND id = $3 AND revoked_at IS NULL RETURNING id, tenant_id, prefix), "
        "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT k.tenant_id, 'key', "
        "k.id::text, now() + make_interval(secs => $4::int) FROM k "
        "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "
        "a AS (INSERT INTO audit_log (tenant_id, actor_kind, actor_id, action, target_kind, target_id, "
        "ip, request_id, details) SELECT k.tenant_id, $7, $8, 'api_key_revoked', 'api_key', "
        "k.id::text, $5::inet, $6, jsonb_build_object('prefix', k.prefix, 'user_id', $2::text) FROM k) "
        "SELECT seq, tenant_id, value, exp FROM r" },
    /* DESIGN §1's coalesced last-use stamps (auth/apikey_uses.c): one statement for a shard's
     * batch, a key named twice taking its latest; a stamp never moves back. */
    [STORE_APIKEY_USES] = {
        "apikey_uses", false,
        "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, to_timestamp(u.at)) "
        "FROM (SELECT t, k, max(a) AS at FROM json_to_recordset($1::json) AS x(t uuid, k uuid, a bigint) "
        "GROUP BY t, k) u WHERE k.tenant_id = u.t AND k.id = u.k AND k.revoked_at IS NULL" },
    /* From the primary: a key revoked or a user disabled a moment ago must not read as live
     * (SECURITY F03, K04). By the digest of the whole key, never by its prefix (K01). Its
     * scope is what its client still holds of it: narrowing a client narrows its keys. */
    [STORE_APIKEY_LOOKUP] = {
        "apikey_lookup", false,
        "SELECT k.id, k.user_id, k.client_id, array_to_string(ARRAY(SELECT s FROM unnest(k.scopes) "
        "WITH ORDINALITY AS x (s, i) WHERE s = ANY (c.scopes) ORDER BY i), ' '), "
        "floor(extract(epoch FROM k.created_at))::bigint, floor(extract(epoch FROM k.expires_at))::bigint, t.id "
        "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
        "JOIN users u ON u.tenant_id = k.tenant_id AND u.id = k.user_id "
        "JOIN clients c ON c.tenant_id = k.tenant_id AND c.client_id = k.client_id "
        "WHERE t.slug = $1 AND t.deleted_at IS NULL AND k.sha256 = decode($2, 'hex') "
        "AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) "
        "AND NOT u.disabled AND u.deleted_at IS NULL AND c.deleted_at IS NULL" },
};

struct store_pending {
    uint32_t kind;
    uint64_t value;
};

struct store_shard {
    struct store *store;
    struct loop *loop;
    struct pg_client *primary[CONFIG_PG_CONNECTIONS_MAX]; /* cfg->pg_connections of them */
    struct pg_client *replica;
    struct redis_client *redis;
    uint64_t events;
};

struct store {
    const struct config *cfg;
    unsigned shards;
    struct store_shard shard[CONFIG_SHARDS_MAX];
    struct redis_client *subscriber; /* on shard 0 */
    store_event_fn on_event;
    void *on_event_arg;
    /* Shard 0's fan-out backlog, per destination, while that ring is full. */
    struct store_pending *pending[CONFIG_SHARDS_MAX];
    unsigned pending_count[CONFIG_SHARDS_MAX];
    uint64_t events_dropped;
    struct loop_timer resend;
};

/* ---- Connections ------------------------------------------------------------------------- */

static void store_on_channel(void *arg, struct slice channel, struct slice message);

static int store_create_redis(struct store *store, struct loop *const *loops)
{
    for (unsigned i = 0; i < store->shards; i++) {
        store->shard[i].redis = redis_client_create(loops[i], store->cfg->redis_url);
        if (store->shard[i].redis == NULL)
            return -TE_INVAL;
    }
    store->subscriber = redis_client_create(loops[0], store->cfg->redis_url);
    if (store->subscriber == NULL ||
        redis_client_subscribe(store->subscriber, STORE_EVENTS_CHANNEL, store_on_channel, store) != 0)
        return -TE_INVAL;
    for (unsigned i = 1; i < store->shards; i++) {
        store->pending[i] = calloc(STORE_EVENTS_PENDING_MAX, sizeof(struct store_pending));
        if (store->pending[i] == NULL)
            return -TE_NOMEM;
    }
    return 0;
}

struct store *store_create(const struct config *cfg, struct loop *const *loops, unsigned shards)
{
    struct store *store = calloc(1, sizeof(*store));
    if (store == NULL)
        return NULL;
    store->cfg = cfg;
    store->shards = shards;
    for (unsigned i = 0; i < shards; i++) {
        store->shard[i].store = store;
        store->shard[i].loop = loops[i];
    }
    if (cfg->redis_url[0] && store_create_redis(store, loops) != 0) {
        store_destroy(store);
        return NULL;
    }
    return store;
}

void store_destroy(struct store *store)
{
    if (store == NULL)
        return;
    for (unsigned i = 0; i < store->shards; i++) {
        for (unsigned c = 0; c < CONFIG_PG_CONNECTIONS_MAX; c++)
            pg_client_destroy(store->shard[i].primary[c]);
        pg_client_destroy(store->shard[i].replica);
        redis_client_destroy(store->shard[i].redis);
        free(store->pending[i]);
    }
    redis_client_destroy(store->subscriber);
    free(store);
}

/* Creates a Postgres client and registers the statements it may run. */
static struct pg_client *store_pg_open(struct store *store, struct loop *loop, const char *url,
                                       bool replica)
{
    struct pg_client *client = pg_client_create_with(loop, url, store->cfg->pg_query_timeout_ms);
    if (client == NULL)
        return NULL;
    for (size_t i = 0; i < STORE_STMT_COUNT; i++) {
        if ((!replica || store_stmts[i].read_only) &&
            pg_prepare(client, store_stmts[i].name, store_stmts[i].sql) != 0)
            log_msg(LOG_ERROR, "cannot register a statement", "statement", store_stmts[i].name, NULL);
    }
    return client;
}

static void store_resend(struct loop_timer *timer);

void store_shard_start(struct store *store, struct loop *loop)
{
    struct store_shard *shard = &store->shard[loop_index(loop)];
    for (unsigned c = 0; store->cfg->pg_url[0] && c < store->cfg->pg_connections; c++) {
        if ((shard->primary[c] = store_pg_open(store, loop, store->cfg->pg_url, false)) == NULL)
            log_msg(LOG_ERROR, "out of memory for a Postgres client", NULL);
    }
    if (store->cfg->pg_replica_url[0] &&
        (shard->replica = store_pg_open(store, loop, store->cfg->pg_replica_url, true)) == NULL)
        log_msg(LOG_ERROR, "out of memory for the replica client", NULL);
    if (shard->redis)
        redis_client_start(shard->redis);
    if (loop_index(loop) == 0 && store->subscriber) {
        store->resend.on_expire = store_resend;
        redis_client_start(store->subscriber);
    }
}

void store_shard_stop(struct store *store, struct loop *loop)
{
    struct store_shard *shard = &store->shard[loop_index(loop)];
    if (shard->redis)
        redis_client_stop(shard->redis);
    if (loop_index(loop) == 0 && store->subscriber) {
        loop_timer_stop(loop, &store->resend);
        redis_client_stop(store->subscriber);
    }
}

struct store_shard *store_shard(struct store *store, unsigned index)
{
    assert(index < store->shards);
    return &store->shard[index];
}

static enum store_state store_pg_state(const struct pg_client *client)
{
    return client == NULL ? STORE_ABSENT : pg_client_ready(client) ? STORE_UP : STORE_DOWN;
}

static enum store_state store_redis_state(const struct redis_client *client)
{
    return client == NULL ? STORE_ABSENT : redis_client_ready(client) ? STORE_UP : STORE_DOWN;
}

/* Whether a is the better connection to send on: one whose answers have stopped for
 * STORE_PG_STALL_MS only when b's have too (a statement waiting on a row lock, say a rotation
 * raced by another instance, holds up every query pipelined behind it), then the fewer in flight. */
static bool store_primary_better(const struct pg_client *a, const struct pg_client *b)
{
    bool a_stalled = pg_client_stalled_ms(a) >= STORE_PG_STALL_MS;
    bool b_stalled = pg_client_stalled_ms(b) >= STORE_PG_STALL_MS;
    if (a_stalled != b_stalled)
        return !a_stalled;
    return pg_client_in_flight(a) < pg_client_in_flight(b);
}

/* The ready primary connection to send on, or NULL. */
static struct pg_client *store_primary(const struct store_shard *shard)
{
    struct pg_client *best = NULL;
    for (unsigned c = 0; c < CONFIG_PG_CONNECTIONS_MAX && shard->primary[c] != NULL; c++) {
        struct pg_client *client = shard->primary[c];
        if (pg_client_ready(client) && (best == NULL || store_primary_better(client, best)))
            best = client;
    }
    return best;
}

void store_shard_health(const struct store_shard *shard, struct store_health *out)
{
    out->primary = STORE_ABSENT;
    if (shard->store->cfg->pg_url[0]) /* up while one connection is (the others reconnect) */
        out->primary = store_primary(shard) != NULL ? STORE_UP : STORE_DOWN;
    out->replica = store_pg_state(shard->replica);
    out->redis = store_redis_state(shard->redis);
    out->subscriber = store_redis_state(shard->store->subscriber);
}

/* The connection a statement goes to: a read to a ready replica, the rest to the primary. */
static struct pg_client *store_client_for(const struct store_shard *shard, enum store_stmt stmt)
{
    assert(stmt < STORE_STMT_COUNT);
    if (store_stmts[stmt].read_only && shard->replica != NULL && pg_client_ready(shard->replica))
        return shard->replica;
    return store_primary(shard);
}

bool store_accepts(const struct store_shard *shard, enum store_stmt stmt)
{
    const struct pg_client *client = store_client_for(shard, stmt);
    return client != NULL && pg_client_accepts(client);
}

enum pg_outcome store_query(struct store_shard *shard, enum store_stmt stmt, struct pg_query *q)
{
    const struct store_stmt_def *def = &store_stmts[stmt];
    struct pg_client *client = store_client_for(shard, stmt);
    if (client == NULL)
        return PG_UNAVAILABLE;
    q->sql = NULL;
    q->prepared = def->name;
    if (q->budget_ms == 0)
        q->budget_ms = shard->store->cfg->pg_query_timeout_ms;
    return pg_query(client, q);
}

struct redis_client *store_redis(struct store_shard *shard)
{
    return shard->redis;
}

/* ---- Metrics ----------------------------------------------------------------------------- */

static uint64_t store_load(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

static void store_render_pg(struct store *store, struct buf *out)
{
    static const struct {
        const char *name;
        const char *help;
        size_t offset;
    } families[] = {
        { "tessera_pg_queries_total", "Postgres queries answered (any outcome).", offsetof(struct pg_stats, completed) },
        { "tessera_pg_refused_total", "Postgres queries refused at once (down or queue full): 503.",
          offsetof(struct pg_stats, refused) },
        { "tessera_pg_timeouts_total", "Postgres queries past their budget: 503.", offsetof(struct pg_stats, timeouts) },
        { "tessera_pg_retries_total", "Serialization failures retried.", offsetof(struct pg_stats, retries) },
        { "tessera_pg_connects_total", "Postgres connections made.", offsetof(struct pg_stats, connects) },
        { "tessera_pg_losses_total", "Postgres connections lost or failed.", offsetof(struct pg_stats, losses) },
    };
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", families[f].name, families[f].help, families[f].name);
        for (unsigned s = 0; s < store->shards; s++) {
            const struct store_shard *shard = &store->shard[s];
            for (unsigned c = 0; c <= CONFIG_PG_CONNECTIONS_MAX; c++) {
                const struct pg_client *client = c < CONFIG_PG_CONNECTIONS_MAX ? shard->primary[c] : shard->replica;
                if (client == NULL)
                    continue;
                const char *base = (const char *)pg_client_stats(client);
                buf_printf(out, "%s{shard=\"%u\",server=\"%s\",conn=\"%u\"} %llu\n", families[f].name, s,
                           c < CONFIG_PG_CONNECTIONS_MAX ? "primary" : "replica",
                           c < CONFIG_PG_CONNECTIONS_MAX ? c : 0,
                           (unsigned long long)store_load((const uint64_t *)(base + families[f].offset)));
            }
        }
    }
}

void store_render_metrics(struct store *store, struct buf *out)
{
    store_render_pg(store, out);
    if (store->subscriber == NULL)
        return;
    buf_append_cstr(out, "# HELP tessera_events_total Instance-wide events delivered to the shard.\n"
                         "# TYPE tessera_events_total counter\n");
    for (unsigned s = 0; s < store->shards; s++)
        buf_printf(out, "tessera_events_total{shard=\"%u\"} %llu\n", s,
                   (unsigned long long)store_shard_events(&store->shard[s]));
    buf_printf(out, "# HELP tessera_events_dropped_total Events the fan-out backlog had no room for.\n"
                    "# TYPE tessera_events_dropped_total counter\ntessera_events_dropped_total %llu\n",
               (unsigned long long)store_load(&store->events_dropped));
}

/* ---- Events ------------------------------------------------------------------------------ */

void store_on_event(struct store *store, store_event_fn fn, void *arg)
{
    store->on_event = fn;
    store->on_event_arg = arg;
}

uint64_t store_shard_events(const struct store_shard *shard)
{
    return __atomic_load_n(&shard->events, __ATOMIC_RELAXED);
}

static void store_deliver(struct store *store, struct loop *loop, uint32_t kind, uint64_t value)
{
    struct store_shard *shard = &store->shard[loop_index(loop)];
    __atomic_store_n(&shard->events, shard->events + 1, __ATOMIC_RELAXED);
    if (store->on_event)
        store->on_event(store->on_event_arg, loop, kind, value);
}

bool store_handle_message(struct store *store, struct loop *loop, const struct ring_msg *msg)
{
    if (msg->kind != STORE_MSG_EVENT)
        return false;
    store_deliver(store, loop, (uint32_t)msg->a, msg->b);
    return true;
}

/* "<kind> <value>", both decimal: what a publisher writes (e.g. redis-cli). */
static int store_event_parse(struct slice text, uint32_t *kind, uint64_t *value)
{
    char buf[STORE_EVENT_TEXT_MAX + 1];
    if (text.len == 0 || text.len > STORE_EVENT_TEXT_MAX)
        return -TE_INVAL;
    memcpy(buf, text.ptr, text.len);
    buf[text.len] = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long long k = strtoull(buf, &end, 10);
    if (errno || end == buf || *end != ' ' || k > UINT32_MAX)
        return -TE_INVAL;
    const char *v = end + 1;
    unsigned long long val = strtoull(v, &end, 10);
    if (errno || end == v || *end != '\0' || v[0] == '-' || buf[0] == '-')
        return -TE_INVAL;
    *kind = (uint32_t)k;
    *value = val;
    return 0;
}

/* Shard 0 to shard `to`: the ring, or the backlog when the ring is full (never lost
 * while the backlog has room; counted as dropped past it). */
static void store_fan_to(struct store *store, unsigned to, uint32_t kind, uint64_t value)
{
    struct loop *loop0 = store->shard[0].loop;
    if (store->pending_count[to] == 0) {
        struct ring_msg msg = { .kind = STORE_MSG_EVENT, .a = kind, .b = value };
        if (loop_send_message(loop0, to, &msg) == 0)
            return;
    }
    if (store->pending_count[to] == STORE_EVENTS_PENDING_MAX) {
        store->events_dropped++;
        log_msg(LOG_WARN, "event fan-out backlog full: event dropped", NULL);
        return;
    }
    store->pending[to][store->pending_count[to]++] = (struct store_pending){ kind, value };
    if (!loop_timer_active(&store->resend))
        loop_timer_start(loop0, &store->resend, STORE_RESEND_MS);
}

static void store_resend(struct loop_timer *timer)
{
    struct store *store = (struct store *)((char *)timer - offsetof(struct store, resend));
    struct loop *loop0 = store->shard[0].loop;
    bool left = false;
    for (unsigned to = 1; to < store->shards; to++) {
        unsigned sent = 0;
        while (sent < store->pending_count[to]) {
            struct store_pending *p = &store->pending[to][sent];
            struct ring_msg msg = { .kind = STORE_MSG_EVENT, .a = p->kind, .b = p->value };
            if (loop_send_message(loop0, to, &msg) != 0)
                break;
            sent++;
        }
        memmove(store->pending[to], store->pending[to] + sent,
                (store->pending_count[to] - sent) * sizeof(struct store_pending));
        store->pending_count[to] -= sent;
        left |= store->pending_count[to] > 0;
    }
    if (left)
        loop_timer_start(loop0, &store->resend, STORE_RESEND_MS);
}

/* On shard 0: one message on the channel becomes one event on every shard. */
static void store_on_channel(void *arg, struct slice channel, struct slice message)
{
    (void)channel;
    struct store *store = arg;
    uint32_t kind = 0;
    uint64_t value = 0;
    if (store_event_parse(message, &kind, &value) != 0) {
        log_msg(LOG_WARN, "malformed event on the events channel: ignored", NULL);
        return;
    }
    for (unsigned to = 1; to < store->shards; to++)
        store_fan_to(store, to, kind, value);
    store_deliver(store, store->shard[0].loop, kind, value);
}
