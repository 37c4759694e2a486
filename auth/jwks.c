/* auth/jwks.c: GET /t/{tenant}/jwks.json, the keys that verify the tenant's tokens
 * (RFC 7517 §5): its active key, the next one (published before it signs, so a client
 * that refreshes on schedule never meets an unknown kid) and retired keys until every
 * token they signed has expired (DESIGN §4). Public members only: the statement reads
 * signing_keys.public_jwk, never the sealed private part. A read, so it may be answered
 * by the replica. */
#include "auth/auth_int.h"

#include <string.h>

/* Clients may cache the set this long: a new key is published as "next" a whole rotation
 * period before it signs, so five minutes never hides a key that is in use. */
#define JWKS_CACHE_CONTROL "public, max-age=300"

struct jwks_wait {
    struct auth_wait w;
    char slug[AUTH_SLUG_MAX + 1];
};

static void jwks_respond(struct http_ctx *ctx, void *state)
{
    struct jwks_wait *jw = state;
    if (jw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, jw->w.outcome);
        return;
    }
    if (pg_result_rows(jw->w.result) == 0) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    const char *doc = pg_result_value(jw->w.result, 0, 1);
    http_header_add(ctx, "Cache-Control", SLICE_LIT(JWKS_CACHE_CONTROL));
    http_respond(ctx, 200, "application/json", slice_make(doc, strlen(doc)));
}

static void jwks_get(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    struct jwks_wait *jw = auth_park(ctx, auth, sizeof(*jw));
    if (jw == NULL)
        return;
    auth_slug_copy(ctx->params[0], jw->slug);
    jw->w.q.params[0] = jw->slug;
    jw->w.q.params_count = 1;
    auth_send(ctx, &jw->w, STORE_JWKS_BY_SLUG, jwks_respond, NULL);
}

int auth_jwks_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/jwks.json", "jwks", jwks_get, auth);
}
