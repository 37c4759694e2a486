/* auth/register.c: POST /t/{tenant}/api/v1/register, self-service sign-up.
 *
 *   {"username": "...", "password": "..."}
 *   → 201 {"id", "username", "email": null, "email_verified": false, "created_at"}
 *   {"username": "...", "password": "...", "email": "..."}
 *   → 202 {"status": "verification_sent", "username", "email"}, whether or not the address
 *     already has an account (SECURITY P02, OWASP ASVS 4.0 §2.5)
 *   either: 409 for a taken username
 *
 * P02: the answer never tells whether an ADDRESS has an account. A free address gets the
 * user, unverified, and the verification mail /email/verify/request sends (the same link and
 * text: auth_mail_token, auth/recovery.c); a taken one gets no user, and its holder a mail
 * saying someone tried to sign up with it, with an audit row signup_address_taken (actor
 * system, target the holder). Both run the same Argon2id hash and build the same mails, then
 * ONE statement (store.c STORE_USER_SIGNUP) decides, so the answers differ by nothing and
 * their timing by a few inserts; mail leaves through the outbox, never from the request. The
 * 202 carries no id: the taken case could not give one. Usernames, by contrast, are public
 * handles (as in Keycloak and Auth0: shown to others, typed at login), so a taken username
 * stays 409, checked before the address: a taken username wins even when the address is
 * taken too.
 *
 * Only for a tenant whose settings say "registration": "open" (403 otherwise: closed is
 * the default, as in Keycloak). The username is stored normalised (RFC 8265 §3.3, SECURITY
 * P06: "Alice" and fullwidth "ａｌｉｃｅ" are "alice"; surrounding spaces are refused, as
 * before, and trimmed at login) and the password is hashed normalised (RFC 8265 §4.2, P07);
 * invalid UTF-8 in either is 400. The stages: the tenant by slug (Postgres) → the
 * password hashed with Argon2id on the worker pool, never on a shard (DESIGN §1; a full
 * pool is 503 + Retry-After, SECURITY F15) → the user and its audit row (with an address:
 * and its mail, as above) inserted in one statement → 201 or 202, only after the commit. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "crypto/jscan.h"

#define REGISTER_ID_MAX 64        /* the X-Request-Id kept for the audit row */
#define REGISTER_NUM_TEXT 16      /* the token's lifetime (s) as decimal text */
#define REGISTER_TAKEN_SUBJECT "Someone tried to sign up with your address"

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
    const char *verify_subject;
    char sha_hex[2 * HASH_SHA256_BYTES + 1];  /* the verification token's, as stored */
    char ttl_text[REGISTER_NUM_TEXT];
    char verify_body[AUTH_MAIL_BODY_MAX];     /* holds the token: wiped after the statement */
    char taken_body[AUTH_MAIL_BODY_MAX];
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
    explicit_bzero(rw->verify_body, sizeof(rw->verify_body));
}

/* The statement's failures: false when answered. Only the username's index can raise a unique
 * violation (an address conflict is the statement's own case, never an error). */
static bool register_stored(struct http_ctx *ctx, struct register_wait *rw)
{
    register_forget(rw);
    if (rw->w.outcome == PG_UNIQUE_VIOLATION) {
        http_respond_problem(ctx, 409, "that username is taken");
        return false;
    }
    if (rw->w.outcome != PG_OK || pg_result_rows(rw->w.result) != 1) {
        auth_respond_store_failure(ctx, rw->w.outcome == PG_OK ? PG_ERROR : rw->w.outcome);
        return false;
    }
    return true;
}

/* Sign-up without an address: 201 with the new user. */
static void register_respond(struct http_ctx *ctx, void *state)
{
    struct register_wait *rw = state;
    if (!register_stored(ctx, rw))
        return;
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"id\":");
    const char *id = pg_result_value(rw->w.result, 0, 0);
    buf_append_json_string(&body, slice_make(id, strlen(id)));
    buf_append_cstr(&body, ",\"username\":");
    buf_append_json_string(&body, slice_make(rw->username, strlen(rw->username)));
    buf_append_cstr(&body, ",\"email\":null,\"email_verified\":false,\"created_at\":");
    const char *created = pg_result_value(rw->w.result, 0, 1);
    buf_append_json_string(&body, slice_make(created, strlen(created)));
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 201, "application/json", buf_slice(&body));
}

/* Sign-up with an address (P02): one answer whether the user was made or the address was
 * taken; the statement's row says how many mails it queued (columns 0 and 1). */
static void register_respond_mailed(struct http_ctx *ctx, void *state)
{
    struct register_wait *rw = state;
    if (!register_stored(ctx, rw))
        return;
    bool queued = strcmp(pg_result_value(rw->w.result, 0, 0), "0") != 0 ||
                  strcmp(pg_result_value(rw->w.result, 0, 1), "0") != 0;
    if (queued && rw->w.auth->outbox != NULL)
        outbox_wake(rw->w.auth->outbox);
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"status\":\"verification_sent\",\"username\":");
    buf_append_json_string(&body, slice_make(rw->username, strlen(rw->username)));
    buf_append_cstr(&body, ",\"email\":");
    buf_append_json_string(&body, slice_make(rw->email, strlen(rw->email)));
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 202, "application/json", buf_slice(&body));
}

/* The mail to an address that already has an account: no link, nothing to spend. */
static void register_taken_body(struct register_wait *rw)
{
    struct buf b;
    buf_init(&b, rw->taken_body, sizeof(rw->taken_body) - 1);
    buf_append_cstr(&b, "Someone just tried to create an account at ");
    auth_issuer(rw->w.auth, slice_make(rw->slug, strlen(rw->slug)), &b);
    buf_append_cstr(&b, " with this address, which already has one.\r\n\r\n"
                        "If it was you, log in with your account, or reset your password if you "
                        "forgot it.\r\n\r\nIf it was not you, ignore this message: nothing was "
                        "changed.\r\n");
    assert(!b.overflow); /* AUTH_MAIL_BODY_MAX holds the longest public URL and slug */
    rw->taken_body[buf_slice(&b).len] = '\0';
}

/* Both mails are built whichever the statement will pick, so a taken address costs what a
 * free one does (P02). False when answered (no random bytes: 500). */
static bool register_mails(struct register_wait *rw)
{
    int ttl_s = 0;
    if (auth_mail_token(rw->w.auth, rw->slug, false, rw->sha_hex, rw->verify_body,
                        &rw->verify_subject, &ttl_s) != 0) {
        register_forget(rw);
        log_msg(LOG_ERROR, "no random bytes for a verification token", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return false;
    }
    snprintf(rw->ttl_text, sizeof(rw->ttl_text), "%d", ttl_s);
    register_taken_body(rw);
    return true;
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
    if (auth_job_abandoned(&rw->w, job)) {
        register_forget(rw);
        auth_answer_abandoned(&rw->w);
        return;
    }
    if (rw->hash_rc < 0) {
        register_forget(rw);
        log_msg(LOG_ERROR, "password hashing failed", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return;
    }
    const char **p = rw->w.q.params;
    p[0] = rw->tenant_id, p[1] = rw->username, p[2] = rw->email[0] ? rw->email : NULL;
    p[3] = rw->hash, p[4] = rw->ip[0] ? rw->ip : NULL, p[5] = rw->request_id;
    rw->w.q.params_count = 6;
    if (!rw->email[0]) {
        auth_send(NULL, &rw->w, STORE_USER_REGISTER, register_respond, NULL);
        return;
    }
    if (!register_mails(rw))
        return;
    p[6] = rw->sha_hex, p[7] = rw->ttl_text, p[8] = rw->verify_subject, p[9] = rw->verify_body;
    p[10] = REGISTER_TAKEN_SUBJECT, p[11] = rw->taken_body;
    rw->w.q.params_count = 12;
    auth_send(NULL, &rw->w, STORE_USER_SIGNUP, register_respond_mailed, NULL);
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
    if (auth_submit_hash(w, &rw->job) != 0) {
        register_forget(rw);
        auth_answer(w, 503, AUTH_BUSY_DETAIL);
    }
}

/* The tenant's settings first (registration open?); ctx is the handler's, or NULL after a
 * rate-limit owner's answer. */
static void register_go(struct http_ctx *ctx, struct register_wait *rw)
{
    rw->w.q.params[0] = rw->slug;
    rw->w.q.params_count = 1;
    (void)auth_send(ctx, &rw->w, STORE_TENANT_BY_SLUG, NULL, register_tenant_found); /* a refusal
                                                                                      * reaches it too */
}

static void register_rate_passed(struct auth_wait *w)
{
    register_go(NULL, (struct register_wait *)w);
}

/* The source address's bucket, as the recovery endpoints (a sign-up costs a hash), and with an
 * address the recipient's (it queues a mail). */
static void register_post(struct http_ctx *ctx)
{
    struct register_wait *rw = auth_json_request(ctx, sizeof(*rw));
    if (rw == NULL)
        return;
    const char *why = register_parse(rw, ctx->body);
    struct auth_rate_check limits;
    if (why != NULL || !auth_rate_admit_recipient(ctx, rw->w.auth, rw->email, &limits)) {
        register_forget(rw);
        if (why != NULL)
            http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return; /* else answered 429 */
    }
    auth_slug_copy(ctx->params[0], rw->slug);
    http_client_address(ctx, rw->ip, sizeof(rw->ip));
    auth_request_id(ctx, rw->request_id, sizeof(rw->request_id));
    rw->w.rate = limits;
    if (!auth_rate_pending(&rw->w.rate))
        register_go(ctx, rw);
    else if (auth_rate_continue(ctx, &rw->w, register_rate_passed) != 0) {
        register_forget(rw);
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
}

int auth_register_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/register", "register",
                          register_post, auth);
}
