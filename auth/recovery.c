/* auth/recovery.c: password reset and email verification by one-time tokens (issue 6).
 *
 *   POST /t/{tenant}/api/v1/password/forgot         {"email": "..."}
 *   POST /t/{tenant}/api/v1/email/verify/request    {"email": "..."}
 *   → 202 {"status": "accepted"} for every well-formed request, whether or not the address
 *     belongs to anyone (SECURITY P02); 400 for a body that is not {"email": string}
 *   POST /t/{tenant}/api/v1/password/reset          {"token": "...", "password": "..."}
 *   POST /t/{tenant}/api/v1/email/verify            {"token": "..."}
 *   → 204 after the commit; 400 "the token is invalid, expired or already used" for any
 *     refused token (unknown, expired, replayed, another tenant's, its user disabled)
 *   any of them: 400 for a malformed body or a refused new password, 415 without
 *   application/json, 429 past the address's rate, 503 when Postgres or the pool is busy
 *
 * A request for a mail runs one statement (store.c STORE_RECOVERY_MAIL): for the one live,
 * enabled user of the tenant with that address (case-insensitive; an address that names
 * several users names none, as at login, and gets no mail; verification also needs the
 * address unverified) it invalidates that user's earlier unused tokens of the purpose,
 * inserts the new token's SHA-256 and its email_outbox row, and writes an audit row; then
 * the sender is woken. The mail leaves through the outbox thread (auth/outbox.h), never from
 * the request, so a known and an unknown address get the same answer after one statement
 * each, differing only by a few inserts, never by an SMTP exchange (P02). Sign-up with an
 * address sends the same verification mail, made by the same auth_mail_token. The
 * token is RECOVERY_TOKEN_BYTES random bytes, base64url; only its SHA-256 is stored and the
 * outbox clears a body once it is sent. A presented token is found by its digest through the
 * unique index (P13's constant time: what a lookup's timing could tell is about a SHA-256 of
 * the secret, of no use for finding a token); it is never logged.
 *
 * A reset checks the new password as registration does (length, the common list, P08/P09)
 * before anything is spent, hashes it with Argon2id on the worker pool (a full pool is 503),
 * then one statement (STORE_RECOVERY_RESET) consumes the token (only if unused and
 * unexpired: under the row lock a replay, even a concurrent one, finds it used), sets the
 * hash, clears the lockout, revokes every session of the user with its 'sid' revocation
 * (P13), and writes the audit row password_reset; the revocations are spread as logout-all
 * spreads them. Verification (STORE_RECOVERY_VERIFY) consumes its token only while the user's
 * address is still the one the token was sent to, and sets email_verified.
 *
 * Rate limits: the per-address GCRA bucket of auth/ratelimit.c (no client bucket). A
 * well-formed but unknown reset token still costs one Argon2id hash: the address bucket and
 * the pool's bound (F15) keep that in check. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "crypto/b64url.h"
#include "crypto/jscan.h"

#define RECOVERY_TOKEN_BYTES 32          /* 256 random bits, as refresh tokens (DESIGN §4) */
#define RECOVERY_TOKEN_LEN 43            /* its base64url text, unpadded */
#define RECOVERY_RESET_TTL_S (30 * 60)   /* OWASP Forgot Password Cheat Sheet: short-lived;
                                          * 30 min covers a slow mail relay */
#define RECOVERY_VERIFY_TTL_S (24 * 3600) /* a verification mail may be read the next day */
#define RECOVERY_REQUEST_ID_MAX 64       /* the X-Request-Id kept for the audit row */
#define RECOVERY_NUM_TEXT 16             /* an int parameter as decimal text */

static const char recovery_refused[] = "the token is invalid, expired or already used";

enum recovery_kind {
    RECOVERY_FORGOT,         /* POST /password/forgot */
    RECOVERY_VERIFY_REQUEST, /* POST /email/verify/request */
    RECOVERY_RESET,          /* POST /password/reset */
    RECOVERY_VERIFY,         /* POST /email/verify */
};

struct recovery_wait {
    struct auth_wait w;
    struct worker_job job;
    enum recovery_kind kind;
    int hash_rc;
    size_t password_len;
    char slug[AUTH_SLUG_MAX + 1];
    char email[AUTH_EMAIL_MAX + 1];
    char token[RECOVERY_TOKEN_LEN + 1];
    char sha_hex[2 * HASH_SHA256_BYTES + 1];
    char num_text[RECOVERY_NUM_TEXT]; /* the token's lifetime, or the revocation slack */
    char ip[AUTH_IP_MAX + 1];
    char request_id[RECOVERY_REQUEST_ID_MAX + 1];
    char body[AUTH_MAIL_BODY_MAX];
    char hash[PASSWORD_HASH_MAX + 1];
    char password[PASSWORD_INPUT_MAX + 1];
};

_Static_assert(sizeof(struct recovery_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

#define RECOVERY_OF(j) ((struct recovery_wait *)((char *)(j) - offsetof(struct recovery_wait, job)))

static void recovery_forget(struct recovery_wait *rw)
{
    explicit_bzero(rw->token, sizeof(rw->token));
    explicit_bzero(rw->body, sizeof(rw->body));
    explicit_bzero(rw->hash, sizeof(rw->hash));
    explicit_bzero(rw->password, sizeof(rw->password));
}

/* ---- Tokens --------------------------------------------------------------------------------- */

/* A new token into token (RECOVERY_TOKEN_LEN + 1 bytes) and its digest into sha_hex. 0 or
 * -TE_IO. */
static int recovery_token_make(char *token, char *sha_hex)
{
    uint8_t secret[RECOVERY_TOKEN_BYTES];
    if (ct_random_bytes(secret, sizeof(secret)) != 0)
        return -TE_IO;
    int n = b64url_encode(secret, sizeof(secret), token, RECOVERY_TOKEN_LEN + 1);
    explicit_bzero(secret, sizeof(secret));
    if (n != RECOVERY_TOKEN_LEN)
        return -TE_IO;
    token[RECOVERY_TOKEN_LEN] = '\0';
    auth_sha256_hex(token, sha_hex);
    return 0;
}

/* A presented token of the right form: its digest into rw->sha_hex. */
static bool recovery_token_parse(struct recovery_wait *rw)
{
    uint8_t secret[RECOVERY_TOKEN_BYTES];
    if (strlen(rw->token) != RECOVERY_TOKEN_LEN ||
        b64url_decode(rw->token, RECOVERY_TOKEN_LEN, secret, sizeof(secret)) !=
            RECOVERY_TOKEN_BYTES)
        return false;
    explicit_bzero(secret, sizeof(secret));
    auth_sha256_hex(rw->token, rw->sha_hex);
    return true;
}

/* ---- Input ---------------------------------------------------------------------------------- */

/* A required, non-empty string member into dst (auth/input.c: bounded, no NUL, P08/P09).
 * The reason it is refused, or NULL. */
static const char *recovery_field(const struct jscan_object *obj, const char *name, char *dst,
                                  size_t max, size_t *len)
{
    bool seen = false;
    const char *why = auth_json_string(obj, name, dst, max, len, &seen);
    if (why == NULL && (!seen || *len == 0))
        why = "a required member is missing or empty";
    return why;
}

/* A new password, checked as at registration (NIST SP 800-63B §5.1.1.2). */
static const char *recovery_password_check(struct recovery_wait *rw)
{
    return auth_new_password_refused(rw->password, &rw->password_len); /* normalised: P07 */
}

static const char *recovery_parse(struct recovery_wait *rw, struct slice body)
{
    struct jscan_object obj;
    size_t len = 0;
    if (jscan_object(body.ptr, body.len, &obj) != 0)
        return "the body is not a JSON object";
    if (rw->kind == RECOVERY_FORGOT || rw->kind == RECOVERY_VERIFY_REQUEST)
        return recovery_field(&obj, "email", rw->email, AUTH_EMAIL_MAX, &len);
    const char *why = recovery_field(&obj, "token", rw->token, RECOVERY_TOKEN_LEN, &len);
    if (why == NULL && rw->kind == RECOVERY_RESET)
        why = recovery_field(&obj, "password", rw->password, PASSWORD_INPUT_MAX, &rw->password_len);
    if (why == NULL && rw->kind == RECOVERY_RESET)
        why = recovery_password_check(rw);
    if (why == NULL && !recovery_token_parse(rw))
        why = recovery_refused;
    return why;
}

/* ---- Answers -------------------------------------------------------------------------------- */

static void recovery_accepted(struct http_ctx *ctx, void *state)
{
    (void)state;
    static const char body[] = "{\"status\":\"accepted\"}";
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 202, "application/json", slice_make(body, sizeof(body) - 1));
}

/* ---- Asking for a mail ---------------------------------------------------------------------- */

/* The mail's text: the link of the tenant's page (the token after '#', so it never reaches a
 * server log through a Referer or a request line) and the token itself. */
static void recovery_body(const struct auth *auth, const char *slug, bool reset, const char *token,
                          char *body)
{
    struct buf b;
    buf_init(&b, body, AUTH_MAIL_BODY_MAX - 1);
    if (reset)
        buf_printf(&b, "To choose a new password, open this link within %d minutes:\r\n\r\n",
                   RECOVERY_RESET_TTL_S / 60);
    else
        buf_printf(&b, "To confirm your email address, open this link within %d hours:\r\n\r\n",
                   RECOVERY_VERIFY_TTL_S / 3600);
    auth_issuer(auth, slice_make(slug, strlen(slug)), &b);
    buf_printf(&b, "/%s#token=%s\r\n\r\nor enter this code: %s\r\n\r\n"
                   "If you did not ask for this, ignore this message.\r\n",
               reset ? "reset-password" : "verify-email", token, token);
    assert(!b.overflow); /* AUTH_MAIL_BODY_MAX holds the longest public URL and slug */
    body[buf_slice(&b).len] = '\0';
}

int auth_mail_token(const struct auth *auth, const char *slug, bool reset, char *sha_hex,
                    char *body, const char **subject, int *ttl_s)
{
    char token[RECOVERY_TOKEN_LEN + 1];
    int rc = recovery_token_make(token, sha_hex);
    if (rc != 0)
        return rc;
    recovery_body(auth, slug, reset, token, body);
    explicit_bzero(token, sizeof(token));
    *subject = reset ? "Reset your password" : "Confirm your email address";
    *ttl_s = reset ? RECOVERY_RESET_TTL_S : RECOVERY_VERIFY_TTL_S;
    return 0;
}

static void recovery_mailed(struct auth_wait *w)
{
    struct recovery_wait *rw = (struct recovery_wait *)w;
    recovery_forget(rw);
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    bool queued = pg_result_rows(w->result) == 1 &&
                  strcmp(pg_result_value(w->result, 0, 0), "0") != 0;
    if (queued && w->auth->outbox != NULL)
        outbox_wake(w->auth->outbox);
    http_resume(w, recovery_accepted);
}

static void recovery_mail(struct http_ctx *ctx, struct recovery_wait *rw)
{
    bool reset = rw->kind == RECOVERY_FORGOT;
    const char *subject = NULL;
    int ttl_s = 0;
    if (auth_mail_token(rw->w.auth, rw->slug, reset, rw->sha_hex, rw->body, &subject,
                        &ttl_s) != 0) {
        recovery_forget(rw);
        if (ctx != NULL)
            auth_answer_now(ctx, 500, "internal error");
        else
            auth_answer(&rw->w, 500, "internal error");
        return;
    }
    snprintf(rw->num_text, sizeof(rw->num_text), "%d", ttl_s);
    const char **p = rw->w.q.params;
    p[0] = rw->slug, p[1] = rw->email, p[2] = reset ? "password_reset" : "email_verify";
    p[3] = rw->sha_hex, p[4] = rw->num_text;
    p[5] = subject;
    p[6] = rw->body, p[7] = rw->ip[0] ? rw->ip : NULL, p[8] = rw->request_id;
    rw->w.q.params_count = 9;
    auth_send(ctx, &rw->w, STORE_RECOVERY_MAIL, NULL, recovery_mailed);
}

/* ---- Spending a token ----------------------------------------------------------------------- */

/* Rows as store.c's STORE_RECOVERY_RESET: none when the token was refused, else one per
 * revoked session (one of NULLs when the user had none), spread like logout-all's. */
static void recovery_reset_done(struct auth_wait *w)
{
    struct recovery_wait *rw = (struct recovery_wait *)w;
    recovery_forget(rw);
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) == 0) {
        auth_answer(w, 400, recovery_refused);
        return;
    }
    auth_session_spread(w);
    http_resume(w, auth_respond_no_content);
}

static void recovery_hash_run(struct worker_job *job)
{
    struct recovery_wait *rw = RECOVERY_OF(job);
    rw->hash_rc = password_hash(&rw->w.auth->passwords, rw->password, rw->password_len, rw->hash,
                                sizeof(rw->hash));
    explicit_bzero(rw->password, sizeof(rw->password));
}

static void recovery_hash_done(struct worker_job *job)
{
    struct recovery_wait *rw = RECOVERY_OF(job);
    if (auth_job_abandoned(&rw->w, job)) {
        recovery_forget(rw);
        auth_answer_abandoned(&rw->w);
        return;
    }
    if (rw->hash_rc < 0) {
        recovery_forget(rw);
        log_msg(LOG_ERROR, "password hashing failed", NULL);
        auth_answer(&rw->w, 500, "internal error");
        return;
    }
    snprintf(rw->num_text, sizeof(rw->num_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    const char **p = rw->w.q.params;
    p[0] = rw->slug, p[1] = rw->sha_hex, p[2] = rw->hash, p[3] = rw->num_text;
    p[4] = rw->ip[0] ? rw->ip : NULL, p[5] = rw->request_id;
    rw->w.q.params_count = 6;
    auth_send(NULL, &rw->w, STORE_RECOVERY_RESET, NULL, recovery_reset_done);
}

static void recovery_verified(struct auth_wait *w)
{
    if (w->outcome != PG_OK)
        auth_fail(w, w->outcome);
    else if (pg_result_rows(w->result) == 0)
        auth_answer(w, 400, recovery_refused);
    else
        http_resume(w, auth_respond_no_content);
}

/* The request passed its checks and its rate limit: ctx is the handler's, or NULL from a
 * later stage. */
static void recovery_go(struct http_ctx *ctx, struct recovery_wait *rw)
{
    switch (rw->kind) {
    case RECOVERY_FORGOT:
    case RECOVERY_VERIFY_REQUEST:
        recovery_mail(ctx, rw);
        return;
    case RECOVERY_RESET:
        rw->job.run = recovery_hash_run;
        rw->job.done = recovery_hash_done;
        if (auth_submit_hash(&rw->w, &rw->job) != 0) {
            recovery_forget(rw);
            if (ctx != NULL)
                auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
            else
                auth_answer(&rw->w, 503, AUTH_BUSY_DETAIL);
        }
        return;
    case RECOVERY_VERIFY:
        rw->w.q.params[0] = rw->slug, rw->w.q.params[1] = rw->sha_hex;
        rw->w.q.params[2] = rw->ip[0] ? rw->ip : NULL, rw->w.q.params[3] = rw->request_id;
        rw->w.q.params_count = 4;
        auth_send(ctx, &rw->w, STORE_RECOVERY_VERIFY, NULL, recovery_verified);
        return;
    }
}

static void recovery_rate_passed(struct auth_wait *w)
{
    recovery_go(NULL, (struct recovery_wait *)w);
}

/* ---- Handlers ------------------------------------------------------------------------------- */

static void recovery_start(struct http_ctx *ctx, enum recovery_kind kind)
{
    struct auth *auth = ctx->route_arg;
    struct recovery_wait *rw = auth_json_request(ctx, sizeof(*rw)); /* 404, 415, 503 */
    if (rw == NULL)
        return;
    rw->kind = kind;
    const char *why = recovery_parse(rw, ctx->body);
    struct auth_rate_check limits;
    bool mails = kind == RECOVERY_FORGOT || kind == RECOVERY_VERIFY_REQUEST;
    if (why != NULL || !auth_rate_admit_recipient(ctx, auth, mails ? rw->email : "", &limits)) {
        recovery_forget(rw);
        if (why != NULL)
            http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return; /* else answered 429 */
    }
    auth_slug_copy(ctx->params[0], rw->slug);
    http_client_address(ctx, rw->ip, sizeof(rw->ip));
    auth_request_id(ctx, rw->request_id, sizeof(rw->request_id));
    rw->w.rate = limits;
    if (!auth_rate_pending(&rw->w.rate))
        recovery_go(ctx, rw);
    else if (auth_rate_continue(ctx, &rw->w, recovery_rate_passed) != 0) {
        recovery_forget(rw);
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
}

static void recovery_forgot_post(struct http_ctx *ctx)
{
    recovery_start(ctx, RECOVERY_FORGOT);
}

static void recovery_verify_request_post(struct http_ctx *ctx)
{
    recovery_start(ctx, RECOVERY_VERIFY_REQUEST);
}

static void recovery_reset_post(struct http_ctx *ctx)
{
    recovery_start(ctx, RECOVERY_RESET);
}

static void recovery_verify_post(struct http_ctx *ctx)
{
    recovery_start(ctx, RECOVERY_VERIFY);
}

int auth_recovery_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/password/forgot",
                            "password_forgot", recovery_forgot_post, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/password/reset",
                                       "password_reset", recovery_reset_post, auth);
    rc = rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST,
                                       "/t/{tenant}/api/v1/email/verify/request",
                                       "email_verify_request", recovery_verify_request_post, auth);
    return rc != 0 ? rc : http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/email/verify",
                                         "email_verify", recovery_verify_post, auth);
}
