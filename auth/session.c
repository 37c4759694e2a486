/* auth/session.c: sessions' refresh tokens (DESIGN §4) and the refresh_token grant of
 * POST /t/{tenant}/oauth2/token (RFC 6749 §6), dispatched here by auth/token.c.
 *
 * A refresh token is rt_<session id>.<32 random bytes, base64url>; only its SHA-256 is
 * stored (sessions.refresh_sha256). The stages of a refresh: the caller identified (a
 * confidential client authenticates as at the token endpoint, RFC 6749 §2.3; a public
 * client, whose row has no secret, names itself by client_id, §3.2.1) and the requested
 * scope checked against the client's (§6: never wider, SECURITY O19) → the tenant's keys
 * (a keyless tenant is 503 before the token is spent) → rotation on the session's owner
 * shard (auth/session_owner.c: one at a time per session within the instance) by one
 * conditional UPDATE (store.c STORE_SESSION_ROTATE: the token, the calling client, the
 * session live and its user enabled; across instances, under the row lock, two
 * presentations of one token give one success, SECURITY O16) → the access token signed (RSA
 * on the worker pool) → §5.1's answer with the new refresh token. When the rotation matches nothing and the token was the session's
 * previous one, the session is revoked with a 'sid' revocation (RFC 9700 §4.14.2, SECURITY
 * O15), spread as DESIGN §1's protocol says; any failure is invalid_grant (§5.2).
 *
 * There is no grace window for a lost response (SECURITY O17): a retry of the previous
 * token, even a concurrent one, counts as reuse and revokes the session.
 *
 * Also here: logout and logout-all (POST /t/{tenant}/api/v1/auth/logout[-all]). */
#include "auth/auth_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "crypto/b64url.h"
#include "crypto/jscan.h"
#include "proto/http_auth.h"

#define SESSION_PAYLOAD_MAX 2048      /* the claims object, as auth/token.c */
#define SESSION_REQUEST_ID_MAX 64     /* the X-Request-Id kept for audit rows */
#define SESSION_NUM_TEXT 24           /* an int64 as decimal text */

static const char session_refused[] = "the refresh token is invalid, expired or revoked";

/* ---- Refresh tokens ------------------------------------------------------------------------- */

void auth_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void auth_sha256_hex(const char *text, char *sha_hex)
{
    uint8_t digest[HASH_SHA256_BYTES];
    hash_sha256(text, strlen(text), digest);
    auth_hex(digest, sizeof(digest), sha_hex);
}

int auth_refresh_make(const char *sid, char *token, char *sha_hex)
{
    uint8_t secret[AUTH_REFRESH_SECRET_BYTES];
    if (strlen(sid) != CT_UUID_TEXT_LEN || ct_random_bytes(secret, sizeof(secret)) != 0)
        return -TE_IO;
    memcpy(token, "rt_", 3);
    memcpy(token + 3, sid, CT_UUID_TEXT_LEN);
    token[3 + CT_UUID_TEXT_LEN] = '.';
    char *tail = token + 4 + CT_UUID_TEXT_LEN;
    size_t tail_len = AUTH_REFRESH_TOKEN_LEN - 4 - CT_UUID_TEXT_LEN;
    int n = b64url_encode(secret, sizeof(secret), tail, tail_len);
    explicit_bzero(secret, sizeof(secret));
    if (n < 0 || (size_t)n != tail_len)
        return -TE_IO;
    token[AUTH_REFRESH_TOKEN_LEN] = '\0';
    auth_sha256_hex(token, sha_hex);
    return 0;
}

/* RFC 9562 §4's text form, lowercase as Postgres and ct_uuid_format write it. */
static bool session_uuid_valid(const char *s)
{
    for (int i = 0; i < CT_UUID_TEXT_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

bool auth_refresh_well_formed(struct slice token)
{
    if (token.len != AUTH_REFRESH_TOKEN_LEN || memcmp(token.ptr, "rt_", 3) != 0 ||
        token.ptr[3 + CT_UUID_TEXT_LEN] != '.')
        return false;
    char uuid[CT_UUID_TEXT_LEN + 1];
    memcpy(uuid, token.ptr + 3, CT_UUID_TEXT_LEN);
    uuid[CT_UUID_TEXT_LEN] = '\0';
    uint8_t secret[AUTH_REFRESH_SECRET_BYTES];
    const char *tail = token.ptr + 4 + CT_UUID_TEXT_LEN;
    bool ok = session_uuid_valid(uuid) &&
              b64url_decode(tail, token.len - 4 - CT_UUID_TEXT_LEN, secret, sizeof(secret)) == AUTH_REFRESH_SECRET_BYTES;
    explicit_bzero(secret, sizeof(secret));
    return ok;
}

int auth_refresh_parse(const char *token, char *sid, char *sha_hex)
{
    if (!auth_refresh_well_formed(slice_make(token, strlen(token))))
        return -TE_INVAL;
    memcpy(sid, token + 3, CT_UUID_TEXT_LEN);
    sid[CT_UUID_TEXT_LEN] = '\0';
    auth_sha256_hex(token, sha_hex);
    return 0;
}

/* ---- Access tokens -------------------------------------------------------------------------- */

int auth_session_sign(const struct auth_user_token *t, char *out, size_t cap)
{
    static _Thread_local char payload_mem[SESSION_PAYLOAD_MAX];
    uint8_t uuid[CT_UUID_BYTES];
    char jti[CT_UUID_TEXT_LEN + 1];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (ct_uuid7((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000, uuid) != 0)
        return -TE_IO;
    ct_uuid_format(uuid, jti);
    struct buf payload;
    buf_init(&payload, payload_mem, sizeof(payload_mem));
    struct jwt_access claims = {
        .iss = slice_make(t->issuer, strlen(t->issuer)),
        .sub = slice_make(t->sub, strlen(t->sub)), /* RFC 9068 §2.2: the user */
        .aud = slice_make(t->issuer, strlen(t->issuer)),
        .jti = slice_make(jti, strlen(jti)),
        .client_id = slice_make(t->client_id, strlen(t->client_id)),
        .scope = slice_make(t->scope, strlen(t->scope)),
        .sid = slice_make(t->sid, strlen(t->sid)),
        .tid = slice_make(t->tenant->id, strlen(t->tenant->id)),
        .iat = now.tv_sec,
        .lifetime_s = t->lifetime_s,
    };
    const struct jwk_key *key = keyset_signing_key(&t->tenant->keys);
    if (key == NULL || jwt_access_render(&claims, &payload) != 0)
        return -TE_NOMEM;
    return jwt_sign(key, "at+jwt", buf_slice(&payload), out, cap);
}

/* ---- The refresh_token grant ---------------------------------------------------------------- */

struct refresh_wait {
    struct auth_wait w;
    struct worker_job job;
    struct auth_tenant *tenant;
    struct auth_client_wait cw;
    bool public_client;
    bool scope_given;
    int jwt_len;
    struct auth_session_op op; /* the rotation, run on the session's owner shard */
    char sid[CT_UUID_TEXT_LEN + 1];
    char presented_sha[2 * HASH_SHA256_BYTES + 1];
    char new_sha[2 * HASH_SHA256_BYTES + 1];
    char refresh[AUTH_REFRESH_TOKEN_LEN + 1];
    char idle_text[SESSION_NUM_TEXT];
    char slack_text[SESSION_NUM_TEXT];
    char ip[AUTH_IP_MAX + 1];
    char request_id[SESSION_REQUEST_ID_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1]; /* requested, then granted */
    char issuer[AUTH_SESSION_ISSUER_MAX + 1];
    char jwt[AUTH_SESSION_JWT_MAX];
};

_Static_assert(sizeof(struct refresh_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define REFRESH_OF(j) ((struct refresh_wait *)((char *)(j) - offsetof(struct refresh_wait, job)))

static void refresh_forget(struct refresh_wait *rw)
{
    explicit_bzero(rw->refresh, sizeof(rw->refresh));
    explicit_bzero(rw->jwt, sizeof(rw->jwt));
}

static void refresh_release(struct refresh_wait *rw)
{
    if (rw->tenant != NULL)
        auth_tenant_put(rw->w.auth, rw->w.loop, rw->tenant);
    rw->tenant = NULL;
}

/* RFC 6749 §5.2: every refused refresh token looks the same to the caller. */
static void refresh_invalid(struct refresh_wait *rw)
{
    refresh_release(rw);
    refresh_forget(rw);
    auth_oauth_fail(&rw->w, 400, "invalid_grant", session_refused);
}

static void refresh_respond(struct http_ctx *ctx, void *state)
{
    struct refresh_wait *rw = state;
    struct auth_token_answer a = {
        .access = slice_make(rw->jwt, (size_t)rw->jwt_len), .lifetime_s = rw->op.lifetime_s,
        .scope = rw->scope, .refresh = rw->refresh,
    };
    auth_token_respond(ctx, &a);
    refresh_forget(rw);
}

static void refresh_sign_run(struct worker_job *job)
{
    struct refresh_wait *rw = REFRESH_OF(job);
    struct auth_user_token t = {
        .tenant = rw->tenant, .issuer = rw->issuer, .sub = rw->op.user_id,
        .client_id = rw->cw.client_id,
        .scope = rw->scope, .sid = rw->sid, .lifetime_s = rw->op.lifetime_s,
    };
    rw->jwt_len = auth_session_sign(&t, rw->jwt, sizeof(rw->jwt));
}

static void refresh_sign_done(struct worker_job *job)
{
    struct refresh_wait *rw = REFRESH_OF(job);
    refresh_release(rw);
    if (rw->jwt_len <= 0) {
        refresh_forget(rw);
        log_msg(LOG_ERROR, "signing an access token failed", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return;
    }
    http_resume(rw, refresh_respond);
}

int auth_session_spread(struct auth_wait *w)
{
    return auth_revocations_spread(w, "sid");
}

int auth_revocations_spread(struct auth_wait *w, const char *kind)
{
    const struct pg_result *res = w->result;
    int rows = pg_result_rows(res), spread = 0;
    bool with_nb = pg_result_cols(res) > 4; /* STORE_USER_SESSIONS_END's statements */
    for (int i = 0; i < rows; i++) {
        if (pg_result_is_null(res, i, 0))
            continue; /* a statement's "nothing revoked" row */
        spread++;
        int64_t seq = strtoll(pg_result_value(res, i, 0), NULL, 10);
        int64_t until = strtoll(pg_result_value(res, i, 3), NULL, 10);
        const char *tid = pg_result_value(res, i, 1), *value = pg_result_value(res, i, 2);
        if (with_nb && !pg_result_is_null(res, i, 4))
            auth_revoke_spread_not_before(w, auth_revoked_key(tid, "sub", value),
                                          strtoll(pg_result_value(res, i, 4), NULL, 10), until, seq);
        else
            auth_revoke_spread(w, auth_revoked_key(tid, kind, value), until, seq);
    }
    return spread;
}

/* The owner's verdict (auth/session_owner.c): sign the access token of a rotated session. */
static void refresh_owner_answered(struct auth_session_op *op)
{
    struct refresh_wait *rw = (struct refresh_wait *)((char *)op - offsetof(struct refresh_wait, op));
    if (op->verdict != AUTH_SESSION_ROTATED) {
        if (op->verdict == AUTH_SESSION_REFUSED) {
            refresh_invalid(rw);
            return;
        }
        refresh_release(rw);
        refresh_forget(rw);
        if (op->verdict == AUTH_SESSION_FAILED)
            auth_fail(&rw->w, op->outcome);
        else if (op->verdict == AUTH_SESSION_EXPIRED)
            auth_answer_abandoned(&rw->w); /* its backstop's moment passed while it waited */
        else
            auth_answer(&rw->w, 503, AUTH_BUSY_DETAIL);
        return;
    }
    rw->job.run = refresh_sign_run;
    rw->job.done = refresh_sign_done;
    if (auth_sign_job(&rw->w, rw->tenant, &rw->job) != 0) {
        /* Committed, but no token can be signed now: the new refresh token is lost and the
         * client logs in again (SECURITY F15 keeps the hot path; the session is unharmed). */
        refresh_release(rw);
        refresh_forget(rw);
        auth_answer(&rw->w, 503, AUTH_BUSY_DETAIL);
    }
}

static void refresh_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct refresh_wait *rw = (struct refresh_wait *)w;
    if (tenant == NULL || !auth_tenant_signs(w, tenant)) {
        refresh_forget(rw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    rw->tenant = tenant;
    if (auth_refresh_make(rw->sid, rw->refresh, rw->new_sha) != 0) {
        refresh_release(rw);
        auth_answer(w, 500, "internal error");
        return;
    }
    const char *rotate[AUTH_SESSION_PARAMS] = { rw->cw.slug, rw->sid, rw->presented_sha, rw->new_sha,
                                                rw->cw.client_id, rw->public_client ? "t" : "f",
                                                rw->idle_text };
    const char *reuse[AUTH_SESSION_PARAMS] = { rw->cw.slug, rw->sid, rw->presented_sha, rw->cw.client_id,
                                               rw->request_id, rw->ip[0] ? rw->ip : NULL,
                                               rw->slack_text };
    memcpy(rw->op.rotate, rotate, sizeof(rotate));
    memcpy(rw->op.reuse, reuse, sizeof(reuse));
    rw->op.sid = rw->sid;
    rw->op.client_scopes = rw->scope_given ? NULL : rw->scope; /* none asked: all the client's */
    rw->op.done = refresh_owner_answered;
    auth_session_rotate(w, &rw->op);
}

/* The caller is known with the client's scopes: the scope may only narrow (RFC 6749 §6). */
static void refresh_caller_known(struct refresh_wait *rw, const char *client_scopes)
{
    if (rw->scope_given && !auth_words_subset(rw->scope, client_scopes)) {
        refresh_forget(rw);
        auth_oauth_fail(&rw->w, 400, "invalid_scope", "the scope is wider than the one granted");
        return;
    }
    auth_tenant_get(NULL, &rw->w, rw->cw.slug, refresh_keys_ready);
}

static void refresh_client_ready(struct auth_wait *w, const struct auth_client *client)
{
    struct refresh_wait *rw = (struct refresh_wait *)w;
    if (client == NULL) {
        refresh_forget(rw);
        auth_client_refused(w);
        return;
    }
    refresh_caller_known(rw, client->scopes);
}

/* A public caller: its client row must exist in the tenant and have no secret (a
 * confidential client must authenticate, RFC 6749 §6). Columns as STORE_CLIENT_BY_ID. */
static void refresh_public_row(struct auth_wait *w)
{
    struct refresh_wait *rw = (struct refresh_wait *)w;
    if (w->outcome != PG_OK) {
        refresh_forget(rw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1 || !pg_result_is_null(w->result, 0, 2)) {
        refresh_forget(rw);
        auth_audit_client_failed(w, rw->cw.slug, rw->cw.client_id);
        auth_oauth_fail(w, 401, "invalid_client", "client authentication failed");
        return;
    }
    char scopes[sizeof(((struct auth_client *)0)->scopes)];
    snprintf(scopes, sizeof(scopes), "%s", pg_result_value(w->result, 0, 4));
    refresh_caller_known(rw, scopes);
}

static void refresh_identify(struct http_ctx *ctx, struct refresh_wait *rw)
{
    if (!rw->public_client) {
        /* The shard's cached client may answer (AUTH_CLIENT_TTL_MS): the rotation statement
         * reads the client row again and refuses a deleted one. */
        auth_client_authenticate(ctx, &rw->w, &rw->cw, true, refresh_client_ready);
        return;
    }
    rw->w.q.params[0] = rw->cw.client_id;
    rw->w.q.params[1] = rw->cw.slug;
    rw->w.q.params_count = 2;
    auth_send(ctx, &rw->w, STORE_CLIENT_BY_ID, NULL, refresh_public_row);
}

static void refresh_rate_passed(struct auth_wait *w)
{
    refresh_identify(NULL, (struct refresh_wait *)w);
}

int auth_session_caller(struct http_ctx *ctx, struct auth_client_creds *creds, bool *public_client)
{
    const char *why = NULL;
    *public_client = false;
    if (!creds->has_secret && http1_find_header(ctx->req, "Authorization") == NULL) {
        if (!creds->has_id || creds->client_id[0] == '\0') {
            auth_oauth_error(ctx, 401, "invalid_client", "client authentication is required");
            return -1;
        }
        *public_client = true;
        return 0;
    }
    int status = auth_client_credentials(ctx, creds, &why);
    if (status != 0) {
        auth_oauth_error(ctx, status, status == 401 ? "invalid_client" : "invalid_request", why);
        return -1;
    }
    return 0;
}

void auth_session_refresh(struct http_ctx *ctx, struct auth *auth, struct auth_client_creds *creds,
                          const char *refresh_token, const char *scope, bool scope_given)
{
    bool public_client = false;
    if (refresh_token[0] == '\0') {
        auth_oauth_error(ctx, 400, "invalid_request", "refresh_token is missing");
        return;
    }
    if (auth_session_caller(ctx, creds, &public_client) != 0)
        return; /* answered */
    struct auth_rate_check limits;
    uint8_t secret_sha256[HASH_SHA256_BYTES];
    hash_sha256(creds->secret, strlen(creds->secret), secret_sha256);
    if (!auth_rate_admit(ctx, auth, creds->client_id, secret_sha256, &limits))
        return; /* answered 429 */
    struct refresh_wait *rw = auth_park(ctx, auth, sizeof(*rw));
    if (rw == NULL)
        return;
    if (auth_refresh_parse(refresh_token, rw->sid, rw->presented_sha) != 0) {
        auth_oauth_error(ctx, 400, "invalid_grant", session_refused);
        return; /* answered at once: the park is undone */
    }
    auth_slug_copy(ctx->params[0], rw->cw.slug);
    memcpy(rw->cw.client_id, creds->client_id, sizeof(rw->cw.client_id));
    memcpy(rw->cw.secret_sha256, secret_sha256, sizeof(secret_sha256));
    rw->public_client = public_client;
    rw->scope_given = scope_given;
    snprintf(rw->scope, sizeof(rw->scope), "%s", scope);
    snprintf(rw->idle_text, sizeof(rw->idle_text), "%d", AUTH_SESSION_IDLE_S);
    snprintf(rw->slack_text, sizeof(rw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    http_client_address(ctx, rw->ip, sizeof(rw->ip));
    auth_request_id(ctx, rw->request_id, sizeof(rw->request_id));
    struct buf issuer;
    buf_init(&issuer, rw->issuer, sizeof(rw->issuer));
    auth_issuer(auth, slice_make(rw->cw.slug, strlen(rw->cw.slug)), &issuer);
    buf_append(&issuer, "", 1);
    rw->w.rate = limits;
    if (!auth_rate_pending(&limits))
        refresh_identify(ctx, rw);
    else if (auth_rate_continue(ctx, &rw->w, refresh_rate_passed) != 0)
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
}

/* ---- Logout --------------------------------------------------------------------------------- */

/* POST /t/{tenant}/api/v1/auth/logout and .../logout-all with the user's access token
 * (Authorization: Bearer, RFC 6750 §2.1) → 204 once the sessions are revoked in Postgres
 * and their revocations spread (DESIGN §1): every access token of the session (logout: its
 * 'sid'; logout-all: the user's 'sub' not-before, store/sql.h) is refused on every shard and
 * instance, every refresh token is invalid_grant (SECURITY O20). An invalid token is 401; a token of no session (a
 * client's own) is 400.
 *
 * With the same token, GET /t/{tenant}/api/v1/me/sessions lists the user's live sessions
 * ({"sessions": [{id, client_id, ip, user_agent, created_at, last_seen_at, expires_at,
 * current}]}, newest first, at most 100) and DELETE .../me/sessions/{id} revokes one of them
 * like a logout (204; 404 for an id that is not a live session of this user).
 *
 * GET /t/{tenant}/api/v1/me answers the user's profile ({id, username, email, email_verified,
 * created_at, updated_at, last_login_at}); PATCH with {"username"?, "email"?} changes them (a
 * new address is unverified; "" removes it; a taken username is 409) and answers the profile,
 * with an audit row. A disabled or deleted user is 404.
 *
 * GET or POST /t/{tenant}/userinfo (OIDC Core §5.3) answers the claims of the token's user
 * that its scope allows (§5.4: sub always; preferred_username and updated_at with profile;
 * email and email_verified with email) to a token carrying openid (403 insufficient_scope
 * without); a client's own token, or a user gone since, is 401 invalid_token.
 *
 * POST, GET and DELETE /t/{tenant}/api/v1/me/api-keys[/{id}] mint, list and revoke the
 * user's personal API keys (auth/apikey.c): a key acts through the client of the token that
 * minted it, with a scope no wider than that token's. */

/* What the bearer of a user's access token asks of their sessions. */
enum user_mode {
    LOGOUT_THIS,     /* POST /auth/logout */
    LOGOUT_ALL,      /* POST /auth/logout-all */
    SESSIONS_LIST,   /* GET /me/sessions */
    SESSIONS_REVOKE, /* DELETE /me/sessions/{id} */
    ME_GET,          /* GET /me */
    ME_PATCH,        /* PATCH /me */
    USERINFO,        /* GET or POST /userinfo (OIDC Core §5.3) */
    KEYS_CREATE,     /* POST /me/api-keys (auth/apikey.c) */
    KEYS_LIST,       /* GET /me/api-keys */
    KEYS_REVOKE,     /* DELETE /me/api-keys/{id} */
};

/* PATCH /me's members. */
struct user_patch {
    bool has_username, has_email;
    char username[AUTH_USERNAME_MAX + 1];
    char email[AUTH_EMAIL_MAX + 1];
};

struct user_wait {
    struct auth_wait w;
    enum user_mode mode;
    char target[CT_UUID_TEXT_LEN + 1]; /* SESSIONS_REVOKE's and KEYS_REVOKE's {id} */
    union {
        struct user_patch patch; /* ME_PATCH's */
        struct auth_key_new key; /* KEYS_CREATE's */
    } body;
    size_t token_len;
    char slug[AUTH_SLUG_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    char sub[CT_UUID_TEXT_LEN + 1];
    char client_id[JWT_ID_MAX + 1];
    char slack_text[SESSION_NUM_TEXT];
    char ip[AUTH_IP_MAX + 1];
    char request_id[SESSION_REQUEST_ID_MAX + 1];
    union {
        char token[AUTH_ACCESS_TOKEN_MAX]; /* until checked */
        char scope[JWT_SCOPE_MAX + 1];     /* then USERINFO's: the token's scope */
        struct auth_key_secret key;        /* or KEYS_CREATE's new key */
    } bearer;
};

_Static_assert(sizeof(struct user_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

static void logout_committed(struct auth_wait *w)
{
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    auth_session_spread(w);
    http_resume(w, auth_respond_no_content);
}

bool auth_uuid_text(const char *s)
{
    return strlen(s) == CT_UUID_TEXT_LEN && session_uuid_valid(s);
}

static void sessions_list_respond(struct http_ctx *ctx, void *state)
{
    auth_respond_user_list(ctx, state, "sessions");
}

/* GET and PATCH /me: the profile Postgres rendered; no row: the user is gone or disabled. */
static void me_respond(struct http_ctx *ctx, void *state)
{
    struct user_wait *lw = state;
    if (lw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, lw->w.outcome); /* a taken username: 409 */
        return;
    }
    if (pg_result_rows(lw->w.result) != 1) {
        http_respond_problem(ctx, 404, "no such user");
        return;
    }
    const char *profile = pg_result_value(lw->w.result, 0, 0);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, "application/json", slice_make(profile, strlen(profile)));
}

/* OIDC Core §5.3.2: the claims, or 401 for a user gone or disabled since the token (§5.3.3:
 * the token no longer names anyone). */
static void userinfo_respond(struct http_ctx *ctx, void *state)
{
    struct user_wait *lw = state;
    if (lw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, lw->w.outcome);
        return;
    }
    if (pg_result_rows(lw->w.result) != 1) {
        auth_respond_invalid_token(ctx, NULL);
        return;
    }
    const char *claims = pg_result_value(lw->w.result, 0, 0);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, "application/json", slice_make(claims, strlen(claims)));
}

/* RFC 6750 §3.1: a user's token without openid may not read the claims (OIDC Core §5.3.1). */
static void userinfo_forbidden(struct http_ctx *ctx, void *state)
{
    (void)state;
    http_header_add(ctx, "WWW-Authenticate", SLICE_LIT("Bearer error=\"insufficient_scope\", scope=\"openid\""));
    http_respond_problem(ctx, 403, "the access token lacks the openid scope");
}

/* DELETE /me/sessions/{id}: nothing updated means no live session of this user by that id. */
static void sessions_revoke_committed(struct auth_wait *w)
{
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    if (auth_session_spread(w) == 0) {
        auth_answer(w, 404, "no such session");
        return;
    }
    http_resume(w, auth_respond_no_content);
}

static void keys_created_respond(struct http_ctx *ctx, void *state)
{
    struct user_wait *lw = state;
    auth_key_created_respond(ctx, &lw->w, &lw->body.key, &lw->bearer.key, lw->client_id);
}

/* The statement for lw->mode, its parameters from the checked token. */
static void user_send(struct user_wait *lw)
{
    struct auth_wait *w = &lw->w;
    const char *ip = lw->ip[0] ? lw->ip : NULL;
    const char **p = w->q.params;
    switch (lw->mode) {
    case LOGOUT_ALL:
        p[0] = lw->tid, p[1] = lw->sub, p[2] = lw->slack_text, p[3] = ip, p[4] = lw->request_id;
        w->q.params_count = 5;
        auth_send(NULL, w, STORE_SESSION_LOGOUT_ALL, NULL, logout_committed);
        return;
    case LOGOUT_THIS:
        p[0] = lw->tid, p[1] = lw->sid, p[2] = lw->sub, p[3] = lw->client_id, p[4] = lw->slack_text;
        p[5] = ip, p[6] = lw->request_id;
        w->q.params_count = 7;
        auth_send(NULL, w, STORE_SESSION_LOGOUT, NULL, logout_committed);
        return;
    case SESSIONS_LIST:
        p[0] = lw->tid, p[1] = lw->sub, p[2] = lw->sid;
        w->q.params_count = 3;
        auth_send(NULL, w, STORE_SESSIONS_OF_USER, sessions_list_respond, NULL);
        return;
    case SESSIONS_REVOKE:
    case KEYS_REVOKE: {
        bool key = lw->mode == KEYS_REVOKE;
        p[0] = lw->tid, p[1] = lw->sub, p[2] = lw->target, p[3] = lw->slack_text, p[4] = ip;
        p[5] = lw->request_id, p[6] = "user", p[7] = lw->sub; /* a key's: who revoked it */
        w->q.params_count = key ? 8 : 6;
        auth_send(NULL, w, key ? STORE_APIKEY_REVOKE : STORE_SESSION_REVOKE_OWN, NULL,
                  key ? auth_key_revoke_committed : sessions_revoke_committed);
        return;
    }
    case ME_GET:
    case KEYS_LIST: {
        bool key = lw->mode == KEYS_LIST;
        p[0] = lw->tid, p[1] = lw->sub;
        w->q.params_count = 2;
        auth_send(NULL, w, key ? STORE_APIKEYS_OF_USER : STORE_USER_ME, key ? auth_respond_api_keys : me_respond, NULL);
        return;
    }
    case USERINFO:
        p[0] = lw->tid, p[1] = lw->sub, p[2] = lw->bearer.scope;
        w->q.params_count = 3;
        auth_send(NULL, w, STORE_USERINFO, userinfo_respond, NULL);
        return;
    case KEYS_CREATE: {
        struct auth_key_owner o = { lw->tid, lw->sub, lw->client_id, ip, lw->request_id };
        auth_key_create_send(w, &lw->body.key, &lw->bearer.key, &o, keys_created_respond);
        return;
    }
    case ME_PATCH: {
        const struct user_patch *pt = &lw->body.patch;
        p[0] = lw->tid, p[1] = lw->sub, p[2] = pt->has_username ? pt->username : NULL;
        p[3] = pt->has_email ? pt->email : NULL, p[4] = ip, p[5] = lw->request_id;
        w->q.params_count = 6;
        auth_send(NULL, w, STORE_USER_PATCH, me_respond, NULL);
        return;
    }
    }
}

/* The token is checked against the tenant's keys; revoke what it names. */
static void user_check(struct user_wait *lw, const struct auth_tenant *tenant)
{
    struct auth_wait *w = &lw->w;
    const struct jwt_claims *c = NULL;
    struct slice token = slice_make(lw->bearer.token, lw->token_len);
    if (auth_access_check(w->auth, w->loop, lw->slug, tenant, token, &c) != 0) {
        http_resume(lw, auth_respond_invalid_token);
        return;
    }
    if (!auth_uuid_text(c->sid) || !auth_uuid_text(c->sub) || !auth_uuid_text(c->tid)) {
        if (lw->mode == USERINFO) /* a client's own token names no user */
            http_resume(lw, auth_respond_invalid_token);
        else
            auth_answer(w, 400, "the token belongs to no user session");
        return;
    }
    if (lw->mode == USERINFO && !auth_words_subset("openid", c->scope)) {
        http_resume(lw, userinfo_forbidden);
        return;
    }
    const char *why = NULL; /* the token is done with: the key is made where it was */
    int refused = lw->mode == KEYS_CREATE ? auth_key_new_make(&lw->body.key, &lw->bearer.key, c->scope, &why) : 0;
    if (refused != 0) {
        auth_answer(w, refused, why);
        return;
    }
    memcpy(lw->tid, c->tid, sizeof(lw->tid)); /* each checked: 36 characters and a NUL */
    memcpy(lw->sid, c->sid, sizeof(lw->sid));
    memcpy(lw->sub, c->sub, sizeof(lw->sub));
    snprintf(lw->client_id, sizeof(lw->client_id), "%s", c->client_id);
    if (lw->mode == USERINFO)
        memcpy(lw->bearer.scope, c->scope, sizeof(lw->bearer.scope)); /* the token is done with */
    user_send(lw);
}

static void user_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    if (tenant == NULL) {
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    user_check((struct user_wait *)w, tenant);
    auth_tenant_put(auth, loop, tenant);
}

/* PATCH /me's body: {"username": …, "email": …}, at least one; "" as email removes it. The
 * reason it is refused, or NULL. */
static const char *me_patch_parse(const struct http_ctx *ctx, struct user_patch *pt)
{
    struct jscan_object obj;
    const char *why = auth_json_object(ctx, &obj);
    if (why != NULL)
        return why;
    size_t ulen = 0, elen = 0;
    why = auth_json_string(&obj, "username", pt->username, AUTH_USERNAME_MAX, &ulen, &pt->has_username);
    if (why == NULL)
        why = auth_json_string(&obj, "email", pt->email, AUTH_EMAIL_MAX, &elen, &pt->has_email);
    if (why != NULL)
        return why;
    if (!pt->has_username && !pt->has_email)
        return "nothing to change: give username or email";
    if (pt->has_username && (why = auth_username_normalise(pt->username, &ulen)) != NULL)
        return why; /* stored normalised, as at sign-up (SECURITY P06) */
    if (pt->has_email && elen > 0 && !auth_email_valid(pt->email, elen))
        return "email is not an address";
    return NULL;
}

static void user_start(struct http_ctx *ctx, enum user_mode mode)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    char target[CT_UUID_TEXT_LEN + 1] = "";
    if (mode == SESSIONS_REVOKE || mode == KEYS_REVOKE) {
        struct slice id = ctx->params[1];
        if (id.len == CT_UUID_TEXT_LEN)
            memcpy(target, id.ptr, id.len);
        if (!auth_uuid_text(target)) {
            http_respond_problem(ctx, 404, mode == KEYS_REVOKE ? "no such API key" : "no such session");
            return;
        }
    }
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    struct slice token = h ? http_auth_bearer(h->value) : slice_make(NULL, 0);
    if (token.len == 0 || token.len > AUTH_ACCESS_TOKEN_MAX) {
        auth_respond_invalid_token(ctx, NULL);
        return;
    }
    struct user_wait *lw = auth_park(ctx, auth, sizeof(*lw));
    if (lw == NULL)
        return;
    lw->mode = mode;
    memcpy(lw->target, target, sizeof(lw->target));
    const char *why = mode == ME_PATCH      ? me_patch_parse(ctx, &lw->body.patch)
                      : mode == KEYS_CREATE ? auth_key_new_parse(ctx, &lw->body.key)
                                            : NULL;
    if (why != NULL) {
        http_respond_problem(ctx, 400, why); /* the park is undone */
        return;
    }
    memcpy(lw->bearer.token, token.ptr, token.len);
    lw->token_len = token.len;
    auth_slug_copy(ctx->params[0], lw->slug);
    snprintf(lw->slack_text, sizeof(lw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    http_client_address(ctx, lw->ip, sizeof(lw->ip));
    auth_request_id(ctx, lw->request_id, sizeof(lw->request_id));
    if (auth_tenant_cached(auth, ctx->loop, lw->slug) == NULL)
        auth_tenant_get(ctx, &lw->w, lw->slug, user_keys_ready);
    else
        user_check(lw, NULL);
}

static void logout_post(struct http_ctx *ctx)
{
    user_start(ctx, LOGOUT_THIS);
}

static void logout_all_post(struct http_ctx *ctx)
{
    user_start(ctx, LOGOUT_ALL);
}

static void sessions_get(struct http_ctx *ctx)
{
    user_start(ctx, SESSIONS_LIST);
}

static void sessions_delete(struct http_ctx *ctx)
{
    user_start(ctx, SESSIONS_REVOKE);
}

static void me_get(struct http_ctx *ctx)
{
    user_start(ctx, ME_GET);
}

static void me_patch(struct http_ctx *ctx)
{
    user_start(ctx, ME_PATCH);
}

static void userinfo(struct http_ctx *ctx)
{
    user_start(ctx, USERINFO);
}

static void keys_post(struct http_ctx *ctx)
{
    user_start(ctx, KEYS_CREATE);
}

static void keys_get(struct http_ctx *ctx)
{
    user_start(ctx, KEYS_LIST);
}

static void keys_delete(struct http_ctx *ctx)
{
    user_start(ctx, KEYS_REVOKE);
}

int auth_logout_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/auth/logout", "logout",
                            logout_post, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/auth/logout-all",
                                       "logout_all", logout_all_post, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/api/v1/me/sessions",
                                       "sessions_list", sessions_get, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_DELETE, "/t/{tenant}/api/v1/me/sessions/{id}",
                                       "sessions_revoke", sessions_delete, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/api/v1/me", "me", me_get, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/me/api-keys", "api_keys_create",
                                       keys_post, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/api/v1/me/api-keys", "api_keys_list",
                                       keys_get, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_DELETE, "/t/{tenant}/api/v1/me/api-keys/{id}",
                                       "api_keys_revoke", keys_delete, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/userinfo", "userinfo", userinfo, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/userinfo", "userinfo", userinfo, auth);
    return rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_PATCH, "/t/{tenant}/api/v1/me", "me_patch", me_patch,
                                         auth);
}
