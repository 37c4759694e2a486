/* auth/auth.h: the domain behind the tenant routes (DESIGN §5), for the composition root.
 * Every tenant is an issuer, {TESSERA_PUBLIC_URL}/t/{tenant}; so far under it:
 *
 *   GET  /t/{tenant}/jwks.json                           the tenant's published keys
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

#endif
