/* auth/register.c: POST /t/{tenant}/api/v1/register, self-service sign-up.
 *
 *   {"username": "...", "password": "...", "email": "..."}   (email optional)
 *   → 201 {"id", "username", "email", "email_verified": false, "created_at"}
 *
 * Only for a tenant whose settings say "registration": "open" (403 otherwise: closed is
 * the default, as in Keycloak). The username is stored normalised (RFC 8265 §3.3, SECURITY
 * P06: "Alice" and fullwidth "ａｌｉｃｅ" are "alice"; surrounding spaces are refused, as
 * before, and trimmed at login) and the password is hashed normalised (RFC 8265 §4.2, P07);
 * invalid UTF-8 in either is 400. The stages: the tenant by slug (Postgres) → the
 * password hashed with Argon2id on the worker pool, never on a shard (DESIGN §1; a full
 * pool is 503 + Retry-After, SECURITY F15) → the user and its audit row inserted in one
 * statement (a taken username or address is 409) → 201, only after the commit. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "crypto/jscan.h"

#define REGISTER_ID_MAX 64        /* the X-Request-Id kept for the audit row */

struct register_wait {
    struct auth_wait w;
    struct worker_job job;
    int hash_rc;
    char slug[AUTH_SLUG_MAX + 1];
    char tenant_id[40];
    char username[AUTH_USERNAME_MAX + 1];
    char email[AUTH_EMAIL_MAX + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[REGISTER_ID_MAX + 1];
    char hash[PASSWORD_HASH_MAX + 1];
    char password[PASSWORD_INPUT_MAX + 1];
    size_t password_len;
};

_Static_assert(sizeof(struct register_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* ---- Input ---------------------------------------------------------------------------------- */

/* A string member into dst; "" when absent and optional. The reason, or NULL when good. */
static const char *register_field(const struct jscan_object *obj, const char *name, bool required,
                                  char *dst, size_t max, size_t *len)
{
    bool seen = false;
    const char *why = auth_json_string(obj, name, dst, max, len, &seen);
    return why != NULL ? why : required && !seen ? "a required member is missing" : NULL;
}

/* Fills the account fields of rw from the body. The reason it is refused, or NULL. */
static const char *register_parse(struct register_wait *rw, struct slice body)
{
    struct jscan_object obj;
    if (jscan_object(body.ptr, body.len, &obj) != 0)
        return "the body is not a JSON object";
    size_t ulen = 0, elen = 0;
    const char *why = register_field(&obj, "username", true, rw->username, AUTH_USERNAME_MAX, &ulen);
    if (why == NULL)
        why = register_field(&obj, "password", true, rw->password, PASSWORD_INPUT_MAX, &rw->password_len);
    if (why == NULL)
        why = register_field(&obj, "email", false, rw->email, AUTH_EMAIL_MAX, &elen);
    if (why != NULL)
        return why;
    why = auth_username_normalise(rw->username, &ulen); /* the form stored (SECURITY P06) */
    if (why != NULL)
        return why;
    const char *refused = auth_new_password_refused(rw->password, &rw->password_len); /* P07 */
    if (refused != NULL)
        return refused;
    if (elen > 0 && !auth_email_valid(rw->email, elen))
        return "email is not an address";
    return NULL;
}

/* ---- Stages --------------------------------------------------------------------------------- */

static void register_forget(struct register_wait *rw)
{
    explicit_bzero(rw->password, sizeof(rw->password));
    explicit_bzero(rw->hash, sizeof(rw->hash));
}

static void register_respond(struct http_ctx *ctx, void *state)
{
    struct register_wait *rw = state;
    register_forget(rw);
    if (rw->w.outcome == PG_UNIQUE_VIOLATION) {
        http_respond_problem(ctx, 409, "that username or email address is taken");
        return;
    }
    if (rw->w.outcome != PG_OK || pg_result_rows(rw->w.result) != 1) {
        auth_respond_store_failure(ctx, rw->w.outcome == PG_OK ? PG_ERROR : rw->w.outcome);
        return;
    }
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"id\":");
    const char *id = pg_result_value(rw->w.result, 0, 0);
    buf_append_json_string(&body, slice_make(id, strlen(id)));
    buf_append_cstr(&body, ",\"username\":");
    buf_append_json_string(&body, slice_make(rw->username, strlen(rw->username)));
    buf_append_cstr(&body, ",\"email\":");
    if (rw->email[0])
        buf_append_json_string(&body, slice_make(rw->email, strlen(rw->email)));
    else
        buf_append_cstr(&body, "null");
    buf_append_cstr(&body, ",\"email_verified\":false,\"created_at\":");
    const char *created = pg_result_value(rw->w.result, 0, 1);
    buf_append_json_string(&body, slice_make(created, strlen(created)));
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 201, "application/json", buf_slice(&body));
}

/* On a worker thread: the only CPU-heavy step. */
static void register_hash_run(struct worker_job *job)
{
    struct register_wait *rw = (struct register_wait *)((char *)job - offsetof(struct register_wait, job));
    rw->hash_rc = password_hash(&rw->w.auth->passwords, rw->password, rw->password_len, rw->hash,
                                sizeof(rw->hash));
    explicit_bzero(rw->password, sizeof(rw->password));
}

/* Back on the shard: insert the user and its audit row. */
static void register_hash_done(struct worker_job *job)
{
    struct register_wait *rw = (struct register_wait *)((char *)job - offsetof(struct register_wait, job));
    if (rw->hash_rc < 0) {
        register_forget(rw);
        log_msg(LOG_ERROR, "password hashing failed", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return;
    }
    struct pg_query *q = &rw->w.q;
    q->params[0] = rw->tenant_id;
    q->params[1] = rw->username;
    q->params[2] = rw->email[0] ? rw->email : NULL;
    q->params[3] = rw->hash;
    q->params[4] = rw->ip[0] ? rw->ip : NULL;
    q->params[5] = rw->request_id;
    q->params_count = 6;
    auth_send(NULL, &rw->w, STORE_USER_REGISTER, register_respond, NULL);
}

/* The tenant is known (or not): hash the password off the shard. */
static void register_tenant_found(struct auth_wait *w)
{
    struct register_wait *rw = (struct register_wait *)w;
    if (w->outcome != PG_OK) {
        register_forget(rw);
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) == 0 || strcmp(pg_result_value(w->result, 0, 3), "t") != 0) {
        register_forget(rw);
        bool known = pg_result_rows(w->result) > 0;
        auth_answer(w, known ? 403 : 404, known ? "registration is closed for this tenant" : "no such tenant");
        return;
    }
    snprintf(rw->tenant_id, sizeof(rw->tenant_id), "%s", pg_result_value(w->result, 0, 0));
    rw->job.run = register_hash_run;
    rw->job.done = register_hash_done;
    if (workers_submit(w->auth->workers, loop_index(w->loop), &rw->job) != 0) {
        register_forget(rw);
        auth_answer(w, 503, "the server is busy; retry later");
    }
}

static void register_post(struct http_ctx *ctx)
{
    struct register_wait *rw = auth_json_request(ctx, sizeof(*rw));
    if (rw == NULL)
        return;
    const char *why = register_parse(rw, ctx->body);
    if (why != NULL) {
        register_forget(rw);
        http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return;
    }
    auth_slug_copy(ctx->params[0], rw->slug);
    auth_peer_ip(ctx, rw->ip, sizeof(rw->ip));
    size_t id_len = ctx->request_id.len < REGISTER_ID_MAX ? ctx->request_id.len : REGISTER_ID_MAX;
    memcpy(rw->request_id, ctx->request_id.ptr, id_len);
    rw->request_id[id_len] = '\0';
    rw->w.q.params[0] = rw->slug;
    rw->w.q.params_count = 1;
    if (!auth_send(ctx, &rw->w, STORE_TENANT_BY_SLUG, NULL, register_tenant_found))
        register_forget(rw);
}

int auth_register_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/register", "register",
                          register_post, auth);
}
