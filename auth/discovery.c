/* auth/discovery.c: the tenant's metadata, one document for OpenID Connect Discovery 1.0
 * (§4: {issuer}/.well-known/openid-configuration) and for RFC 8414 (at its location for an
 * issuer with a path, /.well-known/oauth-authorization-server/t/{tenant} (§3.1), and at
 * /t/{tenant}/.well-known/oauth-authorization-server, where clients that append the
 * well-known suffix to the issuer look). RFC 8414 §2 takes OIDC's members as they are.
 *
 * It lists what this server does and nothing more: advertising an endpoint or a method that
 * does not answer would send clients into errors. Every URL is built from TESSERA_PUBLIC_URL,
 * never from the request's Host (SECURITY O42). Whether the tenant exists is a read (the
 * replica may answer). */
#include "auth/auth_int.h"

#include <string.h>

/* Metadata changes only with a deployment: clients may keep it an hour. */
#define DISCOVERY_CACHE_CONTROL "public, max-age=3600"

struct discovery_wait {
    struct auth_wait w;
    char slug[AUTH_SLUG_MAX + 1];
};

static void discovery_endpoint(struct buf *b, const struct auth *auth, struct slice slug, const char *name,
                               const char *path)
{
    buf_printf(b, ",\"%s\":\"", name);
    auth_issuer(auth, slug, b); /* URL characters and a checked slug: nothing to escape */
    buf_append_cstr(b, path);
    buf_append_cstr(b, "\"");
}

static void discovery_respond(struct http_ctx *ctx, void *state)
{
    struct discovery_wait *dw = state;
    if (dw->w.outcome != PG_OK) {
        auth_respond_store_failure(ctx, dw->w.outcome);
        return;
    }
    if (pg_result_rows(dw->w.result) == 0) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    const struct auth *auth = dw->w.auth;
    struct slice slug = slice_make(dw->slug, strlen(dw->slug));
    struct buf b = http_scratch_buf(ctx);
    buf_append_cstr(&b, "{\"issuer\":\"");
    auth_issuer(auth, slug, &b);
    buf_append_cstr(&b, "\"");
    discovery_endpoint(&b, auth, slug, "authorization_endpoint", "/oauth2/authorize");
    discovery_endpoint(&b, auth, slug, "token_endpoint", "/oauth2/token");
    discovery_endpoint(&b, auth, slug, "userinfo_endpoint", "/userinfo");
    discovery_endpoint(&b, auth, slug, "jwks_uri", "/jwks.json");
    discovery_endpoint(&b, auth, slug, "introspection_endpoint", "/oauth2/introspect");
    discovery_endpoint(&b, auth, slug, "revocation_endpoint", "/oauth2/revoke");
    discovery_endpoint(&b, auth, slug, "end_session_endpoint", "/oauth2/logout"); /* RP-Initiated Logout §2.1 */
    buf_append_cstr(&b, ",\"response_types_supported\":[\"code\"]" /* RFC 9700 §2.1.2 */
                        ",\"response_modes_supported\":[\"query\"]"
                        ",\"grant_types_supported\":[\"authorization_code\",\"client_credentials\","
                        "\"refresh_token\",\"password\"]"
                        ",\"subject_types_supported\":[\"public\"]"
                        /* every algorithm a tenant's key may have (admin keys rotate --alg) */
                        ",\"id_token_signing_alg_values_supported\":[\"RS256\",\"ES256\",\"EdDSA\"]"
                        ",\"scopes_supported\":[\"openid\",\"profile\",\"email\"]"
                        ",\"claims_supported\":[\"iss\",\"sub\",\"aud\",\"exp\",\"iat\",\"auth_time\","
                        "\"nonce\",\"sid\",\"preferred_username\",\"updated_at\",\"email\",\"email_verified\"]"
                        /* OIDC Discovery §3: request_uri_parameter_supported defaults to true */
                        ",\"request_parameter_supported\":false,\"request_uri_parameter_supported\":false"
                        ",\"code_challenge_methods_supported\":[\"S256\"]" /* SECURITY O02 */
                        ",\"authorization_response_iss_parameter_supported\":true" /* RFC 9207 §3 */
                        ",\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\",\"client_secret_post\","
                        "\"none\"]"
                        ",\"introspection_endpoint_auth_methods_supported\":[\"client_secret_basic\","
                        "\"client_secret_post\"]"
                        ",\"revocation_endpoint_auth_methods_supported\":[\"client_secret_basic\","
                        "\"client_secret_post\"]}");
    http_scratch_commit(ctx, &b);
    http_header_add(ctx, "Cache-Control", SLICE_LIT(DISCOVERY_CACHE_CONTROL));
    http_respond(ctx, 200, "application/json", buf_slice(&b));
}

static void discovery_get(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    struct discovery_wait *dw = auth_park(ctx, auth, sizeof(*dw));
    if (dw == NULL)
        return;
    auth_slug_copy(ctx->params[0], dw->slug);
    dw->w.q.params[0] = dw->slug;
    dw->w.q.params_count = 1;
    auth_send(ctx, &dw->w, STORE_TENANT_BY_SLUG, discovery_respond, NULL);
}

int auth_discovery_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_GET, "/.well-known/oauth-authorization-server/t/{tenant}",
                            "discovery", discovery_get, auth);
    rc = rc != 0 ? rc
                 : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/.well-known/oauth-authorization-server",
                                  "discovery", discovery_get, auth);
    return rc != 0 ? rc
                   : http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/.well-known/openid-configuration",
                                    "discovery", discovery_get, auth);
}
