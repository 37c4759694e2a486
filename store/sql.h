/* store/sql.h: SQL fragments that the serving statements (store/store.c) and the admin CLI
 * (store/admin.c) share, so that both end sessions and revoke tokens the same way. Inside
 * store/ only. */
#ifndef TESSERA_STORE_SQL_H
#define TESSERA_STORE_SQL_H

/* How long a revocation outlives the longest access token its client could hold, in seconds,
 * as SQL text: a lifetime raised since a token was issued, and clock leeway, stay covered
 * (auth/auth_int.h AUTH_SESSION_REVOKE_SLACK_S passes the same number as a parameter). */
#define STORE_REVOKE_SLACK_SQL "3600"

/* A 'sid' revocation for every session in CTE s (id, tenant_id, client_id), outliving the
 * longest access token its client could hold by slack seconds (SQL text: a parameter or a
 * number): CTE r, its rows as logout's (auth_session_spread). */
#define STORE_SID_REVOCATIONS(slack)                                                                       \
    "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) SELECT s.tenant_id, 'sid', "      \
    "s.id::text, now() + make_interval(secs => coalesce((SELECT c.token_lifetime_s FROM clients c "       \
    "WHERE c.tenant_id = s.tenant_id AND c.client_id = s.client_id), 0) + " slack "::int) FROM s "        \
    "RETURNING seq, tenant_id, value, extract(epoch FROM expires_at)::bigint AS exp), "

/* Every session of the users in CTE u ends with its 'sid' revocation: CTEs s and r. */
#define STORE_USER_SESSIONS_END(slack)                                                                     \
    "s AS (UPDATE sessions SET revoked_at = now() FROM u WHERE sessions.tenant_id = u.tenant_id "         \
    "AND sessions.user_id = u.id AND sessions.revoked_at IS NULL "                                        \
    "RETURNING sessions.id, sessions.tenant_id, sessions.client_id), "                                    \
    STORE_SID_REVOCATIONS(slack)

#endif
