/* auth/token.c: POST /t/{tenant}/oauth2/token (RFC 6749 §3.2), grants client_credentials
 * (§4.4), authorization_code (§4.1.3, auth/code.c), refresh_token (§6, auth/session.c) and
 * password (§4.3, auth/login.c: first-party clients only); any other is
 * unsupported_grant_type.
 *
 * The stages: form and client credentials checked on the shard (client_secret_basic or
 * client_secret_post, never both, §2.3) → the client read by client_id within the path's
 * tenant (SECURITY T02: another tenant's client is unknown here) → its secret's SHA-256
 * compared in constant time, the grant and the scopes checked (§3.3: the requested scopes
 * must be a subset of the client's; none requested means all of them) → the tenant's keys
 * (auth/tenants.c) → the RFC 9068 access token rendered and signed on the worker pool (RSA
 * signing costs ~0.3 ms: never on a shard, DESIGN §4) → §5.1's answer with no-store. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "crypto/hash.h"
#include "crypto/jwt.h"

#define TOKEN_GRANT_MAX 64
#define TOKEN_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX)
#define TOKEN_JWT_MAX 4096        /* header + claims with a full scope + an RSA-4096 signature */
#define TOKEN_PAYLOAD_MAX 2048    /* the claims object */
#define TOKEN_CODE_MAX 256        /* Tessera's codes are 43 characters; longer is no code */
/* A redirect_uri as sent: RFC 6749 §4.1.3 wants it form-encoded, which can triple it. */
#define TOKEN_REDIRECT_SENT_MAX (3 * AUTH_REDIRECT_URI_MAX)

struct token_wait {
    struct auth_wait w;
    struct worker_job job;
    struct auth_tenant *tenant;
    int jwt_len;
    int64_t iat;
    int64_t lifetime_s;
    struct auth_client_wait cw;
    bool scope_given;
    char scope[JWT_SCOPE_MAX + 1];   /* requested, then granted */
    char jti[CT_UUID_TEXT_LEN + 1];
    char issuer[TOKEN_ISSUER_MAX + 1];
    char jwt[TOKEN_JWT_MAX];
};

_Static_assert(sizeof(struct token_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* ---- The request --------------------------------------------------------------------------- */

/* RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR. */
bool auth_scope_valid(const char *scope)
{
    size_t len = strlen(scope);
    if (len == 0 || scope[0] == ' ' || scope[len - 1] == ' ')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)scope[i];
        bool nqchar = c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
        if (!nqchar && !(c == ' ' && scope[i + 1] != ' '))
            return false;
    }
    return true;
}

/* ---- The stages ------------------------------------------------------------------------------ */

static void token_respond(struct http_ctx *ctx, void *state)
{
    struct token_wait *tw = state;
    struct auth_token_answer a = {
        .access = slice_make(tw->jwt, (size_t)tw->jwt_len), .lifetime_s = tw->lifetime_s, .scope = tw->scope,
    };
    auth_token_respond(ctx, &a);
    explicit_bzero(tw->jwt, sizeof(tw->jwt));
}

/* On a worker: render the claims and sign them (RFC 9068 §2.1: typ at+jwt). */
static void token_sign_run(struct worker_job *job)
{
    struct token_wait *tw = (struct token_wait *)((char *)job - offsetof(struct token_wait, job));
    static _Thread_local char payload_mem[TOKEN_PAYLOAD_MAX];
    struct buf payload;
    buf_init(&payload, payload_mem, sizeof(payload_mem));
    struct jwt_access claims = {
        .iss = slice_make(tw->issuer, strlen(tw->issuer)),
        .sub = slice_make(tw->cw.client_id, strlen(tw->cw.client_id)), /* RFC 9068 §2.2 */
        .aud = slice_make(tw->issuer, strlen(tw->issuer)),
        .jti = slice_make(tw->jti, strlen(tw->jti)),
        .client_id = slice_make(tw->cw.client_id, strlen(tw->cw.client_id)),
        .scope = slice_make(tw->scope, strlen(tw->scope)),
        .tid = slice_make(tw->tenant->id, strlen(tw->tenant->id)),
        .iat = tw->iat,
        .lifetime_s = tw->lifetime_s,
    };
    const struct jwk_key *key = keyset_signing_key(&tw->tenant->keys);
    tw->jwt_len = jwt_access_render(&claims, &payload) != 0 ? -TE_NOMEM
                  : jwt_sign(key, "at+jwt", buf_slice(&payload), tw->jwt, sizeof(tw->jwt));
}

static void token_sign_done(struct worker_job *job)
{
    struct token_wait *tw = (struct token_wait *)((char *)job - offsetof(struct token_wait, job));
    auth_tenant_put(tw->w.auth, tw->w.loop, tw->tenant);
    tw->tenant = NULL;
    if (tw->jwt_len <= 0) {
        log_msg(LOG_ERROR, "signing an access token failed", NULL);
        auth_answer(&tw->w, 500, "internal error");
        return;
    }
    auth_audit_token_issued(&tw->w, tw->cw.slug, tw->cw.client_id, tw->jti, tw->scope);
    http_resume(tw, token_respond);
}

static void token_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct token_wait *tw = (struct token_wait *)w;
    if (tenant == NULL || !auth_tenant_signs(w, tenant)) {
        auth_answer(w, w->status, w->detail);
        return;
    }
    tw->tenant = tenant;
    uint8_t uuid[CT_UUID_BYTES];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    tw->iat = now.tv_sec;
    ct_uuid7((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000, uuid);
    ct_uuid_format(uuid, tw->jti);
    tw->job.run = token_sign_run;
    tw->job.done = token_sign_done;
    if (auth_sign_job(w, tenant, &tw->job) != 0) {
        auth_tenant_put(w->auth, w->loop, tenant);
        tw->tenant = NULL;
        auth_answer(w, 503, AUTH_BUSY_DETAIL); /* SECURITY F15 */
    }
}

static void token_client_ready(struct auth_wait *w, const struct auth_client *client)
{
    struct token_wait *tw = (struct token_wait *)w;
    if (client == NULL) {
        auth_client_refused(w);
        return;
    }
    if (!auth_words_subset("client_credentials", client->grants)) {
        auth_oauth_fail(w, 400, "unauthorized_client", "the client may not use this grant type");
        return;
    }
    if (tw->scope_given && !auth_words_subset(tw->scope, client->scopes)) {
        auth_oauth_fail(w, 400, "invalid_scope", "a requested scope is not allowed for this client");
        return;
    }
    if (!tw->scope_given)
        snprintf(tw->scope, sizeof(tw->scope), "%s", client->scopes);
    tw->lifetime_s = client->lifetime_s;
    auth_tenant_get(NULL, w, tw->cw.slug, token_keys_ready);
}

static void token_rate_passed(struct auth_wait *w)
{
    struct token_wait *tw = (struct token_wait *)w;
    auth_client_authenticate(NULL, w, &tw->cw, false, token_client_ready);
}

struct token_form {
    char grant_type[TOKEN_GRANT_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1];
    char refresh_token[AUTH_REFRESH_TOKEN_LEN + 2]; /* longer is invalid_request */
    char username[AUTH_LOGIN_NAME_MAX + 1];
    char password[PASSWORD_INPUT_MAX + 1];          /* longer is invalid_request (P08) */
    char code[TOKEN_CODE_MAX + 1];
    char redirect_uri[TOKEN_REDIRECT_SENT_MAX + 1];
    char code_verifier[AUTH_CODE_VERIFIER_MAX + 2]; /* longer is invalid_request (O06) */
    struct auth_client_creds creds;
};

/* The grants whose callers identify themselves (a public client may use them). */
enum token_grant { TOKEN_CLIENT_CREDENTIALS, TOKEN_REFRESH, TOKEN_PASSWORD, TOKEN_CODE, TOKEN_ANSWERED };

/* The checks that need no store, in RFC 6749's order: the grant, or TOKEN_ANSWERED. */
static enum token_grant token_check_request(struct http_ctx *ctx, struct token_form *f, bool *scope_given,
                                            struct auth_code_request *code)
{
    struct auth_form_field fields[] = {
        { "grant_type", f->grant_type, sizeof(f->grant_type), false },
        { "scope", f->scope, sizeof(f->scope), false },
        { "client_id", f->creds.client_id, sizeof(f->creds.client_id), false },
        { "client_secret", f->creds.secret, sizeof(f->creds.secret), false },
        { "refresh_token", f->refresh_token, sizeof(f->refresh_token), false },
        { "username", f->username, sizeof(f->username), false },
        { "password", f->password, sizeof(f->password), false },
        { "code", f->code, sizeof(f->code), false },
        { "redirect_uri", f->redirect_uri, sizeof(f->redirect_uri), false },
        { "code_verifier", f->code_verifier, sizeof(f->code_verifier), false },
    };
    const char *why = auth_form_parse(ctx, fields, sizeof(fields) / sizeof(fields[0]));
    if (why != NULL || !fields[0].seen) {
        auth_oauth_error(ctx, 400, "invalid_request", why ? why : "grant_type is missing");
        return TOKEN_ANSWERED;
    }
    f->creds.has_id = fields[2].seen;
    f->creds.has_secret = fields[3].seen;
    *scope_given = fields[1].seen;
    if (strcmp(f->grant_type, "authorization_code") == 0) {
        /* RFC 6749 §4.1.3: the scope is the authorization's; a scope parameter is ignored. */
        *code = (struct auth_code_request){ .code = f->code, .redirect_uri = f->redirect_uri,
                                            .verifier = f->code_verifier, .redirect_given = fields[8].seen,
                                            .verifier_given = fields[9].seen };
        return TOKEN_CODE;
    }
    bool refresh = strcmp(f->grant_type, "refresh_token") == 0;
    if (refresh || strcmp(f->grant_type, "password") == 0) {
        if (*scope_given && !auth_scope_valid(f->scope)) {
            auth_oauth_error(ctx, 400, "invalid_scope", "scope is malformed");
            return TOKEN_ANSWERED;
        }
        return refresh ? TOKEN_REFRESH : TOKEN_PASSWORD;
    }
    int status = auth_client_credentials(ctx, &f->creds, &why);
    if (status != 0) {
        auth_oauth_error(ctx, status, status == 401 ? "invalid_client" : "invalid_request", why);
        return TOKEN_ANSWERED;
    }
    if (strcmp(f->grant_type, "client_credentials") != 0) {
        auth_oauth_error(ctx, 400, "unsupported_grant_type", "this grant type is not supported");
        return TOKEN_ANSWERED;
    }
    if (*scope_given && !auth_scope_valid(f->scope)) {
        auth_oauth_error(ctx, 400, "invalid_scope", "scope is malformed");
        return TOKEN_ANSWERED;
    }
    return TOKEN_CLIENT_CREDENTIALS;
}

static void token_post(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    struct token_form *f = http_scratch_alloc(ctx, sizeof(*f));
    if (f == NULL) {
        http_respond_problem(ctx, 500, "internal error");
        return;
    }
    bool scope_given = false;
    struct auth_rate_check limits;
    struct auth_code_request code;
    enum token_grant grant = token_check_request(ctx, f, &scope_given, &code);
    if (grant == TOKEN_REFRESH || grant == TOKEN_PASSWORD || grant == TOKEN_CODE) {
        if (grant == TOKEN_REFRESH)
            auth_session_refresh(ctx, auth, &f->creds, f->refresh_token, f->scope, scope_given);
        else if (grant == TOKEN_PASSWORD)
            auth_login_password_grant(ctx, auth, &f->creds, f->username, f->password, f->scope,
                                      scope_given);
        else
            auth_code_grant(ctx, auth, &f->creds, &code);
        explicit_bzero(f, sizeof(*f));
        return;
    }
    int rc = grant == TOKEN_CLIENT_CREDENTIALS ? 0 : -1;
    uint8_t secret_sha256[HASH_SHA256_BYTES]; /* of a well-formed request's secret only */
    if (rc == 0)
        hash_sha256(f->creds.secret, strlen(f->creds.secret), secret_sha256);
    if (rc == 0 && !auth_rate_admit(ctx, auth, f->creds.client_id, secret_sha256, &limits))
        rc = -1; /* answered 429 */
    struct token_wait *tw = rc == 0 ? auth_park(ctx, auth, sizeof(*tw)) : NULL;
    if (tw != NULL) {
        auth_slug_copy(ctx->params[0], tw->cw.slug);
        memcpy(tw->cw.client_id, f->creds.client_id, sizeof(tw->cw.client_id));
        memcpy(tw->cw.secret_sha256, secret_sha256, sizeof(secret_sha256));
        tw->scope_given = scope_given;
        memcpy(tw->scope, f->scope, sizeof(tw->scope));
        struct buf issuer;
        buf_init(&issuer, tw->issuer, sizeof(tw->issuer));
        auth_issuer(auth, slice_make(tw->cw.slug, strlen(tw->cw.slug)), &issuer);
        buf_append(&issuer, "", 1);
        tw->w.rate = limits;
        if (!auth_rate_pending(&limits))
            auth_client_authenticate(ctx, &tw->w, &tw->cw, false, token_client_ready);
        else if (auth_rate_continue(ctx, &tw->w, token_rate_passed) != 0)
            auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
    explicit_bzero(f->creds.secret, sizeof(f->creds.secret));
}

int auth_token_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/token", "token", token_post, auth);
}
