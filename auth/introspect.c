/* auth/introspect.c: POST /t/{tenant}/oauth2/introspect (RFC 7662), for gateways and
 * resource servers.
 *
 * Only an authenticated client (client_secret_basic or _post) flagged can_introspect may
 * ask (§2.1; others: 401 invalid_client, 403 unauthorized_client). The answer is §2.2's:
 * for a valid access token of this tenant active:true with scope, client_id, sub, exp, iat,
 * nbf, jti, iss, aud, token_type and tid; for a refresh token (rt_…) of a live session whose
 * current token it is, asked by the session's own client, active:true with scope, client_id,
 * sub, exp, iat, iss, token_type "refresh_token", sid and tid (read from the primary); for a
 * live API key (sk_…, auth/apikey.c) of this tenant active:true with scope, client_id, sub
 * (its user), iat (made), exp (when it expires), jti (its id), iss, token_type "api_key" and
 * tid; for anything else — another tenant's token (T01, T04), an expired or forged one,
 * another client's refresh token (O34), a revoked key — just {"active":false}, which says
 * nothing about why (§2.2).
 *
 * The hot path (a gateway asking again): the client's result and the token's are both in
 * the shard's caches, so the answer is written without parking, one SHA-256 and one digest.
 * Otherwise the request parks for the client's row and, when needed, the tenant's keys. */
#include "auth/auth_int.h"

#include <string.h>
#include <time.h>

#define INTROSPECT_HINT_MAX 64
#define INTROSPECT_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX + 1)

struct introspect_wait {
    struct auth_wait w;
    struct auth_client_wait cw;
    struct auth_tenant *tenant; /* loaded for it, held until the answer */
    char sid[CT_UUID_TEXT_LEN + 1];            /* a refresh token's session */
    char sha_hex[2 * HASH_SHA256_BYTES + 1];   /* and its digest */
    struct auth_key_lookup key;                /* an API key being asked of Postgres */
    size_t token_len;
    char token[AUTH_ACCESS_TOKEN_MAX];
};

_Static_assert(sizeof(struct introspect_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* Every active answer's first members (§2.2), in the request's scratch. */
static struct buf introspect_active_begin(struct http_ctx *ctx, const char *scope, const char *client_id,
                                          const char *sub)
{
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"active\":true");
    auth_json_text(&body, "scope", scope);
    auth_json_text(&body, "client_id", client_id);
    auth_json_text(&body, "sub", sub);
    return body;
}

/* "iss" (and "aud" when asked) as the tenant's issuer URL. */
static void introspect_issuer(struct buf *body, const struct auth *auth, const char *slug, bool aud)
{
    char mem[INTROSPECT_ISSUER_MAX];
    struct buf issuer;
    buf_init(&issuer, mem, sizeof(mem));
    auth_issuer(auth, slice_make(slug, strlen(slug)), &issuer);
    buf_append_cstr(body, ",\"iss\":");
    buf_append_json_string(body, buf_slice(&issuer));
    if (aud) {
        buf_append_cstr(body, ",\"aud\":");
        buf_append_json_string(body, buf_slice(&issuer));
    }
}

static void introspect_respond_json(struct http_ctx *ctx, struct buf *body)
{
    http_scratch_commit(ctx, body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_header_add(ctx, "Pragma", SLICE_LIT("no-cache"));
    http_respond(ctx, 200, "application/json", buf_slice(body));
}

static void introspect_active(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                              const struct jwt_claims *c)
{
    struct buf body = introspect_active_begin(ctx, c->scope, c->client_id, c->sub);
    buf_printf(&body, ",\"exp\":%lld,\"iat\":%lld", (long long)c->exp, (long long)c->iat);
    if (c->nbf != 0)
        buf_printf(&body, ",\"nbf\":%lld", (long long)c->nbf);
    auth_json_text(&body, "jti", c->jti);
    introspect_issuer(&body, auth, slug, true); /* iss and aud were checked equal to it */
    buf_append_cstr(&body, ",\"token_type\":\"Bearer\"");
    auth_json_text(&body, "tid", c->tid);
    buf_append_cstr(&body, "}");
    introspect_respond_json(ctx, &body);
}

static void introspect_inactive(struct http_ctx *ctx)
{
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"active\":false}");
    introspect_respond_json(ctx, &body);
}

/* A refresh token's answer (§2.2): its session's row, read for the asking client. */
static void introspect_refresh_respond(struct http_ctx *ctx, void *state)
{
    struct introspect_wait *iw = state;
    const struct pg_result *r = iw->w.result;
    if (iw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, iw->w.outcome);
        return;
    }
    if (pg_result_rows(r) != 1) {
        introspect_inactive(ctx); /* unknown, rotated, revoked, expired, or another client's */
        return;
    }
    struct buf body = introspect_active_begin(ctx, pg_result_value(r, 0, 2), iw->cw.client_id,
                                              pg_result_value(r, 0, 1));
    buf_printf(&body, ",\"exp\":%s,\"iat\":%s", pg_result_value(r, 0, 3), pg_result_value(r, 0, 4));
    introspect_issuer(&body, iw->w.auth, iw->cw.slug, false);
    buf_append_cstr(&body, ",\"token_type\":\"refresh_token\"");
    auth_json_text(&body, "sid", iw->sid);
    auth_json_text(&body, "tid", pg_result_value(r, 0, 0));
    buf_append_cstr(&body, "}");
    introspect_respond_json(ctx, &body);
}

/* rt_<session>.<secret> (DESIGN §4): asked of Postgres, with the asking client. False when
 * the token is not of that form. */
static bool introspect_refresh(struct introspect_wait *iw)
{
    if (iw->token_len != AUTH_REFRESH_TOKEN_LEN || /* then NUL-terminated: the state was zeroed */
        auth_refresh_parse(iw->token, iw->sid, iw->sha_hex) != 0)
        return false;
    const char **p = iw->w.q.params;
    p[0] = iw->cw.slug, p[1] = iw->sid, p[2] = iw->sha_hex, p[3] = iw->cw.client_id;
    iw->w.q.params_count = 4;
    auth_send(NULL, &iw->w, STORE_REFRESH_INTROSPECT, introspect_refresh_respond, NULL);
    return true;
}

/* A live API key's answer (§2.2). */
static void introspect_key_active(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                                  const struct auth_key_claims *k)
{
    struct buf body = introspect_active_begin(ctx, k->scope, k->client_id, k->sub);
    buf_printf(&body, ",\"iat\":%lld", (long long)k->created);
    if (k->expires != 0)
        buf_printf(&body, ",\"exp\":%lld", (long long)k->expires);
    auth_json_text(&body, "jti", k->id);
    introspect_issuer(&body, auth, slug, false);
    buf_append_cstr(&body, ",\"token_type\":\"api_key\"");
    auth_json_text(&body, "tid", k->tid);
    buf_append_cstr(&body, "}");
    introspect_respond_json(ctx, &body);
}

static void introspect_key_respond(struct http_ctx *ctx, void *state)
{
    struct introspect_wait *iw = state;
    if (iw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, iw->w.outcome);
        return;
    }
    const struct auth_key_claims *k = auth_key_answered(&iw->w, &iw->key, iw->cw.slug);
    if (k == NULL)
        introspect_inactive(ctx);
    else
        introspect_key_active(ctx, iw->w.auth, iw->cw.slug, k);
}

/* sk_…: from the shard's cache, else asked of Postgres. */
static bool introspect_key_answer(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                                  struct slice token)
{
    struct auth_key_lookup lk;
    const struct auth_key_claims *k = NULL;
    switch (auth_key_check(auth, ctx->loop, slug, token, &lk, &k)) {
    case AUTH_KEY_LIVE:
        introspect_key_active(ctx, auth, slug, k);
        return true;
    case AUTH_KEY_REFUSED:
        introspect_inactive(ctx);
        return true;
    case AUTH_KEY_ASK:
        break;
    }
    return false;
}

static void introspect_inactive_respond(struct http_ctx *ctx, void *state)
{
    (void)state;
    introspect_inactive(ctx);
}

/* The parked request's key: refused at once when the shard knows it is not live, else asked
 * of Postgres (the parked path is the cold one). False when the token is no key. */
static bool introspect_key(struct introspect_wait *iw)
{
    struct slice token = slice_make(iw->token, iw->token_len);
    if (!auth_key_prefixed(token))
        return false;
    const struct auth_key_claims *k = NULL;
    if (auth_key_check(iw->w.auth, iw->w.loop, iw->cw.slug, token, &iw->key, &k) == AUTH_KEY_REFUSED)
        http_resume(iw, introspect_inactive_respond);
    else
        auth_key_ask(NULL, &iw->w, &iw->key, iw->cw.slug, introspect_key_respond);
    return true;
}

/* A compact JWS has exactly two dots; anything else is a kind this endpoint does not know yet. */
static bool introspect_looks_like_jwt(struct slice token)
{
    const char *p = token.ptr, *end = token.ptr + token.len;
    for (int dots = 0; dots < 3; dots++) { /* memchr: a token is ~800 bytes, on every request */
        p = p < end ? memchr(p, '.', (size_t)(end - p)) : NULL;
        if (p == NULL)
            return dots == 2;
        p++;
    }
    return false; /* a third dot */
}

/* Answers from what the shard knows; false when the tenant's keys must be loaded first, or
 * Postgres asked (a refresh token). */
static bool introspect_answer(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                              const struct auth_tenant *tenant, struct slice token)
{
    if (!introspect_looks_like_jwt(token)) {
        /* Only a well-formed refresh token parks for Postgres: a non-canonical secret (one
         * character changed) parked, then failed to parse, and was answered 500. */
        if (auth_refresh_well_formed(token))
            return false; /* Postgres knows: park */
        if (auth_key_prefixed(token))
            return introspect_key_answer(ctx, auth, slug, token);
        introspect_inactive(ctx);
        return true;
    }
    const struct jwt_claims *c = NULL;
    int rc = auth_access_check(auth, ctx->loop, slug, tenant, token, &c);
    if (rc == -TE_EMPTY)
        return false;
    if (rc == 0)
        introspect_active(ctx, auth, slug, c);
    else
        introspect_inactive(ctx);
    return true;
}

/* ---- The parked path -------------------------------------------------------------------------- */

static void introspect_respond(struct http_ctx *ctx, void *state)
{
    struct introspect_wait *iw = state;
    if (!introspect_answer(ctx, iw->w.auth, iw->cw.slug, iw->tenant, slice_make(iw->token, iw->token_len)))
        http_respond_problem(ctx, 500, "internal error"); /* keys were just loaded: cannot happen */
}

static void introspect_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct introspect_wait *iw = (struct introspect_wait *)w;
    if (tenant == NULL) {
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    iw->tenant = tenant;
    http_resume(iw, introspect_respond); /* iw is gone after this */
    auth_tenant_put(auth, loop, tenant);
}

static bool introspect_needs_keys(const struct introspect_wait *iw)
{
    struct slice token = slice_make(iw->token, iw->token_len);
    return introspect_looks_like_jwt(token) &&
           auth_vcache_get(iw->w.auth->shards[loop_index(iw->w.loop)]->verified, iw->cw.slug, token, time(NULL)) == NULL &&
           auth_tenant_cached(iw->w.auth, iw->w.loop, iw->cw.slug) == NULL;
}

static void introspect_client_ready(struct auth_wait *w, const struct auth_client *client)
{
    struct introspect_wait *iw = (struct introspect_wait *)w;
    if (client == NULL) {
        auth_client_refused(w);
        return;
    }
    if (!client->can_introspect) {
        auth_oauth_fail(w, 403, "unauthorized_client", "the client may not introspect tokens");
        return;
    }
    if (introspect_refresh(iw) || introspect_key(iw))
        return;
    if (introspect_needs_keys(iw))
        auth_tenant_get(NULL, w, iw->cw.slug, introspect_keys_ready);
    else
        http_resume(iw, introspect_respond);
}

/* The owners of the request's buckets said yes: on with the client (cached or read). */
static void introspect_rate_passed(struct auth_wait *w)
{
    struct introspect_wait *iw = (struct introspect_wait *)w;
    auth_client_authenticate(NULL, w, &iw->cw, true, introspect_client_ready);
}

/* ---- The request ---------------------------------------------------------------------------- */

struct introspect_form {
    char token[AUTH_ACCESS_TOKEN_MAX + 1];
    char hint[INTROSPECT_HINT_MAX + 1];
    struct auth_client_creds creds;
};

/* Form and credentials; 0, or answered. */
static int introspect_read(struct http_ctx *ctx, struct introspect_form *f)
{
    struct auth_form_field fields[] = {
        { "token", f->token, sizeof(f->token), false },
        { "token_type_hint", f->hint, sizeof(f->hint), false }, /* may be ignored: §2.1 */
        { "client_id", f->creds.client_id, sizeof(f->creds.client_id), false },
        { "client_secret", f->creds.secret, sizeof(f->creds.secret), false },
    };
    const char *why = auth_form_parse(ctx, fields, sizeof(fields) / sizeof(fields[0]));
    if (why != NULL || !fields[0].seen || f->token[0] == '\0') {
        auth_oauth_error(ctx, 400, "invalid_request", why ? why : "token is missing");
        return -1;
    }
    f->creds.has_id = fields[2].seen;
    f->creds.has_secret = fields[3].seen;
    int status = auth_client_credentials(ctx, &f->creds, &why);
    if (status != 0) {
        auth_oauth_error(ctx, status, status == 401 ? "invalid_client" : "invalid_request", why);
        return -1;
    }
    return 0;
}

static void introspect_post(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    struct introspect_form *f = http_scratch_alloc(ctx, sizeof(*f));
    struct auth_client_wait *cw = http_scratch_alloc(ctx, sizeof(*cw));
    if (f == NULL || cw == NULL) {
        http_respond_problem(ctx, 500, "internal error");
        return;
    }
    if (introspect_read(ctx, f) != 0) {
        explicit_bzero(f->creds.secret, sizeof(f->creds.secret));
        return;
    }
    auth_slug_copy(ctx->params[0], cw->slug);
    memcpy(cw->client_id, f->creds.client_id, sizeof(cw->client_id));
    hash_sha256(f->creds.secret, strlen(f->creds.secret), cw->secret_sha256);
    explicit_bzero(f->creds.secret, sizeof(f->creds.secret));
    struct slice token = slice_make(f->token, strlen(f->token));
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, auth, cw->client_id, cw->secret_sha256, &limits))
        return; /* answered 429 */
    bool remote = auth_rate_pending(&limits);
    const struct auth_client *client = remote ? NULL : auth_client_cached(auth, ctx->loop, cw);
    if (client != NULL && !client->can_introspect) {
        auth_oauth_error(ctx, 403, "unauthorized_client", "the client may not introspect tokens");
        return;
    }
    if (client != NULL && introspect_answer(ctx, auth, cw->slug, NULL, token))
        return; /* the hot path: every bucket on this shard, client and token known */
    struct introspect_wait *iw = auth_park(ctx, auth, sizeof(*iw));
    if (iw == NULL)
        return;
    iw->cw = *cw;
    memcpy(iw->token, token.ptr, token.len);
    iw->token_len = token.len;
    iw->w.rate = limits;
    if (remote) {
        if (auth_rate_continue(ctx, &iw->w, introspect_rate_passed) != 0)
            auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    } else if (client != NULL) {
        if (!introspect_refresh(iw) && !introspect_key(iw))
            auth_tenant_get(ctx, &iw->w, iw->cw.slug, introspect_keys_ready);
    } else {
        auth_client_authenticate(ctx, &iw->w, &iw->cw, true, introspect_client_ready);
    }
}

int auth_introspect_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/introspect", "introspect", introspect_post,
                          auth);
}
