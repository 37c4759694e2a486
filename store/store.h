/* store/store.h: what a shard holds of the stores, and the typed statements features run
 * (DESIGN §1: each shard owns its Postgres connections in pipeline mode and its Redis
 * connection; DESIGN §2: store/ owns the typed queries each feature needs).
 *
 * Per shard: TESSERA_PG_CONNECTIONS Postgres clients on the primary (each pipelined; a
 * query takes the ready one with the fewest in flight, so Postgres runs a shard's statements
 * on more than one backend), one on the read replica when
 * TESSERA_PG_REPLICA_URL is set, and a Redis client when TESSERA_REDIS_URL is set.
 * Per instance: one Redis subscriber (on shard 0) whose events are handed to every shard
 * over the mailbox rings, so every shard sees every event once, on its own thread.
 *
 * Statements are prepared on every connection at (re)connect. Each is marked read-only
 * or not: a read-only one goes to the replica while the replica is connected, anything
 * else (and every read that must not see a stale replica: revocation catch-up, rotation,
 * code redemption, SECURITY F03) to the primary. */
#ifndef TESSERA_STORE_STORE_H
#define TESSERA_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/loop.h"
#include "core/ring.h"
#include "store/pg.h"
#include "store/redis.h"

#define STORE_EVENTS_CHANNEL "tessera:events" /* the instance-wide fan-out channel */
#define STORE_EVENT_TEXT_MAX 96               /* "<kind> <value>" as published */
#define STORE_MSG_EVENT 0x53540001u           /* ring_msg.kind of a fanned-out event */
#define STORE_RESEND_MS 100                   /* retry of a fan-out a full ring refused */
#define STORE_EVENT_REVOKED 1u                /* event: a revocation with this seq (the value)
                                               * committed; published by the servers and by
                                               * the admin CLI (store/admin.c) */

/* The statements, by what they do. Parameters and columns: see store.c. */
enum store_stmt {
    STORE_TENANT_BY_SLUG, /* $1 slug → id, name, settings, registration_open */
    STORE_JWKS_BY_SLUG,   /* $1 slug → tenant id, the JWKS document of its published keys */
    STORE_USER_REGISTER,  /* $1 tenant id, $2 username, $3 email, $4 hash, $5 ip, $6 request id
                           * → user id, created_at (and its audit row, in the same statement);
                           * sign-up without an address (with one: STORE_USER_SIGNUP) */
    STORE_CLIENT_BY_ID,   /* $1 client_id, $2 tenant slug → client row id, tenant id, secret
                           * SHA-256 (hex), grants, scopes (space-separated), token lifetime,
                           * can_introspect; no row when the client is not the tenant's (T02) */
    STORE_TENANT_KEYS,    /* $1 tenant slug → per published key: tenant id, kid, alg, state,
                           * sealed private part (hex), master key id, activated_at and
                           * not_after (Unix s), the tenant's settings.rate_limit object (JSON);
                           * one row of NULL keys for a tenant without any */
    STORE_REVOKE,         /* $1 tenant id, $2 kind, $3 value, $4 expires_at (Unix s) → seq */
    STORE_REVOKED_SINCE,  /* $1 seq → seq, tenant id, kind, value, expires_at (Unix s) and, for
                           * a 'sub' row, its not-before (Unix s; else NULL) of the unexpired
                           * revocations after it, in seq order, at most 1,000 */
    STORE_LOGIN_LOOKUP,   /* $1 tenant slug, $2 client_id, $3 username or NULL, $4 email or NULL
                           * → tenant id, client first_party (f when no such client), client
                           * scopes, token lifetime, user id, password hash, locked now (t/f),
                           * client secret SHA-256 (hex, NULL: public), password grant (t/f);
                           * one row per matching enabled user (none: NULL user columns) */
    STORE_LOGIN_FAILED,   /* $1 tenant id, $2 user id or NULL, $3 ip, $4 request id, $5 reason,
                           * $6 lockout threshold, $7 first wait s, $8 longest wait s, $9 reset
                           * window s → failures counted (0: none, e.g. already locked); the
                           * count, the wait and the audit row (login_failed / locked_out) */
    STORE_LOGIN_SUCCEEDED, /* $1 tenant id, $2 user id, $3 session id, $4 client_id, $5 refresh
                            * SHA-256 (hex), $6 ip, $7 user agent, $8 idle s, $9 absolute s,
                            * $10 new hash or NULL, $11 the verified hash, $12 request id →
                            * session id, or no row when the user changed meanwhile */
    STORE_SESSION_ROTATE, /* $1 tenant slug, $2 session id, $3 presented SHA-256 (hex), $4 new
                           * SHA-256 (hex), $5 calling client_id, $6 public caller (t/f), $7 idle
                           * s → tenant id, user id, client scopes, token lifetime, expires_at;
                           * no row unless exactly this live token of this client */
    STORE_SESSION_REUSE,  /* $1 tenant slug, $2 session id, $3 presented SHA-256 (hex), $4
                           * client_id, $5 request id, $6 ip, $7 shortest revocation life s →
                           * seq, tenant id, session id, revocation expiry (Unix s) when the
                           * presented token was the previous one: the session is revoked */
    STORE_SESSION_LOGOUT, /* $1 tenant id, $2 session id, $3 user id, $4 client_id, $5 slack s,
                           * $6 ip, $7 request id → seq, tenant id, session id, expiry (Unix s)
                           * of the session's 'sid' revocation (always one row) */
    STORE_SESSION_LOGOUT_ALL, /* $1 tenant id, $2 user id, $3 slack s, $4 ip, $5 request id →
                               * every session of the user ended; STORE_USER_SESSIONS_END's rows
                               * (store/sql.h): the user's 'sub' not-before, a 'sid' row per
                               * recently active session */
    STORE_SESSION_REVOKE, /* $1 tenant slug, $2 session id, $3 refresh SHA-256 (hex), $4 client_id,
                           * $5 slack s, $6 ip, $7 request id → a row as above when the token is
                           * the session's current one and the client its own (RFC 7009) */
    STORE_SESSIONS_OF_USER, /* $1 tenant id, $2 user id, $3 the caller's session id → one row:
                             * the user's live sessions as a JSON array, newest first */
    STORE_SESSION_REVOKE_OWN, /* $1 tenant id, $2 user id, $3 session id, $4 slack s, $5 ip,
                               * $6 request id → a row as logout's when it was the user's and live */
    STORE_USER_ME,        /* $1 tenant id, $2 user id → one row: the live user's profile as JSON */
    STORE_USER_PATCH,     /* $1 tenant id, $2 user id, $3 username or NULL, $4 email or NULL ('' clears
                           * it), $5 ip, $6 request id → the profile as JSON (a taken username: 409) */
    STORE_RECOVERY_MAIL,  /* $1 tenant slug, $2 email, $3 purpose ('password_reset' or
                           * 'email_verify'), $4 token SHA-256 (hex), $5 lifetime s, $6 subject,
                           * $7 body, $8 ip, $9 request id → one row: mails queued (0 or 1); for
                           * the one live, enabled user with that address (verification: still
                           * unverified) the earlier tokens of the purpose end, the token, its
                           * outbox row and the audit row are inserted (auth/recovery.c) */
    STORE_RECOVERY_RESET, /* $1 tenant slug, $2 token SHA-256 (hex), $3 new hash, $4 slack s, $5 ip,
                           * $6 request id → no row when the token is refused; else the token
                           * spent, the password set, the lockout cleared, the sessions ended
                           * with STORE_USER_SESSIONS_END's rows (at least the 'sub' one) */
    STORE_RECOVERY_VERIFY, /* $1 tenant slug, $2 token SHA-256 (hex), $3 ip, $4 request id → user
                            * id when the token was spent and the address marked verified */
    STORE_REFRESH_INTROSPECT, /* $1 tenant slug, $2 session id, $3 presented SHA-256 (hex), $4 the
                               * asking client_id → tenant id, user id, scope, exp, iat (Unix s)
                               * when it is the live session's current token and the client its own */
    STORE_USER_PASSWORD_HASH, /* $1 tenant id, $2 user id → the live, enabled user's password_hash */
    STORE_USER_PASSWORD_SET,  /* $1 tenant id, $2 user id, $3 new hash, $4 the asking session (kept),
                               * $5 slack s, $6 ip, $7 request id → none when the user is gone; else a
                               * row as logout's per other session revoked (one of NULLs for none) */
    /* Tenant admin endpoints (auth/admin.c, auth/audit.c) and self-service deletion
     * (auth/reauth.c). Every one is confined to $1, the tenant id of the checked token. */
    STORE_ADMIN_USERS_LIST, /* $1 tenant id, $2 cursor (the last user id seen) or NULL, $3 search
                             * text or NULL, $4 limit → one row: {"users": [...], "next_cursor"}
                             * as JSON, live users in id order, never a hash */
    STORE_ADMIN_USER_GET,   /* $1 tenant id, $2 user id → one row (the live user as JSON) or none */
    STORE_ADMIN_USER_DISABLE, /* $1 tenant id, $2 user id, $3 client_id, $4 slack s, $5 ip, $6 request
                               * id → none when no such live user; else the sessions ended with
                               * STORE_USER_SESSIONS_END's rows, audit user_disabled */
    STORE_ADMIN_USER_ENABLE,  /* $1 tenant id, $2 user id, $3 client_id, $4 ip, $5 request id → user
                               * id when live, audit user_enabled */
    STORE_ADMIN_USER_UNLOCK,  /* as enable: failed_logins 0, locked_until NULL, audit user_unlocked */
    STORE_USER_DELETE,        /* $1 tenant id, $2 user id, $3 actor kind ('client', 'user'), $4 actor
                               * id, $5 slack s, $6 ip, $7 request id → as disable: the soft delete,
                               * every session revoked, audit user_deleted */
    STORE_AUDIT_LIST,         /* $1 tenant id, $2 action, $3 actor_id, $4 target_id, $5 since, $6
                               * until (Unix s), $7 cursor (seq), each or NULL, $8 limit → one row:
                               * {"events": [...], "next_cursor"} as JSON, newest first */
    STORE_USER_SIGNUP,        /* sign-up with an address (SECURITY P02): $1 tenant id, $2 username,
                               * $3 email, $4 hash, $5 ip, $6 request id, $7 verification token
                               * SHA-256 (hex), $8 its lifetime s, $9 / $10 the verification mail's
                               * subject / body, $11 / $12 the address-taken mail's → one row: users
                               * created (0 or 1), address-taken mails queued (0 or 1); a taken
                               * username raises 23505 (409) even when the address is taken too */
    STORE_AUDIT_BATCH,        /* $1 a JSON array of events {slug, event_id, actor_kind, actor_id,
                               * action, target_kind, target_id, ip, request_id, details (an
                               * object), at_us (Unix µs)} → none; auth/audit_batch.c */
    /* The authorization code flow (auth/authorize.c, auth/code.c; migration 0006). */
    STORE_AUTHZ_CLIENT,       /* $1 tenant slug, $2 client_id → tenant id, grants, scopes (each
                               * space-separated), redirect URIs (newline-separated: none holds
                               * a control character); no row unless the tenant's */
    STORE_AUTHZ_CREATE,       /* $1 tenant id, $2 request id, $3 client_id, $4 redirect_uri, $5
                               * redirect given (t/f), $6 scope (NULL: the client's), $7 state, $8
                               * nonce (each or NULL), $9 code_challenge, $10 lifetime s, $11 / $12
                               * the browser session's id / SHA-256 (hex) or NULL, $13 a code's
                               * SHA-256 (hex), $14 the browser session's idle s, $15 the code's
                               * lifetime s, $16 max_age s or NULL, $17 ip, $18 request id →
                               * request id, whether the live browser session answered it (then
                               * the code is its, the request records the session, and an audit
                               * row says sso_login); no row when the client is gone */
    STORE_AUTHZ_LOGIN_LOOKUP, /* $1 tenant slug, $2 request id, $3 username, $4 email or NULL →
                               * STORE_LOGIN_LOOKUP's columns, the second saying whether the request
                               * awaits its login; a row per user found by either */
    STORE_AUTHZ_LOGIN_SUCCEEDED, /* $1 tenant id, $2 user id, $3 request id, $4 code SHA-256 (hex),
                                  * $5 code lifetime s, $6 ip, $7 request id, $8 new hash or NULL, $9
                                  * the verified hash, $10 / $11 a browser session's id / SHA-256
                                  * (hex), $12 user agent, $13 / $14 its idle / absolute s, $15 /
                                  * $16 the cookie's browser session id / SHA-256 (or NULL), $17
                                  * the SHA-256 of a new token for that id (the same user's live
                                  * one is renewed with it; another is ended) → no row when the
                                  * user changed since the lookup; else redirect_uri, state,
                                  * whether the request took the code (f: spent or expired
                                  * meanwhile; then no browser session either), the browser
                                  * session's id ($10 or $15); the audit row */
    STORE_SSO_LOGOUT,         /* $1 tenant slug, $2 browser session id, $3 its SHA-256 (hex) (both
                               * NULL: no session), $4 ip, $5 request id, $6 client_id, $7 the
                               * post-logout redirect (both NULL: none), $8 slack s, $9 / $10 /
                               * $11 a verified id_token_hint's session, user and client (or
                               * NULL) → rows as logout-all's (auth_session_spread): the 'sid'
                               * revocations of the sessions its codes made and of the hint's,
                               * ended with it (audit logout), each with a sixth column saying
                               * the redirect is the client's (f: nothing ended); one row at
                               * least */
    STORE_SSO_SWEEP,          /* $1 tenant slug, $2 browser session id, $3 its SHA-256 (hex), $4
                               * slack s, $5 ip, $6 request id → rows as logout's: the sessions its
                               * codes made that are still live once it ended (a redemption the
                               * logout waited for), with an audit row when there were any */
    STORE_LOGOUT_CLIENT,      /* $1 tenant slug, $2 client_id, $3 a post-logout redirect URI or
                               * NULL → one row: whether the client registered it (NULL: none
                               * asked); none for no such client */
    STORE_CODE_READ,          /* $1 tenant slug, $2 code SHA-256 (hex) → request id, client_id,
                               * code_challenge, redirect_uri, redirect given, consumed, expired
                               * (t/f), tenant id, user id, scope, nonce, auth_time (Unix s),
                               * the client's token lifetime and whether it has the
                               * authorization_code and refresh_token grants (NULL: deleted) */
    STORE_CODE_REUSE,         /* $1 tenant id, $2 request id, $3 client_id, $4 slack s, $5 ip, $6
                               * request id → a row as logout's: the session made from the code
                               * revoked (SECURITY O11), audit code_reuse_detected */
    STORE_CODE_REDEEM,        /* $1 tenant id, $2 request id, $3 client_id, $4 new session id, $5
                               * refresh SHA-256 (hex) or NULL, $6 ip, $7 user agent, $8 idle s, $9
                               * absolute s → session id; no row unless the code was unconsumed,
                               * unexpired, its user still enabled and its browser session (if
                               * any) live (exactly one wins, O12) */
    STORE_USERINFO,           /* $1 tenant id, $2 user id, $3 the token's scope → one row: OIDC
                               * Core §5.3.2's claims as JSON (by §5.4's scopes), or none */
    /* Personal API keys (auth/apikey.c; migration 0008). */
    STORE_APIKEY_CREATE,      /* $1 tenant id, $2 user id, $3 client_id, $4 name, $5 display prefix,
                               * $6 SHA-256 (hex), $7 scope, $8 lifetime s or NULL (never expires),
                               * $9 ip, $10 request id → one row: whether the user is live, whether
                               * the client is a live first-party one, the key's id (NULL: nothing
                               * made), created_at and expires_at (Unix s or NULL); audit
                               * api_key_created. Past the user's cap: 23505 */
    STORE_APIKEYS_OF_USER,    /* $1 tenant id, $2 user id → one row unless the user is deleted
                               * or unknown: the user's live keys as a JSON array, newest first,
                               * never a digest */
    STORE_APIKEY_REVOKE,      /* $1 tenant id, $2 user id, $3 key id, $4 slack s, $5 ip, $6 request
                               * id, $7 actor kind ('user', 'client'), $8 actor id → the 'key'
                               * revocation's row (seq, tenant id, value, exp) when an unrevoked
                               * key of this user (expired or not) was revoked, else none; audit
                               * api_key_revoked */
    STORE_APIKEY_USES,        /* $1 a JSON array of {"t": tenant id, "k": key id, "a": Unix s}
                               * → nothing; each key's last_used_at moves up to its latest "a" */
    STORE_APIKEY_LOOKUP,      /* $1 tenant slug, $2 SHA-256 (hex) of the presented key → key id,
                               * user id, client_id, scope, created_at, expires_at (Unix s or
                               * NULL), tenant id; no row unless the key, its user and its client
                               * are live */
    STORE_STMT_COUNT,
};

struct store;
struct store_shard;

/* Made before the shards start (Redis hosts are resolved here, never on a shard). NULL
 * when a Redis URL does not resolve or memory runs out (reason logged). */
struct store *store_create(const struct config *cfg, struct loop *const *loops, unsigned shards);
void store_destroy(struct store *store);
/* On shard threads, from the loop's on_start / on_stop hooks. */
void store_shard_start(struct store *store, struct loop *loop);
void store_shard_stop(struct store *store, struct loop *loop);
struct store_shard *store_shard(struct store *store, unsigned index);

/* Readiness of one shard's connections: STORE_ABSENT when not configured. */
enum store_state { STORE_ABSENT, STORE_DOWN, STORE_UP };
struct store_health {
    enum store_state primary, replica, redis, subscriber;
};
void store_shard_health(const struct store_shard *shard, struct store_health *out);

/* Sends a statement (q's sql and prepared are set here; the caller sets params,
 * params_count and done; budget_ms 0 takes TESSERA_PG_QUERY_TIMEOUT_MS). Outcomes as
 * pg_query: PG_OK, or PG_UNAVAILABLE at once (done will not run). */
enum pg_outcome store_query(struct store_shard *shard, enum store_stmt stmt, struct pg_query *q);
/* Whether store_query would accept stmt now: for a caller that must know before it answers
 * and sends the statement only after (it is on the shard's thread: nothing changes between,
 * but a send that fails on the way out, which is PG_UNAVAILABLE then). */
bool store_accepts(const struct store_shard *shard, enum store_stmt stmt);
/* The shard's Redis client, NULL in single-instance mode. */
struct redis_client *store_redis(struct store_shard *shard);

/* Instance-wide events: (kind, value) published on STORE_EVENTS_CHANNEL reach every shard
 * of every instance once per subscriber delivery (at-most-once: a consumer that must not
 * miss one also reads Postgres, as the revocation protocol does). Set before start. */
typedef void (*store_event_fn)(void *arg, struct loop *loop, uint32_t kind, uint64_t value);
void store_on_event(struct store *store, store_event_fn fn, void *arg);
/* The loop's message hook hands store messages here; false when msg is not the store's. */
bool store_handle_message(struct store *store, struct loop *loop, const struct ring_msg *msg);
/* Events delivered to this shard so far (tests, metrics). */
uint64_t store_shard_events(const struct store_shard *shard);

/* Appends the store's per-shard counters in Prometheus text format (at scrape time, from
 * any shard: relaxed reads of counters their owners write). */
void store_render_metrics(struct store *store, struct buf *out);

#endif
