/* auth/token.c: POST /t/{tenant}/oauth2/token (RFC 6749 §3.2), grant client_credentials
 * (§4.4) so far; the other grants answer unsupported_grant_type until they land.
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
#include "proto/http_auth.h"
#include "proto/url.h"

#define TOKEN_CLIENT_ID_MAX 128   /* the schema's bound on clients.client_id */
#define TOKEN_SECRET_MAX 256      /* generated secrets are 43 characters */
#define TOKEN_GRANT_MAX 64
#define TOKEN_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX)
#define TOKEN_JWT_MAX 4096        /* header + claims with a full scope + an RSA-4096 signature */
#define TOKEN_PAYLOAD_MAX 2048    /* the claims object */

struct token_wait {
    struct auth_wait w;
    struct worker_job job;
    struct auth_tenant *tenant;
    int jwt_len;
    int64_t iat;
    int64_t lifetime_s;
    char slug[AUTH_SLUG_MAX + 1];
    char client_id[TOKEN_CLIENT_ID_MAX + 1];
    uint8_t secret_sha256[HASH_SHA256_BYTES];
    bool scope_given;
    char scope[JWT_SCOPE_MAX + 1];   /* requested, then granted */
    char jti[CT_UUID_TEXT_LEN + 1];
    char issuer[TOKEN_ISSUER_MAX + 1];
    char jwt[TOKEN_JWT_MAX];
};

_Static_assert(sizeof(struct token_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* ---- The request --------------------------------------------------------------------------- */

struct token_form {
    char grant_type[TOKEN_GRANT_MAX + 1];
    char client_id[TOKEN_CLIENT_ID_MAX + 1];
    char client_secret[TOKEN_SECRET_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1];
    bool has_grant, has_id, has_secret, has_scope;
};

/* One known parameter into its field. The reason it is refused, or NULL. */
static const char *token_form_take(struct slice raw, char *dst, size_t cap, bool *seen)
{
    if (*seen)
        return "a parameter is repeated"; /* RFC 6749 §3.2 */
    *seen = true;
    if (raw.len >= cap)
        return "a parameter is too long";
    int n = url_decode_form_component(raw, dst);
    if (n < 0 || memchr(dst, '\0', (size_t)n) != NULL)
        return "a parameter is malformed";
    dst[n] = '\0';
    return NULL;
}

static const char *token_form_parse(struct slice body, struct token_form *f)
{
    size_t pos = 0;
    struct slice key, value;
    while (url_form_next(body, &pos, &key, &value)) {
        const char *why = NULL;
        if (slice_eq_cstr(key, "grant_type"))
            why = token_form_take(value, f->grant_type, sizeof(f->grant_type), &f->has_grant);
        else if (slice_eq_cstr(key, "client_id"))
            why = token_form_take(value, f->client_id, sizeof(f->client_id), &f->has_id);
        else if (slice_eq_cstr(key, "client_secret"))
            why = token_form_take(value, f->client_secret, sizeof(f->client_secret), &f->has_secret);
        else if (slice_eq_cstr(key, "scope"))
            why = token_form_take(value, f->scope, sizeof(f->scope), &f->has_scope);
        /* anything else is ignored (RFC 6749 §3.2) */
        if (why != NULL)
            return why;
    }
    return NULL;
}

static bool token_form_body(const struct http_ctx *ctx)
{
    static const char form[] = "application/x-www-form-urlencoded";
    const struct http1_header *h = http1_find_header(ctx->req, "Content-Type");
    if (h == NULL || h->value.len < sizeof(form) - 1 || strncasecmp(h->value.ptr, form, sizeof(form) - 1) != 0)
        return false;
    return h->value.len == sizeof(form) - 1 || h->value.ptr[sizeof(form) - 1] == ';';
}

/* RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR. */
static bool token_scope_valid(const char *scope)
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

/* The client's credentials from Basic or the form, exactly one method (RFC 6749 §2.3).
 * 0, or the status to answer: 400 invalid_request or 401 invalid_client (*why says). */
static int token_client_credentials(const struct http_ctx *ctx, struct token_form *f, const char **why)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    if (h != NULL) {
        char id[TOKEN_CLIENT_ID_MAX + 1];
        if (f->has_secret) {
            *why = "the client authenticated with more than one method";
            return 400;
        }
        if (http_auth_basic(h->value, id, sizeof(id), f->client_secret, sizeof(f->client_secret)) != 0) {
            *why = "the Authorization header is not valid Basic credentials";
            return 401;
        }
        if (f->has_id && strcmp(id, f->client_id) != 0) {
            *why = "client_id differs from the authenticated client";
            return 400;
        }
        memcpy(f->client_id, id, sizeof(id));
        f->has_id = f->has_secret = true;
    }
    if (!f->has_id || !f->has_secret || f->client_id[0] == '\0') {
        *why = "client authentication is required";
        return 401;
    }
    return 0;
}

/* ---- The stages ------------------------------------------------------------------------------ */

static void token_respond(struct http_ctx *ctx, void *state)
{
    struct token_wait *tw = state;
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"access_token\":");
    buf_append_json_string(&body, slice_make(tw->jwt, (size_t)tw->jwt_len));
    buf_printf(&body, ",\"token_type\":\"Bearer\",\"expires_in\":%lld", (long long)tw->lifetime_s);
    if (tw->scope[0]) {
        buf_append_cstr(&body, ",\"scope\":");
        buf_append_json_string(&body, slice_make(tw->scope, strlen(tw->scope)));
    }
    buf_append_cstr(&body, "}");
    explicit_bzero(tw->jwt, sizeof(tw->jwt));
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store")); /* RFC 6749 §5.1 */
    http_header_add(ctx, "Pragma", SLICE_LIT("no-cache"));
    http_respond(ctx, 200, "application/json", buf_slice(&body));
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
        .sub = slice_make(tw->client_id, strlen(tw->client_id)), /* RFC 9068 §2.2 */
        .aud = slice_make(tw->issuer, strlen(tw->issuer)),
        .jti = slice_make(tw->jti, strlen(tw->jti)),
        .client_id = slice_make(tw->client_id, strlen(tw->client_id)),
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
    http_resume(tw, token_respond);
}

static void token_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct token_wait *tw = (struct token_wait *)w;
    if (tenant == NULL) {
        auth_answer(w, w->status, w->detail);
        return;
    }
    if (keyset_signing_key(&tenant->keys) == NULL) {
        auth_tenant_put(w->auth, w->loop, tenant);
        log_msg(LOG_ERROR, "the tenant has no usable signing key", "tenant", tw->slug, NULL);
        auth_answer(w, 503, "the tenant has no signing key; retry later");
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
    if (workers_submit(w->auth->workers, loop_index(w->loop), &tw->job) != 0) {
        auth_tenant_put(w->auth, w->loop, tenant);
        tw->tenant = NULL;
        auth_answer(w, 503, "the server is busy; retry later"); /* SECURITY F15 */
    }
}

/* True when every space-separated word of `want` is a word of `have`. */
static bool token_words_subset(const char *want, const char *have)
{
    size_t have_len = strlen(have);
    for (const char *p = want; *p;) {
        size_t n = strcspn(p, " ");
        bool found = false;
        for (const char *q = have; q < have + have_len && !found;) {
            size_t m = strcspn(q, " ");
            found = m == n && memcmp(p, q, n) == 0;
            q += m + (q[m] == ' ');
        }
        if (!found)
            return false;
        p += n + (p[n] == ' ');
    }
    return true;
}

static bool token_secret_matches(const struct token_wait *tw, const char *stored_hex)
{
    uint8_t stored[HASH_SHA256_BYTES];
    if (strlen(stored_hex) != 2 * HASH_SHA256_BYTES)
        return false; /* a public client (no secret) cannot use client_credentials */
    for (size_t i = 0; i < HASH_SHA256_BYTES; i++) {
        unsigned v = 0;
        if (sscanf(stored_hex + 2 * i, "%2x", &v) != 1)
            return false;
        stored[i] = (uint8_t)v;
    }
    return ct_memeq(stored, tw->secret_sha256, HASH_SHA256_BYTES);
}

static void token_client_found(struct auth_wait *w)
{
    struct token_wait *tw = (struct token_wait *)w;
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    const struct pg_result *r = w->result;
    if (pg_result_rows(r) != 1 || !token_secret_matches(tw, pg_result_value(r, 0, 2))) {
        auth_oauth_fail(w, 401, "invalid_client", "client authentication failed");
        return;
    }
    if (!token_words_subset("client_credentials", pg_result_value(r, 0, 3))) {
        auth_oauth_fail(w, 400, "unauthorized_client", "the client may not use this grant type");
        return;
    }
    const char *allowed = pg_result_value(r, 0, 4);
    if (tw->scope_given && !token_words_subset(tw->scope, allowed)) {
        auth_oauth_fail(w, 400, "invalid_scope", "a requested scope is not allowed for this client");
        return;
    }
    if (!tw->scope_given)
        snprintf(tw->scope, sizeof(tw->scope), "%s", allowed);
    tw->lifetime_s = strtoll(pg_result_value(r, 0, 5), NULL, 10);
    auth_tenant_get(NULL, w, tw->slug, token_keys_ready);
}

/* The checks that need no store, in RFC 6749's order; 0 when all pass. */
static int token_check_request(struct http_ctx *ctx, struct token_form *f)
{
    const char *why = NULL;
    if (!token_form_body(ctx)) {
        auth_oauth_error(ctx, 400, "invalid_request", "the body must be application/x-www-form-urlencoded");
        return -1;
    }
    if ((why = token_form_parse(ctx->body, f)) != NULL || !f->has_grant) {
        auth_oauth_error(ctx, 400, "invalid_request", why ? why : "grant_type is missing");
        return -1;
    }
    int status = token_client_credentials(ctx, f, &why);
    if (status != 0) {
        auth_oauth_error(ctx, status, status == 401 ? "invalid_client" : "invalid_request", why);
        return -1;
    }
    if (strcmp(f->grant_type, "client_credentials") != 0) {
        auth_oauth_error(ctx, 400, "unsupported_grant_type", "this grant type is not supported");
        return -1;
    }
    if (f->has_scope && !token_scope_valid(f->scope)) {
        auth_oauth_error(ctx, 400, "invalid_scope", "scope is malformed");
        return -1;
    }
    return 0;
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
    memset(f, 0, sizeof(*f));
    int rc = token_check_request(ctx, f);
    struct token_wait *tw = rc == 0 ? auth_park(ctx, auth, sizeof(*tw)) : NULL;
    if (tw != NULL) {
        auth_slug_copy(ctx->params[0], tw->slug);
        memcpy(tw->client_id, f->client_id, sizeof(tw->client_id));
        hash_sha256(f->client_secret, strlen(f->client_secret), tw->secret_sha256);
        tw->scope_given = f->has_scope;
        memcpy(tw->scope, f->scope, sizeof(tw->scope));
        struct buf issuer;
        buf_init(&issuer, tw->issuer, sizeof(tw->issuer));
        auth_issuer(auth, slice_make(tw->slug, strlen(tw->slug)), &issuer);
        buf_append(&issuer, "", 1);
        tw->w.q.params[0] = tw->client_id;
        tw->w.q.params[1] = tw->slug;
        tw->w.q.params_count = 2;
        auth_send(ctx, &tw->w, STORE_CLIENT_BY_ID, NULL, token_client_found);
    }
    explicit_bzero(f->client_secret, sizeof(f->client_secret));
}

int auth_token_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/token", "token", token_post, auth);
}
