/* auth/password_change.c: POST /t/{tenant}/api/v1/me/password, a user changing their own
 * password (issue 6).
 *
 *   Authorization: Bearer <the user's access token>
 *   {"current_password": "...", "new_password": "..."}
 *   → 204 once the new hash is committed and every other session of the user is revoked
 *     (the asking one stays: OWASP Session Management Cheat Sheet, "renew after privilege
 *     change"; SECURITY P13)
 *   → 401 (WWW-Authenticate Bearer) for a missing, invalid or session-less token; 400 for a
 *     malformed body or a refused new password (length, the common list, P08/P09; invalid
 *     UTF-8 or a control character, P07: both passwords are normalised as RFC 8265 §4.2
 *     OpaqueString, auth/input.c); 403 when
 *     the current password is wrong; 404 for a user disabled or deleted meanwhile; 415
 *     without application/json; 503 when Postgres or the worker pool is busy.
 *
 * The stages: the token's shape and the body checked on the shard → the tenant's keys
 * (auth/tenants.c) and the token verified → the stored hash read from the primary → on the
 * worker pool, never on a shard: the current password verified against it (Argon2id or an
 * imported bcrypt hash) and the new one hashed → one statement sets the hash, clears the
 * lockout, revokes every other session with its 'sid' revocation and writes the audit row
 * password_changed → the revocations spread (DESIGN §1) → 204. A wrong current password is
 * not counted toward the lockout: the caller already holds a valid session. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "crypto/jscan.h"
#include "proto/http_auth.h"

/* Tessera's own access tokens stay under 4 KiB (auth/token.c); with both passwords the
 * parked state must still fit HTTP_PARK_STATE_MAX. */
#define PWCHANGE_TOKEN_MAX 4096
#define PWCHANGE_REQUEST_ID_MAX 64 /* the X-Request-Id kept for the audit row */
#define PWCHANGE_NUM_TEXT 16       /* an int parameter as decimal text */

struct pwchange_wait {
    struct auth_wait w;
    struct worker_job job;
    int verify_rc;  /* the worker's: the current password against the stored hash */
    int hash_rc;    /* the new hash's length, or -TE_xxx */
    size_t token_len;
    size_t current_len;
    size_t new_len;
    char slug[AUTH_SLUG_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];
    char sub[CT_UUID_TEXT_LEN + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[PWCHANGE_REQUEST_ID_MAX + 1];
    char slack_text[PWCHANGE_NUM_TEXT];
    char stored[PASSWORD_HASH_MAX + 1];
    char hash[PASSWORD_HASH_MAX + 1];
    char current[PASSWORD_INPUT_MAX + 1];
    char next[PASSWORD_INPUT_MAX + 1];
    char token[PWCHANGE_TOKEN_MAX];
};

_Static_assert(sizeof(struct pwchange_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define PWCHANGE_OF(jobp) ((struct pwchange_wait *)((char *)(jobp) - offsetof(struct pwchange_wait, job)))

static void pwchange_forget(struct pwchange_wait *pw)
{
    explicit_bzero(pw->current, sizeof(pw->current));
    explicit_bzero(pw->next, sizeof(pw->next));
    explicit_bzero(pw->hash, sizeof(pw->hash));
    explicit_bzero(pw->stored, sizeof(pw->stored));
}

/* ---- The change -------------------------------------------------------------------------- */

static void pwchange_committed(struct auth_wait *w)
{
    pwchange_forget((struct pwchange_wait *)w); /* the hash was a parameter until now */
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) == 0) {
        auth_answer(w, 404, "no such user");
        return;
    }
    auth_session_spread(w);
    http_resume(w, auth_respond_no_content);
}

static void pwchange_run(struct worker_job *job)
{
    struct pwchange_wait *pw = PWCHANGE_OF(job);
    const struct password_policy *policy = &pw->w.auth->passwords;
    /* No stored hash (an account without a password): the dummy is verified, and fails. */
    /* The current password as login verifies it (SECURITY P07); the new one was normalised. */
    pw->verify_rc = auth_password_verify(policy, pw->stored[0] ? pw->stored : NULL, pw->current,
                                         pw->current_len);
    pw->hash_rc = pw->verify_rc == 0 ? password_hash(policy, pw->next, pw->new_len, pw->hash, sizeof(pw->hash))
                                     : -TE_INVAL;
    explicit_bzero(pw->current, sizeof(pw->current));
    explicit_bzero(pw->next, sizeof(pw->next));
}

static void pwchange_run_done(struct worker_job *job)
{
    struct pwchange_wait *pw = PWCHANGE_OF(job);
    if (auth_job_abandoned(&pw->w, job)) {
        pwchange_forget(pw);
        auth_answer(&pw->w, 503, AUTH_BUSY_DETAIL);
        return;
    }
    if (pw->verify_rc != 0) {
        pwchange_forget(pw);
        auth_answer(&pw->w, 403, "the current password is wrong");
        return;
    }
    if (pw->hash_rc < 0) {
        pwchange_forget(pw);
        log_msg(LOG_ERROR, "password hashing failed", NULL);
        auth_answer(&pw->w, 500, "internal error");
        return;
    }
    const char **p = pw->w.q.params;
    p[0] = pw->tid, p[1] = pw->sub, p[2] = pw->hash, p[3] = pw->sid, p[4] = pw->slack_text;
    p[5] = pw->ip[0] ? pw->ip : NULL, p[6] = pw->request_id;
    pw->w.q.params_count = 7;
    auth_send(NULL, &pw->w, STORE_USER_PASSWORD_SET, NULL, pwchange_committed);
}

static void pwchange_stored(struct auth_wait *w)
{
    struct pwchange_wait *pw = (struct pwchange_wait *)w;
    if (w->outcome != PG_OK) {
        pwchange_forget(pw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) {
        pwchange_forget(pw);
        auth_answer(w, 404, "no such user");
        return;
    }
    const char *stored = pg_result_is_null(w->result, 0, 0) ? "" : pg_result_value(w->result, 0, 0);
    snprintf(pw->stored, sizeof(pw->stored), "%s", stored); /* longer than any PHC string: refused */
    pw->job.run = pwchange_run;
    pw->job.done = pwchange_run_done;
    if (auth_submit_hash(w, &pw->job) != 0) {
        pwchange_forget(pw);
        auth_answer(w, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

/* ---- The token ------------------------------------------------------------------------------ */

static void pwchange_check(struct pwchange_wait *pw, const struct auth_tenant *tenant)
{
    struct auth_wait *w = &pw->w;
    const struct jwt_claims *c = NULL;
    struct slice token = slice_make(pw->token, pw->token_len);
    if (auth_access_check(w->auth, w->loop, pw->slug, tenant, token, &c) != 0 ||
        strlen(c->sid) != CT_UUID_TEXT_LEN || strlen(c->sub) != CT_UUID_TEXT_LEN ||
        strlen(c->tid) != CT_UUID_TEXT_LEN) {
        pwchange_forget(pw);
        http_resume(pw, auth_respond_invalid_token); /* a client's own token has no session */
        return;
    }
    memcpy(pw->tid, c->tid, sizeof(pw->tid));
    memcpy(pw->sub, c->sub, sizeof(pw->sub));
    memcpy(pw->sid, c->sid, sizeof(pw->sid));
    w->q.params[0] = pw->tid;
    w->q.params[1] = pw->sub;
    w->q.params_count = 2;
    auth_send(NULL, w, STORE_USER_PASSWORD_HASH, NULL, pwchange_stored);
}

static void pwchange_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct pwchange_wait *pw = (struct pwchange_wait *)w;
    if (tenant == NULL) {
        pwchange_forget(pw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    pwchange_check(pw, tenant);
    auth_tenant_put(auth, loop, tenant);
}

/* ---- The request -------------------------------------------------------------------------- */

static const char *pwchange_parse(struct pwchange_wait *pw, struct slice body)
{
    struct jscan_object obj;
    if (jscan_object(body.ptr, body.len, &obj) != 0)
        return "the body is not a JSON object";
    bool has_current = false, has_new = false;
    const char *why = auth_json_string(&obj, "current_password", pw->current, PASSWORD_INPUT_MAX,
                                       &pw->current_len, &has_current);
    if (why == NULL)
        why = auth_json_string(&obj, "new_password", pw->next, PASSWORD_INPUT_MAX, &pw->new_len, &has_new);
    if (why != NULL)
        return why;
    if (!has_current || !has_new)
        return "current_password and new_password are required";
    if (pw->new_len == pw->current_len && memcmp(pw->next, pw->current, pw->new_len) == 0)
        return "the new password must differ from the current one";
    return auth_new_password_refused(pw->next, &pw->new_len); /* normalised: P07 */
}

static void pwchange_keep_request(struct http_ctx *ctx, struct pwchange_wait *pw, struct slice token)
{
    memcpy(pw->token, token.ptr, token.len);
    pw->token_len = token.len;
    auth_slug_copy(ctx->params[0], pw->slug);
    auth_peer_ip(ctx, pw->ip, sizeof(pw->ip));
    size_t id_len = ctx->request_id.len < PWCHANGE_REQUEST_ID_MAX ? ctx->request_id.len : PWCHANGE_REQUEST_ID_MAX;
    memcpy(pw->request_id, ctx->request_id.ptr, id_len);
    pw->request_id[id_len] = '\0';
    snprintf(pw->slack_text, sizeof(pw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
}

static void pwchange_post(struct http_ctx *ctx)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    struct slice token = h ? http_auth_bearer(h->value) : slice_make(NULL, 0);
    if (token.len == 0 || token.len > PWCHANGE_TOKEN_MAX) {
        auth_respond_invalid_token(ctx, NULL);
        return;
    }
    struct pwchange_wait *pw = auth_json_request(ctx, sizeof(*pw));
    if (pw == NULL)
        return;
    const char *why = pwchange_parse(pw, ctx->body);
    if (why != NULL) {
        pwchange_forget(pw);
        http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return;
    }
    pwchange_keep_request(ctx, pw, token);
    if (auth_tenant_cached(pw->w.auth, ctx->loop, pw->slug) == NULL)
        auth_tenant_get(ctx, &pw->w, pw->slug, pwchange_keys_ready);
    else
        pwchange_check(pw, NULL);
}

int auth_password_change_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/me/password", "password_change",
                          pwchange_post, auth);
}
