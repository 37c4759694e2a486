/* auth/me_delete.c: DELETE /t/{tenant}/api/v1/me, a user deleting their own account (issue 6).
 *
 *   Authorization: Bearer <the user's access token>
 *   {"password": "..."}
 *   → 204 once the account is soft-deleted (deleted_at set: the username and the address are
 *     free again), every session of it revoked with its 'sid' revocation spread (DESIGN §1:
 *     every access token refused at once, every refresh token invalid_grant) and the audit row
 *     user_deleted (actor_kind 'user') committed in the same statement
 *   → 401 (WWW-Authenticate Bearer) for a missing, invalid or session-less token; 400 for a
 *     malformed body or no password; 403 when the password is wrong; 404 for a user disabled
 *     or deleted meanwhile; 415 without application/json; 503 when Postgres or the worker
 *     pool is busy.
 *
 * The password is asked again although the token is valid: a stolen access token alone must
 * not destroy an account (OWASP Authentication Cheat Sheet, "re-authentication for sensitive
 * features"). It is checked as POST /me/password checks the current one (auth/password_change.c):
 * the stored hash read from the primary, then Argon2id (or an imported bcrypt hash) on the
 * worker pool, never on a shard; a wrong password is not counted toward the lockout, as there. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "crypto/jscan.h"
#include "proto/http_auth.h"

/* Tessera's own access tokens stay under 4 KiB (auth/token.c); with the password and the
 * stored hash the parked state must still fit HTTP_PARK_STATE_MAX. */
#define MEDEL_TOKEN_MAX 4096
#define MEDEL_NUM_TEXT 16 /* an int parameter as decimal text */

struct medel_wait {
    struct auth_wait w;
    struct worker_job job;
    int verify_rc; /* the worker's: the password against the stored hash */
    size_t token_len;
    size_t password_len;
    char slug[AUTH_SLUG_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];
    char sub[CT_UUID_TEXT_LEN + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[AUTH_ADMIN_REQUEST_ID_MAX + 1];
    char slack_text[MEDEL_NUM_TEXT];
    char stored[PASSWORD_HASH_MAX + 1];
    char password[PASSWORD_INPUT_MAX + 1];
    char token[MEDEL_TOKEN_MAX];
};

_Static_assert(sizeof(struct medel_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define MEDEL_OF(jobp) ((struct medel_wait *)((char *)(jobp) - offsetof(struct medel_wait, job)))

static void medel_forget(struct medel_wait *mw)
{
    explicit_bzero(mw->password, sizeof(mw->password));
    explicit_bzero(mw->stored, sizeof(mw->stored));
}

/* ---- The deletion --------------------------------------------------------------------------- */

static void medel_committed(struct auth_wait *w)
{
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

static void medel_run(struct worker_job *job)
{
    struct medel_wait *mw = MEDEL_OF(job);
    /* No stored hash (an account without a password): the dummy is verified, and fails. The
     * password is normalised as login normalises it (auth/input.c, SECURITY P07). */
    mw->verify_rc = auth_password_verify(&mw->w.auth->passwords, mw->stored[0] ? mw->stored : NULL,
                                         mw->password, mw->password_len);
    explicit_bzero(mw->password, sizeof(mw->password));
}

static void medel_run_done(struct worker_job *job)
{
    struct medel_wait *mw = MEDEL_OF(job);
    medel_forget(mw);
    if (auth_job_abandoned(&mw->w, job)) {
        auth_answer(&mw->w, 503, AUTH_BUSY_DETAIL);
        return;
    }
    if (mw->verify_rc != 0) {
        auth_answer(&mw->w, 403, "the password is wrong");
        return;
    }
    const char **p = mw->w.q.params;
    p[0] = mw->tid, p[1] = mw->sub, p[2] = "user", p[3] = mw->sub, p[4] = mw->slack_text;
    p[5] = mw->ip[0] ? mw->ip : NULL, p[6] = mw->request_id;
    mw->w.q.params_count = 7;
    auth_send(NULL, &mw->w, STORE_USER_DELETE, NULL, medel_committed);
}

static void medel_stored(struct auth_wait *w)
{
    struct medel_wait *mw = (struct medel_wait *)w;
    if (w->outcome != PG_OK) {
        medel_forget(mw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) {
        medel_forget(mw);
        auth_answer(w, 404, "no such user");
        return;
    }
    const char *stored = pg_result_is_null(w->result, 0, 0) ? "" : pg_result_value(w->result, 0, 0);
    /* Longer than any PHC string: truncated, and refused by the verification. */
    snprintf(mw->stored, sizeof(mw->stored), "%s", stored);
    mw->job.run = medel_run;
    mw->job.done = medel_run_done;
    if (auth_submit_hash(w, &mw->job) != 0) {
        medel_forget(mw);
        auth_answer(w, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

/* ---- The token ------------------------------------------------------------------------------ */

static void medel_check(struct medel_wait *mw, const struct auth_tenant *tenant)
{
    struct auth_wait *w = &mw->w;
    const struct jwt_claims *c = NULL;
    struct slice token = slice_make(mw->token, mw->token_len);
    if (auth_access_check(w->auth, w->loop, mw->slug, tenant, token, &c) != 0 ||
        strlen(c->sid) != CT_UUID_TEXT_LEN || strlen(c->sub) != CT_UUID_TEXT_LEN ||
        strlen(c->tid) != CT_UUID_TEXT_LEN) {
        medel_forget(mw);
        http_resume(mw, auth_respond_invalid_token); /* a client's own token has no session, no user */
        return;
    }
    memcpy(mw->tid, c->tid, sizeof(mw->tid));
    memcpy(mw->sub, c->sub, sizeof(mw->sub));
    w->q.params[0] = mw->tid;
    w->q.params[1] = mw->sub;
    w->q.params_count = 2;
    auth_send(NULL, w, STORE_USER_PASSWORD_HASH, NULL, medel_stored);
}

static void medel_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct medel_wait *mw = (struct medel_wait *)w;
    if (tenant == NULL) {
        medel_forget(mw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    medel_check(mw, tenant); /* w may be gone after this */
    auth_tenant_put(auth, loop, tenant);
}

/* ---- The request -------------------------------------------------------------------------- */

static const char *medel_parse(struct medel_wait *mw, struct slice body)
{
    struct jscan_object obj;
    if (jscan_object(body.ptr, body.len, &obj) != 0)
        return "the body is not a JSON object";
    bool has_password = false;
    const char *why = auth_json_string(&obj, "password", mw->password, PASSWORD_INPUT_MAX,
                                       &mw->password_len, &has_password);
    if (why != NULL)
        return why;
    if (!has_password || mw->password_len == 0)
        return "password is required";
    return NULL;
}

static void medel_keep_request(struct http_ctx *ctx, struct medel_wait *mw, struct slice token)
{
    memcpy(mw->token, token.ptr, token.len);
    mw->token_len = token.len;
    auth_slug_copy(ctx->params[0], mw->slug);
    auth_peer_ip(ctx, mw->ip, sizeof(mw->ip));
    size_t id_len = ctx->request_id.len < AUTH_ADMIN_REQUEST_ID_MAX ? ctx->request_id.len
                                                                    : AUTH_ADMIN_REQUEST_ID_MAX;
    memcpy(mw->request_id, ctx->request_id.ptr, id_len);
    mw->request_id[id_len] = '\0';
    snprintf(mw->slack_text, sizeof(mw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
}

static void medel_delete(struct http_ctx *ctx)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    struct slice token = h ? http_auth_bearer(h->value) : slice_make(NULL, 0);
    if (token.len == 0 || token.len > MEDEL_TOKEN_MAX) {
        auth_respond_invalid_token(ctx, NULL);
        return;
    }
    struct medel_wait *mw = auth_json_request(ctx, sizeof(*mw));
    if (mw == NULL)
        return; /* answered */
    const char *why = medel_parse(mw, ctx->body);
    if (why != NULL) {
        medel_forget(mw);
        http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return;
    }
    medel_keep_request(ctx, mw, token);
    if (auth_tenant_cached(mw->w.auth, ctx->loop, mw->slug) == NULL)
        auth_tenant_get(ctx, &mw->w, mw->slug, medel_keys_ready);
    else
        medel_check(mw, NULL);
}

int auth_me_delete_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_DELETE, "/t/{tenant}/api/v1/me", "me_delete",
                          medel_delete, auth);
}
