/* proto/http_auth.h: client credentials in an Authorization header (wire format only).
 *
 * "Basic" (RFC 7617): base64 (RFC 4648 §4, with padding, strictly: no whitespace, no
 * stray characters, canonical trailing bits) of "id:secret". For OAuth clients (RFC 6749
 * §2.3.1) the id and the secret are each application/x-www-form-urlencoded before being
 * joined, so both are form-decoded after the split at the first ':'.
 * "Bearer" (RFC 6750 §2.1): the b64token after one space. Scheme names are compared
 * case-insensitively (RFC 9110 §11.1). And the browser's credential, a cookie; and who the
 * client is when a trusted proxy says so (X-Forwarded-For). */
#ifndef TESSERA_PROTO_HTTP_AUTH_H
#define TESSERA_PROTO_HTTP_AUTH_H

#include <stddef.h>

#include "core/cidr.h"
#include "core/slice.h"

#define HTTP_AUTH_BASIC_MAX 1024 /* decoded "id:secret": far above any client's */
#define HTTP_FORWARDED_HOPS_MAX 16 /* X-Forwarded-For entries walked, from the right */

/* Decodes a Basic credential. id and secret receive NUL-terminated decoded values
 * (capacities id_cap, secret_cap). 0, or -1 when the header is not Basic, not strict
 * base64, has no ':', holds a NUL or does not fit. */
int http_auth_basic(struct slice header, char *id, size_t id_cap, char *secret, size_t secret_cap);

/* The token of "Bearer <token>" (RFC 6750 §2.1 b64token syntax), or an empty slice. */
struct slice http_auth_bearer(struct slice header);

/* The value of the cookie called name in a Cookie header's value (RFC 6265 §4.2.1:
 * "a=1; b=2"), as sent (up to the next ';'), or an empty slice: absent, or sent twice. A host of
 * a parent domain may set a second one with a longer path, which the browser sends first, so
 * neither is trusted. */
struct slice http_cookie(struct slice header, const char *name);

/* The client an X-Forwarded-For value names, sent by peer, a trusted proxy (one of the count
 * ranges of trusted): each proxy appends the address it got the request from, so entries are
 * believed from the right while a trusted proxy wrote them, and the first address no trusted
 * proxy has is the client; what lies left of it is anybody's claim. At most
 * HTTP_FORWARDED_HOPS_MAX entries are walked; one that is not a bare address (a port, a name,
 * "unknown") ends the walk at the last hop believed. The answer is peer or a sub-slice of xff
 * that is a bare address. */
struct slice http_forwarded_client(const struct cidr *trusted, size_t count, struct slice peer,
                                   struct slice xff);

#endif
