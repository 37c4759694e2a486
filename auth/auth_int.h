/* auth/auth_int.h: what the files of auth/ share, and nobody else sees. */
#ifndef TESSERA_AUTH_AUTH_INT_H
#define TESSERA_AUTH_AUTH_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "crypto/password.h"

#define AUTH_SLUG_MAX 63 /* tenant slugs: [a-z0-9-]{1,63}, the schema's CHECK */

struct auth {
    const struct config *cfg;
    struct store *store;
    struct workers *workers;
    struct password_policy passwords;
};

/* A request parked on one Postgres statement: the first member of a handler's state. */
struct auth_wait {
    struct pg_query q;
    struct auth *auth;
    struct loop *loop;
    enum pg_outcome outcome;
    const struct pg_result *result; /* valid while the answer is written */
    http_resume_fn respond;
    void (*next)(struct auth_wait *w); /* a later stage instead of the answer, or NULL */
    int status;                     /* auth_answer's problem */
    const char *detail;
};

/* The shard's stores for a request. */
struct store_shard *auth_store(const struct auth *auth, const struct loop *loop);

/* True when slug can name a tenant; anything else is 404 before any query (SECURITY T06:
 * "/t/ACME", "/t/acme%2F..", "/t/acme%00" never reach another tenant). */
bool auth_slug_valid(struct slice slug);
/* Copies a checked slug, NUL-terminated, into dst (AUTH_SLUG_MAX + 1 bytes). */
void auth_slug_copy(struct slice slug, char *dst);

/* Parks ctx with `bytes` of state that begins with a struct auth_wait. NULL: the
 * answer (503) was given. */
void *auth_park(struct http_ctx *ctx, struct auth *auth, size_t bytes);
/* Sends stmt for a parked request (w->q's params set). Its outcome and result reach
 * next(w) when next is given (a later stage, which ends with another auth_send or an
 * answer), else respond(ctx, w) with w->outcome and w->result. A refused send answers
 * 503 at once: directly when ctx is given (from the handler), by resuming otherwise
 * (then w is gone). True when sent. */
bool auth_send(struct http_ctx *ctx, struct auth_wait *w, enum store_stmt stmt,
               http_resume_fn respond, void (*next)(struct auth_wait *w));
/* Ends a parked request with a problem answer (503 gets Retry-After). */
void auth_answer(struct auth_wait *w, int status, const char *detail);
/* Answers a store failure (RFC 9457): 409 on a unique violation, 503 + Retry-After when
 * Postgres is down, busy or slow, 500 otherwise. */
void auth_respond_store_failure(struct http_ctx *ctx, enum pg_outcome outcome);
/* Ends a parked request with a store failure answer (from a stage after the handler). */
void auth_fail(struct auth_wait *w, enum pg_outcome outcome);

/* The issuer of a tenant: TESSERA_PUBLIC_URL + "/t/" + slug. */
void auth_issuer(const struct auth *auth, struct slice slug, struct buf *out);

int auth_jwks_routes(struct auth *auth, struct http_server *http);
int auth_register_routes(struct auth *auth, struct http_server *http);

#endif
