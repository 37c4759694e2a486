/* auth/code.c: the authorization_code grant of POST /t/{tenant}/oauth2/token (RFC 6749 §4.1.3,
 * RFC 7636 §4.5, OIDC Core §3.1.3), dispatched by auth/token.c.
 *
 *   code, redirect_uri, code_verifier; a confidential client authenticates, a public one
 *   names itself by client_id (RFC 6749 §2.1, §3.2.1)
 *   → 200 {access_token, token_type, expires_in, scope, refresh_token (with that grant),
 *          id_token (for an openid scope)} with no-store
 *
 * The stages: the caller authenticated and allowed the grant → the code read by its SHA-256
 * within the path's tenant, from the primary (SECURITY F03) → checked on the shard:
 *   - another client's code is invalid_grant and stays redeemable by its own (O13);
 *   - a code already consumed is invalid_grant, and what was issued from it is revoked
 *     (RFC 6749 §4.1.2, O11: its session and, through the revocation protocol, every access
 *     token of it);
 *   - an expired code (AUTH_CODE_TTL_S, O14), a redirect_uri that is not the authorize
 *     request's (O10), a missing or wrong code_verifier (O04, O06: compared in constant time,
 *     crypto/secret.h) are invalid_grant;
 * → the tenant's keys → the access token (RFC 9068, with the new session's sid) and the ID
 * token signed (auth_sign_job) → one statement consumes the code and makes the session with
 * its refresh token's SHA-256, conditionally: of concurrent redemptions exactly one commits
 * (O12) → the answer. */
#include "auth/auth_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "crypto/secret.h"

#define CODE_NUM_TEXT 16
/* Both tokens, as the parked request keeps them until the answer: an access token's room
 * (AUTH_SESSION_JWT_MAX: a full scope and an RSA-4096 signature) and 1 KiB more, which holds an
 * ID token under a public URL of usual length. Past it (a 1 KiB scope with an RSA-4096 key and
 * a long URL) the grant answers 500, logged: shorten the client's scopes. */
#define CODE_TOKENS_MAX (AUTH_SESSION_JWT_MAX + 1024)
#define CODE_ID_TOKEN_PAYLOAD_MAX 2048 /* iss (579), sub, aud (128), a VSCHAR nonce escaped
                                        * (512 at most), sid and the times */

static const char code_refused[] = "the authorization code is invalid, expired or already used";

struct code_wait {
    struct auth_wait w;
    struct worker_job job;
    struct auth_tenant *tenant;
    struct auth_client_wait cw;
    bool public_client;
    bool redirect_given;
    bool verifier_given;
    bool with_refresh;   /* the client has the refresh_token grant */
    bool with_id_token;  /* the scope holds openid */
    int access_len;      /* into tokens, then the ID token after it */
    int id_len;
    int64_t lifetime_s;
    int64_t auth_time;
    char code_sha[2 * HASH_SHA256_BYTES + 1];
    char authz[CT_UUID_TEXT_LEN + 1];
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    char user_id[CT_UUID_TEXT_LEN + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    char refresh[AUTH_REFRESH_TOKEN_LEN + 1];
    char refresh_sha[2 * HASH_SHA256_BYTES + 1];
    char nums[3][CODE_NUM_TEXT];
    char ip[AUTH_IP_MAX + 1];
    char request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1];
    char nonce[AUTH_NONCE_MAX + 1];
    union {
        struct { /* until the code is checked */
            char redirect_uri[AUTH_REDIRECT_URI_MAX + 1];
            char verifier[AUTH_CODE_VERIFIER_MAX + 1];
        } asked;
        char tokens[CODE_TOKENS_MAX]; /* then the access token, a NUL, the ID token */
    } u;
};

_Static_assert(sizeof(struct code_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define CODE_OF(j) ((struct code_wait *)((char *)(j) - offsetof(struct code_wait, job)))

static void code_forget(struct code_wait *cw)
{
    /* Through the struct's address: GCC's object-size check (-Wstringop-overflow) would take
     * &cw->u for the union member last written through and see a smaller object. */
    explicit_bzero((char *)cw + offsetof(struct code_wait, u), sizeof(cw->u));
    explicit_bzero(cw->refresh, sizeof(cw->refresh));
}

static void code_release(struct code_wait *cw)
{
    if (cw->tenant != NULL)
        auth_tenant_put(cw->w.auth, cw->w.loop, cw->tenant);
    cw->tenant = NULL;
}

/* RFC 6749 §5.2: every refused code looks the same to the caller. */
static void code_invalid(struct code_wait *cw)
{
    code_release(cw);
    code_forget(cw);
    auth_oauth_fail(&cw->w, 400, "invalid_grant", code_refused);
}

static void code_respond(struct http_ctx *ctx, void *state)
{
    struct code_wait *cw = state;
    struct auth_token_answer a = {
        .access = slice_make(cw->u.tokens, (size_t)cw->access_len), .lifetime_s = cw->lifetime_s,
        .scope = cw->scope, .refresh = cw->with_refresh ? cw->refresh : NULL,
        .id_token = cw->with_id_token ? slice_make(cw->u.tokens + cw->access_len + 1, (size_t)cw->id_len)
                                      : slice_make(NULL, 0),
    };
    auth_token_respond(ctx, &a);
    code_forget(cw);
}

/* ---- Signing --------------------------------------------------------------------------------- */

/* The ID token (OIDC Core §2, §3.1.3.6): for the client (aud), typ JWT so that it is never
 * taken for an access token (RFC 8725 §3.11; crypto/jwt.h checks typ at+jwt there). */
static int code_sign_id_token(const struct code_wait *cw, const char *issuer, int64_t iat, char *out, size_t cap)
{
    static _Thread_local char payload_mem[CODE_ID_TOKEN_PAYLOAD_MAX];
    struct buf p;
    buf_init(&p, payload_mem, sizeof(payload_mem));
    buf_append_cstr(&p, "{\"iss\":");
    buf_append_json_string(&p, slice_make(issuer, strlen(issuer)));
    buf_append_cstr(&p, ",\"sub\":");
    buf_append_json_string(&p, slice_make(cw->user_id, strlen(cw->user_id)));
    buf_append_cstr(&p, ",\"aud\":");
    buf_append_json_string(&p, slice_make(cw->cw.client_id, strlen(cw->cw.client_id)));
    buf_printf(&p, ",\"exp\":%" PRId64 ",\"iat\":%" PRId64 ",\"auth_time\":%" PRId64, iat + cw->lifetime_s, iat,
               cw->auth_time);
    if (cw->nonce[0] != '\0') {
        buf_append_cstr(&p, ",\"nonce\":");
        buf_append_json_string(&p, slice_make(cw->nonce, strlen(cw->nonce)));
    }
    buf_append_cstr(&p, ",\"sid\":");
    buf_append_json_string(&p, slice_make(cw->sid, strlen(cw->sid)));
    buf_append_cstr(&p, "}");
    if (p.overflow)
        return -TE_NOMEM;
    return jwt_sign(keyset_signing_key(&cw->tenant->keys), "JWT", buf_slice(&p), out, cap);
}

/* On a worker (or the shard for EdDSA and ES256): both tokens into u.tokens. */
static void code_sign_run(struct worker_job *job)
{
    struct code_wait *cw = CODE_OF(job);
    char issuer[AUTH_SESSION_ISSUER_MAX + 1]; /* made here: the parked state has no room for it */
    struct buf ib;
    buf_init(&ib, issuer, sizeof(issuer));
    auth_issuer(cw->w.auth, slice_make(cw->cw.slug, strlen(cw->cw.slug)), &ib);
    buf_append(&ib, "", 1);
    struct auth_user_token t = {
        .tenant = cw->tenant, .issuer = issuer, .sub = cw->user_id, .client_id = cw->cw.client_id,
        .scope = cw->scope, .sid = cw->sid, .lifetime_s = cw->lifetime_s,
    };
    cw->access_len = auth_session_sign(&t, cw->u.tokens, sizeof(cw->u.tokens));
    cw->id_len = 0;
    if (cw->access_len <= 0 || !cw->with_id_token)
        return;
    size_t used = (size_t)cw->access_len + 1;
    cw->u.tokens[used - 1] = '\0';
    cw->id_len = code_sign_id_token(cw, issuer, (int64_t)time(NULL), cw->u.tokens + used, sizeof(cw->u.tokens) - used);
}

static void code_send_reuse(struct code_wait *cw);

static void code_committed(struct auth_wait *w)
{
    struct code_wait *cw = (struct code_wait *)w;
    if (w->outcome != PG_OK) {
        code_forget(cw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) {
        /* Redeemed meanwhile by another request (O12): a code used twice, so what the winner
         * got is revoked as for a later replay (RFC 6749 §4.1.2; nothing when it expired or
         * its user was disabled instead). */
        code_forget(cw);
        code_send_reuse(cw);
        return;
    }
    http_resume(cw, code_respond);
}

static void code_sign_done(struct worker_job *job)
{
    struct code_wait *cw = CODE_OF(job);
    code_release(cw);
    if (cw->access_len <= 0 || (cw->with_id_token && cw->id_len <= 0)) {
        code_forget(cw);
        log_msg(LOG_ERROR, "signing the code grant's tokens failed (too long for CODE_TOKENS_MAX? a "
                "1 KiB scope with an RSA-4096 key)", "client", cw->cw.client_id, NULL);
        auth_answer(&cw->w, 500, "internal error");
        return;
    }
    snprintf(cw->nums[0], CODE_NUM_TEXT, "%d", AUTH_SESSION_IDLE_S);
    snprintf(cw->nums[1], CODE_NUM_TEXT, "%d", AUTH_SESSION_ABSOLUTE_S);
    const char **p = cw->w.q.params;
    p[0] = cw->tenant_id, p[1] = cw->authz, p[2] = cw->cw.client_id, p[3] = cw->sid;
    p[4] = cw->with_refresh ? cw->refresh_sha : NULL, p[5] = cw->ip[0] ? cw->ip : NULL;
    p[6] = NULL; /* the user agent is the client's back end, not the user's browser */
    p[7] = cw->nums[0], p[8] = cw->nums[1];
    cw->w.q.params_count = 9;
    auth_send(NULL, &cw->w, STORE_CODE_REDEEM, NULL, code_committed);
}

static void code_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct code_wait *cw = (struct code_wait *)w;
    if (tenant == NULL || !auth_tenant_signs(w, tenant)) {
        code_forget(cw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    cw->tenant = tenant;
    if (ct_uuid7_now(cw->sid) != 0 || /* a new session for every code */
        (cw->with_refresh && auth_refresh_make(cw->sid, cw->refresh, cw->refresh_sha) != 0)) {
        code_release(cw);
        code_forget(cw);
        auth_answer(w, 500, "internal error");
        return;
    }
    cw->job.run = code_sign_run;
    cw->job.done = code_sign_done;
    if (auth_sign_job(w, tenant, &cw->job) != 0) {
        code_release(cw);
        code_forget(cw);
        auth_answer(w, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

/* ---- The code ---------------------------------------------------------------------------------- */

static void code_reuse_committed(struct auth_wait *w)
{
    struct code_wait *cw = (struct code_wait *)w;
    if (w->outcome != PG_OK) {
        /* Refused either way; the revocation is what failed (logged with its outcome). */
        log_msg(LOG_WARN, "revoking what a reused authorization code issued failed", "outcome",
                pg_outcome_name(w->outcome), NULL);
    } else {
        auth_session_spread(w);
    }
    code_invalid(cw);
}

/* What a code used twice issued is revoked (STORE_CODE_REUSE), then invalid_grant. */
static void code_send_reuse(struct code_wait *cw)
{
    snprintf(cw->nums[0], CODE_NUM_TEXT, "%d", AUTH_SESSION_REVOKE_SLACK_S);
    const char **p = cw->w.q.params;
    p[0] = cw->tenant_id, p[1] = cw->authz, p[2] = cw->cw.client_id, p[3] = cw->nums[0];
    p[4] = cw->ip[0] ? cw->ip : NULL, p[5] = cw->request_id;
    cw->w.q.params_count = 6;
    auth_send(NULL, &cw->w, STORE_CODE_REUSE, NULL, code_reuse_committed);
}

/* RFC 6749 §4.1.3: the redirect_uri of the authorize request, when it sent one, byte for byte. */
static bool code_redirect_ok(const struct code_wait *cw, const char *stored, bool stored_given)
{
    if (!stored_given)
        return !cw->redirect_given || strcmp(cw->u.asked.redirect_uri, stored) == 0;
    return cw->redirect_given && strcmp(cw->u.asked.redirect_uri, stored) == 0;
}

/* Columns as STORE_CODE_READ. */
static void code_read(struct auth_wait *w)
{
    struct code_wait *cw = (struct code_wait *)w;
    const struct pg_result *r = w->result;
    if (w->outcome != PG_OK) {
        code_forget(cw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(r) != 1 || strcmp(pg_result_value(r, 0, 1), cw->cw.client_id) != 0) {
        code_invalid(cw); /* unknown, or another client's: left as it is (O13) */
        return;
    }
    snprintf(cw->authz, sizeof(cw->authz), "%s", pg_result_value(r, 0, 0));
    snprintf(cw->tenant_id, sizeof(cw->tenant_id), "%s", pg_result_value(r, 0, 7));
    if (strcmp(pg_result_value(r, 0, 5), "t") == 0) { /* consumed: a replay (O11) */
        code_send_reuse(cw);
        return;
    }
    bool client_ok = !pg_result_is_null(r, 0, 13) && strcmp(pg_result_value(r, 0, 13), "t") == 0;
    bool live = strcmp(pg_result_value(r, 0, 6), "f") == 0;
    const char *challenge = pg_result_value(r, 0, 2);
    struct slice verifier = slice_make(cw->u.asked.verifier, strlen(cw->u.asked.verifier));
    if (!client_ok || !live || !code_redirect_ok(cw, pg_result_value(r, 0, 3), strcmp(pg_result_value(r, 0, 4), "t") == 0) ||
        !cw->verifier_given || !secret_pkce_s256_check(verifier, slice_make(challenge, strlen(challenge)))) {
        code_invalid(cw);
        return;
    }
    snprintf(cw->user_id, sizeof(cw->user_id), "%s", pg_result_value(r, 0, 8));
    snprintf(cw->scope, sizeof(cw->scope), "%s", pg_result_value(r, 0, 9));
    snprintf(cw->nonce, sizeof(cw->nonce), "%s", pg_result_is_null(r, 0, 10) ? "" : pg_result_value(r, 0, 10));
    cw->auth_time = strtoll(pg_result_value(r, 0, 11), NULL, 10);
    cw->lifetime_s = strtoll(pg_result_value(r, 0, 12), NULL, 10);
    cw->with_refresh = strcmp(pg_result_value(r, 0, 14), "t") == 0;
    cw->with_id_token = auth_words_subset("openid", cw->scope);
    code_forget(cw); /* the asked redirect_uri and verifier are done with */
    auth_tenant_get(NULL, w, cw->cw.slug, code_keys_ready);
}

static void code_lookup(struct code_wait *cw)
{
    cw->w.q.params[0] = cw->cw.slug;
    cw->w.q.params[1] = cw->code_sha;
    cw->w.q.params_count = 2;
    auth_send(NULL, &cw->w, STORE_CODE_READ, NULL, code_read);
}

/* ---- The caller ---------------------------------------------------------------------------------- */

static void code_client_ready(struct auth_wait *w, const struct auth_client *client)
{
    struct code_wait *cw = (struct code_wait *)w;
    if (client == NULL) {
        code_forget(cw);
        auth_client_refused(w);
        return;
    }
    if (!auth_words_subset("authorization_code", client->grants)) {
        code_forget(cw);
        auth_oauth_fail(w, 400, "unauthorized_client", "the client may not use this grant type");
        return;
    }
    code_lookup(cw);
}

/* A public caller: its client row must exist in the tenant and have no secret (a
 * confidential client must authenticate, RFC 6749 §3.2.1). Columns as STORE_CLIENT_BY_ID. */
static void code_public_row(struct auth_wait *w)
{
    struct code_wait *cw = (struct code_wait *)w;
    if (w->outcome != PG_OK) {
        code_forget(cw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1 || !pg_result_is_null(w->result, 0, 2)) {
        code_forget(cw);
        auth_audit_client_failed(w, cw->cw.slug, cw->cw.client_id);
        auth_oauth_fail(w, 401, "invalid_client", "client authentication failed");
        return;
    }
    if (!auth_words_subset("authorization_code", pg_result_value(w->result, 0, 3))) {
        code_forget(cw);
        auth_oauth_fail(w, 400, "unauthorized_client", "the client may not use this grant type");
        return;
    }
    code_lookup(cw);
}

static void code_identify(struct http_ctx *ctx, struct code_wait *cw)
{
    if (!cw->public_client) {
        auth_client_authenticate(ctx, &cw->w, &cw->cw, false, code_client_ready);
        return;
    }
    cw->w.q.params[0] = cw->cw.client_id;
    cw->w.q.params[1] = cw->cw.slug;
    cw->w.q.params_count = 2;
    auth_send(ctx, &cw->w, STORE_CLIENT_BY_ID, NULL, code_public_row);
}

static void code_rate_passed(struct auth_wait *w)
{
    code_identify(NULL, (struct code_wait *)w);
}

void auth_code_grant(struct http_ctx *ctx, struct auth *auth, struct auth_client_creds *creds,
                     const struct auth_code_request *req)
{
    bool public_client = false;
    if (req->code[0] == '\0') {
        auth_oauth_error(ctx, 400, "invalid_request", "code is missing");
        return;
    }
    if (req->verifier_given && !secret_pkce_verifier_valid(slice_make(req->verifier, strlen(req->verifier)))) {
        auth_oauth_error(ctx, 400, "invalid_request", "code_verifier must be 43 to 128 unreserved characters");
        return;
    }
    if (strlen(req->redirect_uri) > AUTH_REDIRECT_URI_MAX) { /* as decoded; sent, it may be 3x */
        auth_oauth_error(ctx, 400, "invalid_request", "redirect_uri is too long");
        return;
    }
    if (auth_session_caller(ctx, creds, &public_client) != 0)
        return; /* answered */
    uint8_t code_digest[HASH_SHA256_BYTES];
    if (secret_client_parse(slice_make(req->code, strlen(req->code)), code_digest) != 0) {
        auth_oauth_error(ctx, 400, "invalid_grant", code_refused); /* not of Tessera's shape */
        return;
    }
    uint8_t secret_sha256[HASH_SHA256_BYTES];
    hash_sha256(creds->secret, strlen(creds->secret), secret_sha256);
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, auth, creds->client_id, public_client ? NULL : secret_sha256, &limits))
        return; /* answered 429 */
    struct code_wait *cw = auth_park(ctx, auth, sizeof(*cw));
    if (cw == NULL)
        return;
    auth_slug_copy(ctx->params[0], cw->cw.slug);
    memcpy(cw->cw.client_id, creds->client_id, sizeof(cw->cw.client_id));
    memcpy(cw->cw.secret_sha256, secret_sha256, sizeof(secret_sha256));
    cw->public_client = public_client;
    auth_sha256_hex(req->code, cw->code_sha);
    cw->redirect_given = req->redirect_given;
    snprintf(cw->u.asked.redirect_uri, sizeof(cw->u.asked.redirect_uri), "%s", req->redirect_uri);
    cw->verifier_given = req->verifier_given;
    snprintf(cw->u.asked.verifier, sizeof(cw->u.asked.verifier), "%s", req->verifier);
    http_client_address(ctx, cw->ip, sizeof(cw->ip));
    auth_request_id(ctx, cw->request_id, sizeof(cw->request_id));
    cw->w.rate = limits;
    if (!auth_rate_pending(&limits))
        code_identify(ctx, cw);
    else if (auth_rate_continue(ctx, &cw->w, code_rate_passed) != 0) {
        code_forget(cw);
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
}
