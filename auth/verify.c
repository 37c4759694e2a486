/* auth/verify.c: GET /t/{tenant}/verify, the gateway check (DESIGN §5), made for nginx
 * auth_request, Traefik forwardAuth and Envoy ext_authz (HTTP service): a check answers
 * 200, 401 or 403, the codes those gateways act on (a malformed ?scope= is 400; a spent
 * rate bucket 429, a store away 503, both with Retry-After).
 *
 *   Authorization: Bearer <access token or API key>  [?scope=a+b: every one required]
 *   → 200 with X-Auth-Subject, X-Auth-Client, X-Auth-Scope, X-Auth-Tenant, X-Auth-Token-Id
 *   → 401 WWW-Authenticate: Bearer realm=...[, error="invalid_token"] (RFC 6750 §3)
 *   → 403 WWW-Authenticate: Bearer ..., error="insufficient_scope", scope="..." (§3.1)
 *
 * The token must be an RFC 9068 access token (typ at+jwt: an ID token is refused, J rows)
 * of this tenant: issuer and audience are the tenant's issuer URL byte for byte, tid its id,
 * the key one of its published keys (SECURITY T01). The hot path is a cache hit on the
 * shard's copy of the tenant's keys: verified in place, no I/O, no allocation; only a cold
 * tenant parks the request while its keys load.
 *
 * An API key (sk_…, auth/apikey.c) answers the same way: X-Auth-Subject its user,
 * X-Auth-Client the client it acts through, X-Auth-Token-Id its id. A key the shard has not
 * cached is asked of Postgres, taking from the source address's rate bucket first, so a
 * guesser of keys meets 429 (SECURITY K07), and every key Postgres refuses is audited. Credentials in the
 * query (?access_token=, ?api_key=) are refused (K03, RFC 6750 §5.3: URLs are logged). */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "crypto/jwt.h"
#include "proto/http_auth.h"
#include "proto/url.h"

#define VERIFY_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX) /* the realm */
#define VERIFY_SCOPE_PARAM_MAX 512 /* the scopes a gateway route requires */
#define VERIFY_CHALLENGE_MAX (VERIFY_ISSUER_MAX + VERIFY_SCOPE_PARAM_MAX + 96)

/* What a parked check keeps: the token and the required scopes, copied. */
struct verify_wait {
    struct auth_wait w;
    struct auth_tenant *tenant; /* the keys loaded for it, held until the answer */
    char slug[AUTH_SLUG_MAX + 1];
    size_t token_len;
    char token[AUTH_ACCESS_TOKEN_MAX];
    char scope[VERIFY_SCOPE_PARAM_MAX + 1];
    struct auth_key_lookup key; /* an API key being asked of Postgres */
};

_Static_assert(sizeof(struct verify_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* RFC 6750 §3: the challenge; error and scope only when there is one to report. */
static void verify_challenge(struct http_ctx *ctx, const char *slug, const char *error, const char *scope)
{
    char *text = http_scratch_alloc(ctx, VERIFY_CHALLENGE_MAX);
    if (text == NULL)
        return;
    struct buf b;
    buf_init(&b, text, VERIFY_CHALLENGE_MAX);
    buf_append_cstr(&b, "Bearer realm=\"");
    buf_append_cstr(&b, slug);
    buf_append_cstr(&b, "\"");
    if (error != NULL)
        buf_printf(&b, ", error=\"%s\"", error);
    if (scope != NULL && scope[0])
        buf_printf(&b, ", scope=\"%s\"", scope); /* checked: NQCHARs and spaces only */
    if (!b.overflow)
        http_header_add(ctx, "WWW-Authenticate", buf_slice(&b));
}

static void verify_deny(struct http_ctx *ctx, int status, const char *slug, const char *error,
                        const char *scope, const char *detail)
{
    verify_challenge(ctx, slug, error, scope);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond_problem(ctx, status, detail);
}

/* True when every word of want is a word of have (both space-separated). */
static bool verify_scopes_held(const char *want, const char *have)
{
    size_t have_len = strlen(have);
    for (const char *p = want; *p;) {
        size_t n = strcspn(p, " ");
        bool found = n == 0;
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

static void verify_header_cstr(struct http_ctx *ctx, const char *name, const char *value)
{
    size_t len = strlen(value);
    char *copy = http_scratch_alloc(ctx, len);
    if (copy == NULL)
        return;
    memcpy(copy, value, len);
    http_header_add(ctx, name, slice_make(copy, len));
}

/* 200 with the token's identity for the upstream, or 403 when a required scope is missing. */
static void verify_grant(struct http_ctx *ctx, const char *slug, const char *required, const char *sub,
                         const char *client_id, const char *scope, const char *tid, const char *jti)
{
    if (!verify_scopes_held(required, scope)) {
        verify_deny(ctx, 403, slug, "insufficient_scope", required, "the token lacks a required scope");
        return;
    }
    verify_header_cstr(ctx, "X-Auth-Subject", sub);
    verify_header_cstr(ctx, "X-Auth-Client", client_id);
    verify_header_cstr(ctx, "X-Auth-Scope", scope);
    verify_header_cstr(ctx, "X-Auth-Tenant", tid);
    verify_header_cstr(ctx, "X-Auth-Token-Id", jti);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, NULL, slice_make(NULL, 0));
}

/* Answers from what the shard knows: false when the tenant's keys must be loaded first. */
static bool verify_answer(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                          const struct auth_tenant *tenant, struct slice token, const char *scope)
{
    const struct jwt_claims *c = NULL;
    int rc = auth_access_check(auth, ctx->loop, slug, tenant, token, &c);
    if (rc == -TE_EMPTY)
        return false;
    if (rc != 0)
        verify_deny(ctx, 401, slug, "invalid_token", NULL, "the access token is not valid here");
    else
        verify_grant(ctx, slug, scope, c->sub, c->client_id, c->scope, c->tid, c->jti);
    return true;
}

/* The keys could not be had: no such tenant is an invalid token here; 503 stays 503. */
static void verify_respond_failure(struct http_ctx *ctx, void *state)
{
    struct verify_wait *vw = state;
    if (vw->w.status == 503)
        http_header_add(ctx, "Retry-After", SLICE_LIT("1"));
    bool unknown = vw->w.status == 404;
    verify_deny(ctx, unknown ? 401 : vw->w.status, vw->slug, unknown ? "invalid_token" : NULL, NULL,
                vw->w.detail);
}

static void verify_respond_loaded(struct http_ctx *ctx, void *state)
{
    struct verify_wait *vw = state;
    verify_answer(ctx, vw->w.auth, vw->slug, vw->tenant, slice_make(vw->token, vw->token_len), vw->scope);
}

static void verify_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct verify_wait *vw = (struct verify_wait *)w;
    if (tenant == NULL) {
        http_resume(vw, verify_respond_failure);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    vw->tenant = tenant;
    http_resume(vw, verify_respond_loaded); /* vw is gone after this */
    auth_tenant_put(auth, loop, tenant);
}

/* ---- API keys --------------------------------------------------------------------------------- */

static void verify_key_grant(struct http_ctx *ctx, const char *slug, const char *required,
                             const struct auth_key_claims *k)
{
    verify_grant(ctx, slug, required, k->sub, k->client_id, k->scope, k->tid, k->id);
}

static void verify_key_respond(struct http_ctx *ctx, void *state)
{
    struct verify_wait *vw = state;
    if (vw->w.outcome != PG_OK) {
        vw->w.status = 503;
        vw->w.detail = AUTH_BUSY_DETAIL;
        verify_respond_failure(ctx, state);
        return;
    }
    const struct auth_key_claims *k = auth_key_answered(&vw->w, &vw->key, vw->slug);
    if (k == NULL)
        verify_deny(ctx, 401, vw->slug, "invalid_token", NULL, "the access token is not valid here");
    else
        verify_key_grant(ctx, vw->slug, vw->scope, k);
}

static void verify_key_rate_passed(struct auth_wait *w)
{
    struct verify_wait *vw = (struct verify_wait *)w;
    auth_key_ask(NULL, w, &vw->key, vw->slug, verify_key_respond);
}

static void verify_key(struct http_ctx *ctx, struct auth *auth, const char *slug, struct slice token,
                       const char *scope)
{
    struct auth_key_lookup lk;
    const struct auth_key_claims *k = NULL;
    switch (auth_key_check(auth, ctx->loop, slug, token, &lk, &k)) {
    case AUTH_KEY_LIVE:
        verify_key_grant(ctx, slug, scope, k);
        return;
    case AUTH_KEY_REFUSED:
        verify_deny(ctx, 401, slug, "invalid_token", NULL, "the access token is not valid here");
        return;
    case AUTH_KEY_ASK:
        break;
    }
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, auth, "", NULL, &limits))
        return; /* 429: the address's bucket is spent (K07) */
    struct verify_wait *vw = auth_park(ctx, auth, sizeof(*vw));
    if (vw == NULL)
        return;
    snprintf(vw->slug, sizeof(vw->slug), "%s", slug);
    snprintf(vw->scope, sizeof(vw->scope), "%s", scope);
    vw->key = lk;
    vw->w.rate = limits;
    if (!auth_rate_pending(&limits))
        auth_key_ask(ctx, &vw->w, &vw->key, vw->slug, verify_key_respond);
    else if (auth_rate_continue(ctx, &vw->w, verify_key_rate_passed) != 0)
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
}

/* K03: a credential in the URL is refused, whatever the header holds. */
static bool verify_query_credential(const struct http_ctx *ctx)
{
    char unused[1];
    return url_form_get(ctx->req->query, "access_token", unused, 0) != -1 ||
           url_form_get(ctx->req->query, "api_key", unused, 0) != -1;
}

/* The ?scope= parameter, decoded and checked (RFC 6749 §3.3 syntax); false when malformed. */
static bool verify_scope_param(const struct http_ctx *ctx, char *out)
{
    int n = url_form_get(ctx->req->query, "scope", out, VERIFY_SCOPE_PARAM_MAX);
    out[n > 0 ? n : 0] = '\0';
    if (n == -1)
        return true;
    if (n < 0)
        return false;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (!(c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e)))
            return false;
    }
    return true;
}

static void verify_get(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    char slug[AUTH_SLUG_MAX + 1];
    auth_slug_copy(ctx->params[0], slug);
    char scope[VERIFY_SCOPE_PARAM_MAX + 1];
    if (!verify_scope_param(ctx, scope)) {
        http_respond_problem(ctx, 400, "the scope parameter is malformed");
        return;
    }
    if (verify_query_credential(ctx)) {
        verify_deny(ctx, 401, slug, "invalid_request", NULL, "credentials in the URL are refused");
        return;
    }
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    if (h == NULL) {
        verify_deny(ctx, 401, slug, NULL, NULL, "an access token is required");
        return;
    }
    struct slice token = http_auth_bearer(h->value);
    if (token.len == 0 || token.len > AUTH_ACCESS_TOKEN_MAX) {
        verify_deny(ctx, 401, slug, "invalid_token", NULL, "the Authorization header holds no Bearer token");
        return;
    }
    if (auth_key_prefixed(token)) {
        verify_key(ctx, auth, slug, token, scope);
        return;
    }
    if (verify_answer(ctx, auth, slug, NULL, token, scope))
        return; /* the hot path: the shard had what it needed */
    struct verify_wait *vw = auth_park(ctx, auth, sizeof(*vw));
    if (vw == NULL)
        return;
    memcpy(vw->slug, slug, sizeof(slug));
    memcpy(vw->token, token.ptr, token.len);
    vw->token_len = token.len;
    memcpy(vw->scope, scope, sizeof(scope));
    auth_tenant_get(ctx, &vw->w, vw->slug, verify_keys_ready);
}

int auth_verify_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/verify", "verify", verify_get, auth);
}
