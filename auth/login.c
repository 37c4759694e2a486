/* auth/login.c: POST /t/{tenant}/api/v1/auth/login, a first-party application's password
 * login (DESIGN §4, §5).
 *
 *   {"username": "..." | "email": "...", "password": "...", "client_id": "..."}
 *   → 200 {"access_token", "token_type": "Bearer", "expires_in", "refresh_token"}, no-store
 *   → 401 problem "the username or password is wrong" for every refused login
 *
 * client_id must name a client of the tenant flagged first_party (400 otherwise): only the
 * tenant's own applications collect passwords (RFC 9700 §2.4). The stages: the body checked
 * on the shard (a password over PASSWORD_INPUT_MAX bytes or holding a NUL is 400 before any
 * hashing, SECURITY P08/P09) → tenant, client and user read in one statement from the
 * primary → the tenant's keys → on the worker pool, never on a shard: the password verified
 * (Argon2id, or an imported bcrypt hash, crypto/password.h; an unknown, disabled, deleted or
 * locked user is verified against the policy's dummy hash, so each refusal costs the same
 * and answers the same, SECURITY P01), a bcrypt or outdated hash rehashed (P10) and the
 * access token signed → on success one statement commits the failure count's reset, the new
 * session (a fresh id each time, P13) with its refresh token's SHA-256 and the audit row,
 * and the answer waits for it; on failure the refusal is answered at once and its statement
 * (the count, the lockout, the audit row) commits after it, so that no refusal waits on a
 * write that only a known user's has (auth/login_failure.c, where the lockout policy is
 * too). A full worker queue is 503 + Retry-After (SECURITY F15).
 *
 * Names and passwords (SECURITY P05-P07): a username is looked up in the form sign-up stored
 * (core/precis.h, RFC 8265 §3.3): "Alice", " alice " (trimmed: no stored name has surrounding
 * spaces) and fullwidth "ａｌｉｃｅ" are "alice"; a name the profile refuses is looked up as
 * "", which no account has, so it is an unknown user (same work, same answer, P01). The
 * password is verified as it was set, normalised (RFC 8265 §4.2), except against an imported
 * bcrypt hash, made from raw bytes elsewhere: that one sees the bytes as submitted and
 * nothing else (auth_password_verify). A password the profile refuses (a control character;
 * invalid UTF-8 in a password grant's form) is a wrong password, never a 400, so the answer
 * says nothing more; a JSON body must be UTF-8 (RFC 8259 §8.1) and one that is not is a
 * malformed body, 400 whatever the name. Before any lookup a per-account GCRA bucket
 * (auth/ratelimit.c) keyed on the normalised submitted name, account or not, joins the
 * per-address and per-client ones: 429 + Retry-After, the same for every name.
 *
 * The token endpoint's password grant (RFC 6749 §4.3) is the same login reached through
 * auth/token.c: the client authenticates (or a public one names itself), must be first-party
 * and allowed the grant; errors are §5.2's, every refused password invalid_grant.
 *
 * The hosted login page's form (auth/authorize.c, the authorization code flow) is the same
 * login again, for any client of the tenant: what it makes is no token but the code of the
 * stored authorization request it answers (STORE_AUTHZ_LOGIN_SUCCEEDED), and its answers are
 * pages: the 303 back to the client, the form again for every refusal (the same page
 * whatever the reason), an error page for a spent request. No signing key is needed. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/precis.h"
#include "crypto/jscan.h"
#include "crypto/secret.h"

#define LOGIN_NAME_MAX AUTH_LOGIN_NAME_MAX
#define LOGIN_AGENT_MAX 128            /* of User-Agent kept with the session: enough to tell
                                        * devices apart in a session list (display only) */
#define LOGIN_NUM_TEXT 16              /* a statement's int parameter as decimal text */

static const char login_refused[] = "the username or password is wrong";
static const char login_request_spent[] =
    "this sign-in request has expired or was already used; go back to the application and start again";

struct login_wait {
    struct auth_wait w;
    struct worker_job job;
    struct auth_tenant *tenant;
    bool oauth;                      /* the token endpoint's password grant (RFC 6749 §4.3) */
    bool browser;                    /* the hosted login page's form (auth/authorize.c) */
    bool public_client;              /* oauth: the client named itself without a secret */
    bool scope_given;                /* oauth: scope holds the requested scope */
    uint8_t secret_sha256[HASH_SHA256_BYTES]; /* oauth: of the presented client secret */
    bool user_known;
    bool locked;
    int verify_rc;
    int rehash_len;
    int jwt_len;
    int64_t lifetime_s;
    size_t password_len;
    char slug[AUTH_SLUG_MAX + 1];
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    char name[LOGIN_NAME_MAX + 1];   /* the username, or the email when by_email */
    bool by_email;
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    char user_id[CT_UUID_TEXT_LEN + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    char stored[PASSWORD_HASH_MAX + 1];
    char rehash[PASSWORD_HASH_MAX + 1];
    char refresh[AUTH_REFRESH_TOKEN_LEN + 1];
    char refresh_sha[2 * HASH_SHA256_BYTES + 1];
    char ip[AUTH_IP_MAX + 1];
    char agent[LOGIN_AGENT_MAX + 1];
    char request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
    char nums[3][LOGIN_NUM_TEXT];    /* statement parameters as text */
    union {
        struct {                          /* not the browser's: the token signed */
            char issuer[AUTH_SESSION_ISSUER_MAX + 1];
            char scope[JWT_SCOPE_MAX + 1];
        } token;
        struct {                          /* browser: no token, the authorization request's */
            char authz[CT_UUID_TEXT_LEN + 1];   /* id */
            char csrf[SECRET_RANDOM_CHARS + 1]; /* the page's token, for the page shown again */
            char code[SECRET_RANDOM_CHARS + 1]; /* the code made */
            char code_sha[2 * HASH_SHA256_BYTES + 1];
            char email[LOGIN_NAME_MAX + 1]; /* the name as typed when it may be an email */
            char cookie_sid[CT_UUID_TEXT_LEN + 1]; /* the browser's session, or "" */
            char cookie_sha[2 * HASH_SHA256_BYTES + 1];
            char renewed[AUTH_REFRESH_TOKEN_LEN + 1]; /* its new token, if it is renewed */
            char renewed_sha[2 * HASH_SHA256_BYTES + 1];
        } page;
    } made;
    union {                          /* the password until verified, then the access token */
        char password[PASSWORD_INPUT_MAX + 1];
        char jwt[AUTH_SESSION_JWT_MAX];
    } secret;
};

_Static_assert(sizeof(struct login_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* ---- Input ---------------------------------------------------------------------------------- */

static const char *login_parse(struct login_wait *lw, struct slice body)
{
    struct jscan_object obj;
    if (jscan_object(body.ptr, body.len, &obj) != 0)
        return "the body is not a JSON object";
    size_t ulen = 0, elen = 0, clen = 0;
    bool has_user = false, has_email = false, has_pw = false, has_client = false;
    char email[LOGIN_NAME_MAX + 1];
    const char *why = auth_json_string(&obj, "username", lw->name, LOGIN_NAME_MAX, &ulen, &has_user);
    if (why == NULL)
        why = auth_json_string(&obj, "email", email, LOGIN_NAME_MAX, &elen, &has_email);
    if (why == NULL)
        why = auth_json_string(&obj, "password", lw->secret.password, PASSWORD_INPUT_MAX,
                          &lw->password_len, &has_pw);
    if (why == NULL)
        why = auth_json_string(&obj, "client_id", lw->client_id, AUTH_CLIENT_ID_MAX, &clen, &has_client);
    if (why != NULL)
        return why;
    if (has_user == has_email || (has_user ? ulen : elen) == 0)
        return "exactly one of username and email is required";
    if (!has_pw || lw->password_len == 0)
        return "password is required";
    if (!has_client || clen == 0)
        return "client_id is required";
    if (has_email) {
        memcpy(lw->name, email, elen + 1);
        lw->by_email = true;
    }
    return NULL;
}

/* The submitted name into its normalised form (SECURITY P06), and the key of its account
 * bucket (P05) into key (LOGIN_NAME_MAX + 1 bytes): that form, an email's too (case folded:
 * "Bob@x" and "bob@x" are one bucket, as Postgres' lower() makes them one account), or the
 * bytes as submitted when the profile refuses them. A refused username becomes "". */
static void login_name_normalise(struct login_wait *lw, char *key)
{
    size_t len = strlen(lw->name), key_len = 0;
    bool normal = precis_username_lookup(lw->name, len, key, LOGIN_NAME_MAX + 1, &key_len) == 0;
    if (!normal)
        memcpy(key, lw->name, len + 1);
    if (lw->by_email)
        return; /* looked up as given: lower(email) in STORE_LOGIN_LOOKUP */
    if (normal && key_len <= AUTH_USERNAME_MAX)
        memcpy(lw->name, key, key_len + 1);
    else
        lw->name[0] = '\0'; /* no account has it: an unknown user (P01) */
}

/* The User-Agent as printable ASCII (a column of text: no invalid UTF-8 reaches Postgres). */
static void login_agent(const struct http_ctx *ctx, char *dst)
{
    const struct http1_header *h = http1_find_header(ctx->req, "User-Agent");
    size_t len = h == NULL ? 0 : h->value.len < LOGIN_AGENT_MAX ? h->value.len : LOGIN_AGENT_MAX;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h->value.ptr[i];
        dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[len] = '\0';
}

/* ---- Answers -------------------------------------------------------------------------------- */

static void login_forget(struct login_wait *lw)
{
    explicit_bzero(&lw->secret, sizeof(lw->secret));
    explicit_bzero(lw->refresh, sizeof(lw->refresh));
    explicit_bzero(lw->rehash, sizeof(lw->rehash));
    explicit_bzero(lw->stored, sizeof(lw->stored));
    if (lw->browser) {
        explicit_bzero(lw->made.page.code, sizeof(lw->made.page.code));
        explicit_bzero(lw->made.page.renewed, sizeof(lw->made.page.renewed));
    }
}

static void login_release(struct login_wait *lw)
{
    if (lw->tenant != NULL)
        auth_tenant_put(lw->w.auth, lw->w.loop, lw->tenant);
    lw->tenant = NULL;
}

static void login_respond(struct http_ctx *ctx, void *state)
{
    struct login_wait *lw = state;
    struct auth_token_answer a = {
        .access = slice_make(lw->secret.jwt, (size_t)lw->jwt_len), .lifetime_s = lw->lifetime_s,
        .refresh = lw->refresh,
    };
    auth_token_respond(ctx, &a);
    login_forget(lw);
}

static void login_page_again(struct http_ctx *ctx, void *state)
{
    struct login_wait *lw = state;
    /* 200: a form shown again with its error, as a browser expects (a 401 would need a
     * WWW-Authenticate challenge, RFC 9110 §15.5.2, and there is none for a form). */
    auth_login_page(ctx, lw->w.auth, lw->slug, 200, lw->made.page.authz, lw->made.page.csrf, login_refused);
}

static void login_page_error(struct http_ctx *ctx, void *state)
{
    struct login_wait *lw = state;
    auth_page_error(ctx, lw->w.status, lw->w.detail);
}

/* Ends the request with a problem, an HTML page for the browser's form. */
static void login_answer(struct login_wait *lw, int status, const char *detail)
{
    if (!lw->browser) {
        auth_answer(&lw->w, status, detail);
        return;
    }
    lw->w.status = status;
    lw->w.detail = detail;
    http_resume(lw, login_page_error);
}

static void login_fail(struct login_wait *lw, enum pg_outcome outcome)
{
    if (!lw->browser)
        auth_fail(&lw->w, outcome);
    else if (outcome == PG_UNAVAILABLE)
        login_answer(lw, 503, "the sign-in service is unavailable; try again shortly");
    else
        login_answer(lw, 500, "internal error");
}

/* Every refused login, whatever the reason (P01). */
static void login_refuse(struct login_wait *lw)
{
    login_release(lw);
    login_forget(lw);
    if (lw->browser)
        http_resume(lw, login_page_again);
    else if (lw->oauth)
        auth_oauth_fail(&lw->w, 400, "invalid_grant", login_refused); /* RFC 6749 §5.2 */
    else
        auth_answer(&lw->w, 401, login_refused);
}

/* The browser's login answered its authorization request: back to the client with the code
 * (columns as STORE_AUTHZ_LOGIN_SUCCEEDED). */
static void login_redirect(struct http_ctx *ctx, void *state)
{
    struct login_wait *lw = state;
    const struct pg_result *r = lw->w.result;
    bool renewed = strcmp(pg_result_value(r, 0, 3), lw->made.page.cookie_sid) == 0;
    auth_login_redirect_code(ctx, lw->w.auth, lw->slug, pg_result_value(r, 0, 0),
                             pg_result_is_null(r, 0, 1) ? NULL : pg_result_value(r, 0, 1), lw->made.page.code,
                             renewed ? lw->made.page.renewed : lw->refresh);
    login_forget(lw);
}

static void login_committed(struct auth_wait *w)
{
    struct login_wait *lw = (struct login_wait *)w;
    if (w->outcome != PG_OK) {
        login_release(lw);
        login_forget(lw);
        login_fail(lw, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) { /* disabled, locked or changed since the lookup */
        login_refuse(lw);
        return;
    }
    login_release(lw);
    if (!lw->browser) {
        http_resume(lw, login_respond);
    } else if (strcmp(pg_result_value(w->result, 0, 2), "t") != 0) {
        login_forget(lw); /* answered or expired meanwhile (another tab, another post) */
        login_answer(lw, 400, login_request_spent);
    } else {
        http_resume(lw, login_redirect);
    }
}

/* ---- Stages --------------------------------------------------------------------------------- */

/* On a worker thread: the CPU-heavy steps, touching nothing of the shard's. */
static void login_verify_run(struct worker_job *job)
{
    struct login_wait *lw = (struct login_wait *)((char *)job - offsetof(struct login_wait, job));
    const struct password_policy *policy = &lw->w.auth->passwords;
    bool real = lw->user_known && !lw->locked && lw->stored[0] != '\0';
    const char *stored = real ? lw->stored : NULL; /* NULL: the dummy hash (P01) */
    int rc = auth_password_verify(policy, stored, lw->secret.password, lw->password_len); /* P07 */
    lw->verify_rc = real ? rc : -TE_INVAL;
    lw->rehash_len = 0;
    if (lw->verify_rc == 0 && password_needs_rehash(policy, lw->stored))
        lw->rehash_len = auth_password_rehash(policy, lw->secret.password, lw->password_len,
                                              lw->rehash, sizeof(lw->rehash)); /* normalised */
    explicit_bzero(&lw->secret, sizeof(lw->secret));
    if (lw->verify_rc != 0 || lw->browser) /* the browser's login makes a code, no token */
        return;
    struct auth_user_token t = {
        .tenant = lw->tenant, .issuer = lw->made.token.issuer, .sub = lw->user_id, .client_id = lw->client_id,
        .scope = lw->made.token.scope, .sid = lw->sid, .lifetime_s = lw->lifetime_s,
    };
    lw->jwt_len = auth_session_sign(&t, lw->secret.jwt, sizeof(lw->secret.jwt));
}

/* The refusal is kept, answered, and only then its statement sent (P01). */
static void login_send_failed(struct login_wait *lw)
{
    struct auth_login_refusal refusal = {
        .tenant_id = lw->tenant_id, .user_id = lw->user_known ? lw->user_id : NULL,
        .ip = lw->ip, .request_id = lw->request_id,
    };
    struct loop *loop = lw->w.loop;
    struct auth_login_failure *kept = auth_login_failure_keep(lw->w.auth, loop, &refusal);
    if (kept == NULL) {
        login_release(lw);
        login_forget(lw);
        login_fail(lw, PG_UNAVAILABLE); /* neither refused nor counted: 503 */
        return;
    }
    login_refuse(lw);  /* lw is gone after this */
    loop_submit(loop); /* the answer leaves before Postgres is woken, maybe on this core */
    auth_login_failure_send(kept);
}

/* The browser's login: the authorization request's code and the browser session (SSO: sid,
 * with the cookie's secret in refresh; or the cookie's own session, renewed with a new secret
 * when it is the same user's), one statement with the login's other effects
 * (STORE_LOGIN_SUCCEEDED's, the client's session apart: the code's redemption makes it). */
static void login_send_code(struct login_wait *lw)
{
    uint8_t digest[HASH_SHA256_BYTES];
    bool cookie = lw->made.page.cookie_sid[0] != '\0';
    if (ct_uuid7_now(lw->sid) != 0 || secret_client_new(lw->made.page.code, digest) != 0 ||
        auth_refresh_make(lw->sid, lw->refresh, lw->refresh_sha) != 0 ||
        (cookie && auth_refresh_make(lw->made.page.cookie_sid, lw->made.page.renewed, lw->made.page.renewed_sha) != 0)) {
        login_forget(lw);
        login_answer(lw, 500, "internal error");
        return;
    }
    auth_sha256_hex(lw->made.page.code, lw->made.page.code_sha);
    snprintf(lw->nums[0], LOGIN_NUM_TEXT, "%d", AUTH_CODE_TTL_S);
    snprintf(lw->nums[1], LOGIN_NUM_TEXT, "%d", AUTH_SSO_IDLE_S);
    snprintf(lw->nums[2], LOGIN_NUM_TEXT, "%d", AUTH_SSO_ABSOLUTE_S);
    const char **p = lw->w.q.params;
    p[0] = lw->tenant_id, p[1] = lw->user_id, p[2] = lw->made.page.authz, p[3] = lw->made.page.code_sha;
    p[4] = lw->nums[0], p[5] = lw->ip[0] ? lw->ip : NULL, p[6] = lw->request_id;
    p[7] = lw->rehash_len > 0 ? lw->rehash : NULL, p[8] = lw->stored;
    p[9] = lw->sid, p[10] = lw->refresh_sha, p[11] = lw->agent[0] ? lw->agent : NULL;
    p[12] = lw->nums[1], p[13] = lw->nums[2];
    p[14] = cookie ? lw->made.page.cookie_sid : NULL, p[15] = cookie ? lw->made.page.cookie_sha : NULL;
    p[16] = cookie ? lw->made.page.renewed_sha : NULL;
    lw->w.q.params_count = 17;
    auth_send(NULL, &lw->w, STORE_AUTHZ_LOGIN_SUCCEEDED, NULL, login_committed);
}

static void login_send_succeeded(struct login_wait *lw)
{
    struct pg_query *q = &lw->w.q;
    snprintf(lw->nums[0], LOGIN_NUM_TEXT, "%d", AUTH_SESSION_IDLE_S);
    snprintf(lw->nums[1], LOGIN_NUM_TEXT, "%d", AUTH_SESSION_ABSOLUTE_S);
    q->params[0] = lw->tenant_id;
    q->params[1] = lw->user_id;
    q->params[2] = lw->sid;
    q->params[3] = lw->client_id;
    q->params[4] = lw->refresh_sha;
    q->params[5] = lw->ip[0] ? lw->ip : NULL;
    q->params[6] = lw->agent[0] ? lw->agent : NULL;
    q->params[7] = lw->nums[0];
    q->params[8] = lw->nums[1];
    q->params[9] = lw->rehash_len > 0 ? lw->rehash : NULL; /* P10: bcrypt becomes Argon2id */
    q->params[10] = lw->stored;
    q->params[11] = lw->request_id;
    q->params_count = 12;
    auth_send(NULL, &lw->w, STORE_LOGIN_SUCCEEDED, NULL, login_committed);
}

/* Back on the shard: commit the outcome. */
static void login_verify_done(struct worker_job *job)
{
    struct login_wait *lw = (struct login_wait *)((char *)job - offsetof(struct login_wait, job));
    if (auth_job_abandoned(&lw->w, job)) { /* no failure counted, no session */
        login_release(lw);
        login_forget(lw);
        auth_answer_abandoned(&lw->w);
        return;
    }
    if (lw->verify_rc != 0) {
        login_send_failed(lw);
        return;
    }
    if (!lw->browser && lw->jwt_len <= 0) {
        login_release(lw);
        login_forget(lw);
        log_msg(LOG_ERROR, "signing an access token failed", NULL);
        auth_answer(&lw->w, 500, "internal error");
        return;
    }
    if (lw->rehash_len < 0)
        log_msg(LOG_WARN, "rehashing a password failed: the old hash stays", NULL);
    if (lw->browser)
        login_send_code(lw);
    else
        login_send_succeeded(lw);
}

/* The password to the worker pool. */
static void login_verify(struct login_wait *lw)
{
    lw->job.run = login_verify_run;
    lw->job.done = login_verify_done;
    if (auth_submit_hash(&lw->w, &lw->job) != 0) {
        login_release(lw);
        login_forget(lw);
        login_answer(lw, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

/* The keys are held: a fresh session id and refresh token, then the worker. */
static void login_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct login_wait *lw = (struct login_wait *)w;
    if (tenant == NULL || !auth_tenant_signs(w, tenant)) {
        login_forget(lw);
        auth_answer(w, w->status, w->detail);
        return;
    }
    lw->tenant = tenant;
    /* A new id at every login: no fixation (P13). */
    if (ct_uuid7_now(lw->sid) != 0 || auth_refresh_make(lw->sid, lw->refresh, lw->refresh_sha) != 0) {
        login_release(lw);
        login_forget(lw);
        auth_answer(w, 500, "internal error");
        return;
    }
    login_verify(lw);
}

/* The password grant's client checks (RFC 6749 §4.3.2, §5.2) on the lookup's row: the
 * client authenticated (its secret's SHA-256 compared in constant time, or a public client
 * naming itself), first-party and allowed the grant, the scope within its own. False when
 * answered. */
static bool login_grant_client_ok(struct login_wait *lw, const struct pg_result *r)
{
    char presented[2 * HASH_SHA256_BYTES + 1];
    for (size_t i = 0; i < HASH_SHA256_BYTES; i++)
        snprintf(presented + 2 * i, 3, "%02x", lw->secret_sha256[i]);
    bool known = pg_result_rows(r) > 0 && strcmp(pg_result_value(r, 0, 3), "0") != 0;
    bool is_public = known && pg_result_is_null(r, 0, 7);
    const char *stored = known ? pg_result_value(r, 0, 7) : "";
    bool matches = strlen(stored) == sizeof(presented) - 1 &&
                   ct_memeq(stored, presented, sizeof(presented) - 1);
    bool authenticated = known && (lw->public_client ? is_public : !is_public && matches);
    bool allowed = authenticated && strcmp(pg_result_value(r, 0, 1), "t") == 0 &&
                   strcmp(pg_result_value(r, 0, 8), "t") == 0;
    const char *error = NULL, *why = NULL;
    int status = 400;
    if (!authenticated) {
        status = 401, error = "invalid_client", why = "client authentication failed";
        auth_audit_client_failed(&lw->w, lw->slug, lw->client_id);
    } else if (!allowed) {
        error = "unauthorized_client", why = "the client may not use this grant type";
    } else if (lw->scope_given && !auth_words_subset(lw->made.token.scope, pg_result_value(r, 0, 2))) {
        error = "invalid_scope", why = "a requested scope is not allowed for this client";
    }
    if (error == NULL)
        return true;
    login_forget(lw);
    auth_oauth_fail(&lw->w, status, error, why);
    return false;
}

/* Columns as STORE_LOGIN_LOOKUP: the client must be first-party; the user may be unknown. */
static void login_found(struct auth_wait *w)
{
    struct login_wait *lw = (struct login_wait *)w;
    const struct pg_result *r = w->result;
    if (lw->oauth && w->outcome == PG_OK && !login_grant_client_ok(lw, r))
        return;
    bool first_party = w->outcome == PG_OK && pg_result_rows(r) > 0 &&
                       strcmp(pg_result_value(r, 0, 1), "t") == 0;
    if (!first_party) {
        login_forget(lw);
        if (w->outcome != PG_OK)
            login_fail(lw, w->outcome);
        else if (lw->browser)
            login_answer(lw, pg_result_rows(r) == 0 ? 404 : 400,
                         pg_result_rows(r) == 0 ? "no such tenant" : login_request_spent);
        else if (pg_result_rows(r) == 0)
            auth_answer(w, 404, "no such tenant");
        else
            auth_answer(w, 400, "client_id does not name a first-party client of this tenant");
        return;
    }
    snprintf(lw->tenant_id, sizeof(lw->tenant_id), "%s", pg_result_value(r, 0, 0));
    if (!lw->browser && !lw->scope_given)
        snprintf(lw->made.token.scope, sizeof(lw->made.token.scope), "%s", pg_result_value(r, 0, 2));
    lw->lifetime_s = strtoll(pg_result_value(r, 0, 3), NULL, 10);
    /* Two users with one email: neither is chosen (as unknown: the same answer). */
    lw->user_known = pg_result_rows(r) == 1 && !pg_result_is_null(r, 0, 4);
    if (lw->user_known) {
        snprintf(lw->user_id, sizeof(lw->user_id), "%s", pg_result_value(r, 0, 4));
        snprintf(lw->stored, sizeof(lw->stored), "%s", pg_result_value(r, 0, 5));
        lw->locked = strcmp(pg_result_value(r, 0, 6), "t") == 0;
    }
    if (lw->browser)
        login_verify(lw); /* no token signed: no keys needed */
    else
        auth_tenant_get(NULL, w, lw->slug, login_keys_ready);
}

static void login_lookup(struct http_ctx *ctx, struct login_wait *lw)
{
    struct pg_query *q = &lw->w.q;
    if (lw->browser) {
        q->params[0] = lw->slug;
        q->params[1] = lw->made.page.authz;
        q->params[2] = lw->name;
        q->params[3] = lw->made.page.email[0] ? lw->made.page.email : NULL;
        q->params_count = 4;
        if (!auth_send(ctx, &lw->w, STORE_AUTHZ_LOGIN_LOOKUP, NULL, login_found) && ctx != NULL)
            login_forget(lw);
        return;
    }
    q->params[0] = lw->slug;
    q->params[1] = lw->client_id;
    q->params[2] = lw->by_email ? NULL : lw->name;
    q->params[3] = lw->by_email ? lw->name : NULL;
    q->params_count = 4;
    if (!auth_send(ctx, &lw->w, STORE_LOGIN_LOOKUP, NULL, login_found) && ctx != NULL)
        login_forget(lw);
}

static void login_rate_passed(struct auth_wait *w)
{
    login_lookup(NULL, (struct login_wait *)w);
}

/* What every login keeps of its request, once its input was checked. */
static void login_keep_request(struct http_ctx *ctx, struct login_wait *lw,
                               const struct auth_rate_check *limits)
{
    struct auth *auth = ctx->route_arg;
    auth_slug_copy(ctx->params[0], lw->slug);
    http_client_address(ctx, lw->ip, sizeof(lw->ip));
    login_agent(ctx, lw->agent);
    auth_request_id(ctx, lw->request_id, sizeof(lw->request_id));
    if (!lw->browser) {
        struct buf issuer;
        buf_init(&issuer, lw->made.token.issuer, sizeof(lw->made.token.issuer));
        auth_issuer(auth, slice_make(lw->slug, strlen(lw->slug)), &issuer);
        buf_append(&issuer, "", 1);
    }
    lw->w.rate = *limits;
}

static void login_begin(struct http_ctx *ctx, struct login_wait *lw)
{
    if (!auth_rate_pending(&lw->w.rate))
        login_lookup(ctx, lw);
    else if (auth_rate_continue(ctx, &lw->w, login_rate_passed) != 0) {
        login_forget(lw);
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
}

void auth_login_password_grant(struct http_ctx *ctx, struct auth *auth,
                               struct auth_client_creds *creds, const char *username,
                               const char *password, const char *scope, bool scope_given)
{
    bool public_client = false;
    size_t ulen = strlen(username), plen = strlen(password);
    if (ulen == 0 || plen == 0 || ulen > LOGIN_NAME_MAX || plen > PASSWORD_INPUT_MAX) {
        auth_oauth_error(ctx, 400, "invalid_request", "username and password are required");
        return;
    }
    if (auth_session_caller(ctx, creds, &public_client) != 0)
        return; /* answered */
    struct login_wait *lw = auth_park(ctx, auth, sizeof(*lw));
    if (lw == NULL)
        return;
    memcpy(lw->name, username, ulen + 1);
    char key[LOGIN_NAME_MAX + 1];
    login_name_normalise(lw, key);
    /* Before the rate check: the client's bucket is keyed on the presented secret too, so
     * wrong secrets for a client_id do not spend the real client's (auth_rate_admit). */
    hash_sha256(creds->secret, strlen(creds->secret), lw->secret_sha256);
    struct auth_rate_check limits;
    if (!auth_rate_admit_account(ctx, auth, creds->client_id, public_client ? NULL : lw->secret_sha256, key,
                                 &limits))
        return; /* answered 429: the park is undone */
    lw->oauth = true;
    lw->public_client = public_client;
    lw->scope_given = scope_given;
    snprintf(lw->made.token.scope, sizeof(lw->made.token.scope), "%s", scope);
    memcpy(lw->client_id, creds->client_id, sizeof(lw->client_id));
    memcpy(lw->secret.password, password, plen + 1);
    lw->password_len = plen;
    login_keep_request(ctx, lw, &limits);
    login_begin(ctx, lw);
}

void auth_login_browser(struct http_ctx *ctx, struct auth *auth, const struct auth_browser_login *in)
{
    const char *username = in->username, *password = in->password;
    size_t ulen = strlen(username), plen = strlen(password);
    struct login_wait *lw = auth_park(ctx, auth, sizeof(*lw));
    if (lw == NULL)
        return;
    lw->browser = true;
    snprintf(lw->made.page.authz, sizeof(lw->made.page.authz), "%s", in->authz_id);
    snprintf(lw->made.page.csrf, sizeof(lw->made.page.csrf), "%s", in->csrf);
    snprintf(lw->made.page.cookie_sid, sizeof(lw->made.page.cookie_sid), "%s", in->sso_sid); /* "": none */
    snprintf(lw->made.page.cookie_sha, sizeof(lw->made.page.cookie_sha), "%s", in->sso_sha);
    memcpy(lw->name, username, ulen + 1); /* bounded by the form's fields */
    if (strchr(username, '@') != NULL) /* also looked up as an email, as typed */
        memcpy(lw->made.page.email, username, ulen + 1);
    memcpy(lw->secret.password, password, plen + 1);
    lw->password_len = plen;
    char key[LOGIN_NAME_MAX + 1];
    login_name_normalise(lw, key);
    struct auth_rate_check limits;
    /* No client bucket: the client is the stored request's, and no secret is presented. */
    if (!auth_rate_admit_account(ctx, auth, "", NULL, key, &limits)) {
        login_forget(lw);
        return; /* answered 429 */
    }
    login_keep_request(ctx, lw, &limits);
    login_begin(ctx, lw);
}

static void login_post(struct http_ctx *ctx)
{
    struct login_wait *lw = auth_json_request(ctx, sizeof(*lw));
    if (lw == NULL)
        return;
    const char *why = login_parse(lw, ctx->body);
    if (why != NULL) {
        login_forget(lw);
        http_respond_problem(ctx, 400, why); /* answered at once: the park is undone */
        return;
    }
    char key[LOGIN_NAME_MAX + 1];
    login_name_normalise(lw, key);
    struct auth_rate_check limits;
    if (!auth_rate_admit_account(ctx, lw->w.auth, lw->client_id, NULL, key, &limits)) {
        login_forget(lw);
        return; /* answered 429 */
    }
    login_keep_request(ctx, lw, &limits);
    login_begin(ctx, lw);
}

int auth_login_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/api/v1/auth/login", "login",
                          login_post, auth);
}
