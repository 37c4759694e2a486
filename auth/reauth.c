/* auth/reauth.c: the two endpoints that ask a signed-in user for their password again before
 * acting (issue 6). A stolen access token alone must change nothing of the account (OWASP
 * Authentication Cheat Sheet, "re-authentication for sensitive features").
 *
 * POST /t/{tenant}/api/v1/me/password, a user changing their own password:
 *   Authorization: Bearer <the user's access token>
 *   {"current_password": "...", "new_password": "..."}
 *   → 204 once the new hash is committed and every other session of the user is revoked
 *     (the asking one stays: OWASP Session Management Cheat Sheet, "renew after privilege
 *     change"; SECURITY P13)
 *   → 400 for a malformed body or a refused new password (length, the common list, P08/P09;
 *     invalid UTF-8 or a control character, P07: both passwords are normalised as RFC 8265
 *     §4.2 OpaqueString, auth/input.c); 403 when the current password is wrong.
 *
 * DELETE /t/{tenant}/api/v1/me, a user deleting their own account:
 *   Authorization: Bearer <the user's access token>
 *   {"password": "..."}
 *   → 204 once the account is soft-deleted (deleted_at set: the username and the address are
 *     free again), every session of it revoked with the user's revocations spread (DESIGN §1:
 *     every access token refused at once, every refresh token invalid_grant) and the audit row
 *     user_deleted (actor_kind 'user') committed in the same statement
 *   → 400 for a malformed body or no password; 403 when the password is wrong.
 *
 * Both: 401 (WWW-Authenticate Bearer) for a missing, invalid or session-less token; 404 for a
 * user disabled or deleted meanwhile; 415 without application/json; 503 when Postgres or the
 * worker pool is busy.
 *
 * The stages: the token's shape and the body checked on the shard → the tenant's keys
 * (auth/tenants.c) and the token verified → the stored hash read from the primary → on the
 * worker pool, never on a shard: the password verified against it (Argon2id or an imported
 * bcrypt hash, normalised as login does) and, for a change, the new one hashed → one statement
 * commits the change with its revocations and its audit row (STORE_USER_PASSWORD_SET: the
 * hash, the lockout cleared, the other sessions' 'sid' revocations, password_changed;
 * STORE_USER_DELETE) → the revocations spread → 204. A wrong password is not counted toward
 * the lockout: the caller already holds a valid session. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "crypto/jscan.h"
#include "proto/http_auth.h"

/* Tessera's own access tokens stay under 4 KiB (auth/token.c); with both passwords the
 * parked state must still fit HTTP_PARK_STATE_MAX. */
#define REAUTH_TOKEN_MAX 4096
#define REAUTH_NUM_TEXT 16 /* an int parameter as decimal text */

enum reauth_then { REAUTH_CHANGE_PASSWORD, REAUTH_DELETE_ACCOUNT };

struct reauth_wait {
    struct auth_wait w;
    struct worker_job job;
    enum reauth_then then;
    int verify_rc;  /* the worker's: the password against the stored hash */
    int hash_rc;    /* a change's new hash: its length, or a negated core/err.h code */
    size_t token_len;
    size_t current_len;
    size_t new_len;
    char slug[AUTH_SLUG_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];
    char sub[CT_UUID_TEXT_LEN + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[AUTH_ADMIN_REQUEST_ID_MAX + 1];
    char slack_text[REAUTH_NUM_TEXT];
    char stored[PASSWORD_HASH_MAX + 1];
    char hash[PASSWORD_HASH_MAX + 1];
    char current[PASSWORD_INPUT_MAX + 1];
    char next[PASSWORD_INPUT_MAX + 1];
    char token[REAUTH_TOKEN_MAX];
};

_Static_assert(sizeof(struct reauth_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define REAUTH_OF(jobp) ((struct reauth_wait *)((char *)(jobp) - offsetof(struct reauth_wait, job)))

static void reauth_forget(struct reauth_wait *rw)
{
    explicit_bzero(rw->current, sizeof(rw->current));
    explicit_bzero(rw->next, sizeof(rw->next));
    explicit_bzero(rw->hash, sizeof(rw->hash));
    explicit_bzero(rw->stored, sizeof(rw->stored));
}

/* ---- The change or the deletion ------------------------------------------------------------- */

static void reauth_committed(struct auth_wait *w)
{
    reauth_forget((struct reauth_wait *)w); /* a new hash was a parameter until now */
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

static void reauth_run(struct worker_job *job)
{
    struct reauth_wait *rw = REAUTH_OF(job);
    const struct password_policy *policy = &rw->w.auth->passwords;
    /* No stored hash (an account without a password): the dummy is verified, and fails. The
     * password as login verifies it (SECURITY P07); a new one was normalised at parsing. */
    rw->verify_rc = auth_password_verify(policy, rw->stored[0] ? rw->stored : NULL, rw->current,
                                         rw->current_len);
    rw->hash_rc = rw->verify_rc == 0 && rw->then == REAUTH_CHANGE_PASSWORD
                      ? password_hash(policy, rw->next, rw->new_len, rw->hash, sizeof(rw->hash))
                      : 0;
    explicit_bzero(rw->current, sizeof(rw->current));
    explicit_bzero(rw->next, sizeof(rw->next));
}

static void reauth_run_done(struct worker_job *job)
{
    struct reauth_wait *rw = REAUTH_OF(job);
    if (auth_job_abandoned(&rw->w, job)) {
        reauth_forget(rw);
        auth_answer_abandoned(&rw->w);
        return;
    }
    if (rw->verify_rc != 0) {
        reauth_forget(rw);
        auth_answer(&rw->w, 403, rw->then == REAUTH_CHANGE_PASSWORD ? "the current password is wrong"
                                                                    : "the password is wrong");
        return;
    }
    if (rw->hash_rc < 0) {
        reauth_forget(rw);
        log_msg(LOG_ERROR, "password hashing failed", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return;
    }
    const char **p = rw->w.q.params;
    bool change = rw->then == REAUTH_CHANGE_PASSWORD;
    p[0] = rw->tid, p[1] = rw->sub;
    p[2] = change ? rw->hash : "user"; /* the deletion's actor kind */
    p[3] = change ? rw->sid : rw->sub; /* the session kept; the deletion's actor */
    p[4] = rw->slack_text, p[5] = rw->ip[0] ? rw->ip : NULL, p[6] = rw->request_id;
    rw->w.q.params_count = 7;
    auth_send(NULL, &rw->w, change ? STORE_USER_PASSWORD_SET : STORE_USER_DELETE, NULL, reauth_committed);
}

static void reauth_stored(struct auth_wait *w)
{
    struct reauth_wait *rw = (struct reauth_wait *)w;
    if (w->outcome != PG_OK) {
        reauth_forget(rw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) {
        reauth_forget(rw);
        auth_answer(w, 404, "no such user");
        return;
    }
    const char *stored = pg_result_is_null(w->result, 0, 0) ? "" : pg_result_value(w->result, 0, 0);
    snprintf(rw->stored, sizeof(rw->stored), "%s", stored); /* longer than any PHC string: refused */
    rw->job.run = reauth_run;
    rw->job.done = reauth_run_done;
    if (auth_submit_hash(w, &rw->job) != 0) {
        reauth_forget(rw);
        auth_answer(w, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

/* ---- The token ------------------------------------------------------------------------------ */

static void reauth_check(struct reauth_wait *rw, const struct auth_tenant *tenant)
{
    struct auth_wait *w = &rw->w;
    const struct jwt_claims *c = NULL;
    struct slice token = slice_make(rw->token, rw->token_len);
    if (auth_access_check(w->auth, w->loop, rw->slug, tenant, token, &c) != 0 ||
        strlen(c->sid) != CT_UUID_TEXT_LEN || strlen(c->sub) != CT_UUID_TEXT_LEN ||
        strlen(c->tid) != CT_UUID_TEXT_LEN) {
        reauth_forget(rw);
        http_resume(rw, auth_respond_invalid_token); /* a client's own token has no session */
        return;
    }
    memcpy(rw->tid, c->tid, sizeof(rw->tid));
    memcpy(rw->sub, c->sub, sizeof(rw->sub));
    memcpy(rw->sid, c->sid, sizeof(rw->sid));
    w->q.params[0] = rw->tid;
    w->q.params[1] = rw->sub;
    w->q.params_count = 2;
    auth_send(NULL, w, STORE_USER_PASSWORD_HASH, NULL, reauth_stored);
}

static void reauth_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct reauth_wait *rw = (struct reauth_wait *)w;
    if (tenant == NULL) {
        reauth_forget(rw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    reauth_check(rw, tenant); /* w may be gone after this */
    auth_tenant_put(auth, loop, tenant);
}

/* ---- The request -------------------------------------------------------------------------- */

static const char *reauth_parse_change(struct reauth_wait *rw, const struct jscan_object *obj)
{
    bool has_current = false, has_new = false;
    const char *why = auth_json_string(obj, "current_password", rw->current, PASSWORD_INPUT_MAX,
                                       &rw->current_len, &has_current);
    if (why == NULL)
        why = auth_json_string(obj, "new_password", rw->next, PASSWORD_INPUT_MAX, &rw->new_len, &has_new);
    if (why != NULL)
        return why;
    if (!has_current || !has_new)
        return "current_password and new_password are required";
    if (rw->new_len == rw->current_len && memcmp(rw->next, rw->current, rw->new_len) == 0)
        return "the new password must differ from the current one";
    return auth_new_password_refused(rw->next, &rw->new_len); /* normalised: P07 */
}

static const char *reauth_parse_delete(struct reauth_wait *rw, const struct jscan_object *obj)
{
    bool has_password = false;
    const char *why = auth_json_string(obj, "password", rw->current, PASSWORD_INPUT_MAX,
                                       &rw->current_len, &has_password);
    if (why != NULL)
        return why;
    if (!has_password || rw->current_len == 0)
        return "password is required";
    return NULL;
}

static void reauth_keep_request(struct http_ctx *ctx, struct reauth_wait *rw, struct slice token)
{
    memcpy(rw->token, token.ptr, token.len);
    rw->token_len = token.len;
    auth_slug_copy(ctx->params[0], rw->slug);
    http_client_address(ctx, rw->ip, sizeof(rw->ip));
    auth_request_id(ctx, rw->request_id, sizeof(rw->request_id));
    snprintf(rw->slack_text, sizeof(rw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
}

static void reauth_start(struct http_ctx *ctx, enum reauth_then then)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    struct slice token = h ? http_auth_bearer(h->value) : slice_make(NULL, 0);
    if (token.len == 0 || token.len > REAUTH_TOKEN_MAX) {
        auth_respond_invalid_token(ctx, NULL);
        return;
    }
    struct reauth_wait *rw = auth_json_request(ctx, sizeof(*rw));
    if (rw == NULL)
        return; /* answered */
    rw->then = then;
    struct jscan_object obj;
    const char *why = jscan_object(ctx->body.ptr, ctx->body.len, &obj) != 0 ? "the body is not a JSON object"
                      : then == REAUTH_CHANGE_PASSWORD                     ? reauth_parse_change(rw, &obj)
                                                                           : reauth_parse_delete(rw, &obj);
    if (why != NULL) {
        reauth_forget(rw);
        http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return;
    }
    reauth_keep_request(ctx, rw, token);
    if (auth_tenant_cached(rw->w.auth, ctx->loop, rw->slug) == NULL)
        auth_tenant_get(ctx, &rw->w, rw->slug, reauth_keys_ready);
    else
        reauth_check(rw, NULL);
}

static void reauth_password_post(struct http_ctx *ctx)
{
    reauth_start(ctx, REAUTH_CHANGE_PASSWORD);
}

static void reauth_me_delete(struct http_ctx *ctx)
{
    reauth_start(ctx, REAUTH_DELETE_ACCOUNT);
}

int auth_reauth_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/me/password", "password_change",
                            reauth_password_post, auth);
    return rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_DELETE, "/t/{tenant}/api/v1/me", "me_delete",
                                         reauth_me_delete, auth);
}
