/* auth/auth.h: the domain behind the tenant routes (DESIGN §5), for the composition root.
 * Every tenant is an issuer, {TESSERA_PUBLIC_URL}/t/{tenant}; so far under it:
 *
 *   GET  /t/{tenant}/jwks.json                           the tenant's published keys
 *   GET  /.well-known/oauth-authorization-server/t/{tenant}  RFC 8414 metadata (also under
 *                                                        /t/{tenant}/.well-known/)
 *   POST /t/{tenant}/oauth2/token                        client_credentials (RFC 6749 §4.4)
 *   POST /t/{tenant}/oauth2/introspect                   RFC 7662
 *   POST /t/{tenant}/oauth2/revoke                       RFC 7009
 *   GET  /t/{tenant}/verify                              the gateway check
 *   POST /t/{tenant}/api/v1/register                     self-service sign-up, when the
 *                                                        tenant's settings say
 *                                                        "registration": "open"
 *
 * Handlers run on the shard that took the request; whatever waits (Postgres, the
 * worker pool) parks the request (proto/http_server.h) within the store's budget. */
#ifndef TESSERA_AUTH_AUTH_H
#define TESSERA_AUTH_AUTH_H

#include "core/config.h"
#include "core/workers.h"
#include "proto/http_server.h"
#include "store/store.h"

struct auth;

/* NULL when the configuration cannot be used (reason logged) or memory runs out. */
struct auth *auth_create(const struct config *cfg, struct store *store, struct workers *workers);
void auth_destroy(struct auth *auth);
/* Registers the routes above. 0 or the http_route_add error. */
int auth_routes(struct auth *auth, struct http_server *http);

/* The shard's part, from the loop's on_start / on_stop hooks: the revocation set's first
 * catch-up and its poll. */
void auth_shard_start(struct auth *auth, struct loop *loop);
void auth_shard_stop(struct auth *auth, struct loop *loop);
/* True once the shard's caches are warm (its revocation set caught up): /health/ready. */
bool auth_shard_ready(const struct auth *auth, const struct loop *loop);
/* The loop's message hook hands auth's messages here; false when msg is not auth's. */
bool auth_handle_message(struct auth *auth, struct loop *loop, const struct ring_msg *msg);
/* auth's /metrics families (Prometheus text format 0.0.4), from any shard. */
void auth_render_metrics(struct auth *auth, struct buf *out);

#endif
