/* store/sql.h: SQL fragments that the serving statements (store/store.c) and the admin CLI
 * (store/admin.c) share, so that both end sessions and revoke tokens the same way. Inside
 * store/ only. */
#ifndef TESSERA_STORE_SQL_H
#define TESSERA_STORE_SQL_H

/* How long a revocation outlives the longest access token its client could hold, in seconds,
 * as SQL text: a lifetime raised since a token was issued, and clock leeway, stay covered
 * (auth/auth_int.h AUTH_SESSION_REVOKE_SLACK_S passes the same number as a parameter). */
#define STORE_REVOKE_SLACK_SQL "3600"

/* A 'sid' revocation for every session in CTE `sessions` (id, tenant_id, client_id),
 * outliving the longest access token its client could hold by slack seconds (SQL text: a
 * parameter or a number): CTE r, its rows as logout's (auth_session_spread). */
#define STORE_SID_REVOCATIONS(sessions, slack)                                                             \
    "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT x.tenant_id, 'sid', "      \
    "x.id::text, now() + make_interval(secs => coalesce((SELECT c.token_lifetime_s FROM clients c "       \
    "WHERE c.tenant_id = x.tenant_id AND c.client_id = x.client_id), 0) + " slack "::int) "               \
    "FROM " sessions " x RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "

/* Every live session made from a code that a browser session in CTE `browser` (id,
 * tenant_id) answered (sessions.sso_session_id) ends: CTE k (id, tenant_id, client_id), for
 * STORE_SID_REVOCATIONS. The browser's logout and its sweep. */
#define STORE_SSO_APPS_END(browser)                                                                        \
    "k AS (UPDATE sessions s SET revoked_at = now() FROM " browser " x WHERE s.tenant_id = x.tenant_id "   \
    "AND s.sso_session_id = x.id AND s.revoked_at IS NULL RETURNING s.id, s.tenant_id, s.client_id), "

/* A user's not-before trails the moment of the 'sub' revocation by this margin (seconds, SQL
 * text), so that a token issued just after it by a server whose clock runs behind Postgres'
 * (up to the JWT leeway) is not refused. The tokens the margin leaves alive are those of
 * sessions active within twice the margin: these get 'sid' revocations of their own. */
#define STORE_NOT_BEFORE_MARGIN_SQL "60"
/* The not-before of a 'sub' revocation created at `created` (Unix s, SQL bigint). */
#define STORE_NOT_BEFORE_OF(created)                                                                      \
    "(floor(extract(epoch FROM " created "))::bigint - " STORE_NOT_BEFORE_MARGIN_SQL ")"

/* Every session of the users in CTE `users` (tenant_id, id) ends: CTE s. Each user gets a
 * 'sub' revocation (CTE nb: refuses every token issued before its not-before, outliving the
 * longest token any client of the tenant could hold by slack seconds) and each session active
 * within twice the margin a 'sid' revocation (CTE r): one row per user, not per session. */
#define STORE_USER_SESSIONS_END(users, slack)                                                              \
    "s AS (UPDATE sessions SET revoked_at = now() FROM " users " WHERE sessions.tenant_id = "             \
    users ".tenant_id AND sessions.user_id = " users ".id AND sessions.revoked_at IS NULL "               \
    "RETURNING sessions.id, sessions.tenant_id, sessions.client_id, sessions.last_seen_at), "             \
    "recent AS (SELECT * FROM s WHERE last_seen_at > now() - make_interval(secs => 2 * "                  \
    STORE_NOT_BEFORE_MARGIN_SQL ")), "                                                                   \
    STORE_SID_REVOCATIONS("recent", slack)                                                                \
    "nb AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT x.tenant_id, 'sub', "     \
    "x.id::text, now() + make_interval(secs => coalesce((SELECT max(c.token_lifetime_s) FROM clients c "  \
    "WHERE c.tenant_id = x.tenant_id), 0) + " slack "::int) FROM " users " x "                           \
    "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp, "                   \
    STORE_NOT_BEFORE_OF("created_at") " AS nb), "

/* STORE_USER_SESSIONS_END's revocations as auth_session_spread reads them (a fifth column:
 * the not-before of a 'sub' row, NULL for a 'sid' one); one row at least per user. */
#define STORE_USER_SESSIONS_END_ROWS                                                                       \
    "SELECT seq, tenant_id, value, exp, NULL::bigint FROM r UNION ALL "                                   \
    "SELECT seq, tenant_id, value, exp, nb FROM nb"

#endif
