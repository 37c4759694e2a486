/* proto/http_server.h: HTTP/1.1 over the shard loop. It implements the loop's
 * connection callbacks: framing with proto/http1 (keep-alive, pipelining in order,
 * Content-Length and chunked bodies, Expect: 100-continue, the limits of DESIGN §6),
 * optional TLS (proto/tls), routing with path parameters, X-Request-Id, RFC 9457
 * problem responses, the access log and per-shard request statistics.
 *
 * Handlers run on the shard's thread. The hot path answers before returning; a
 * handler that must wait (a Postgres or Redis reply, a worker-pool result, another
 * shard) parks the request (http_park) and answers later from http_resume, on the
 * same shard (DESIGN §1, "a request's life"). While a request is parked its
 * connection reads no further, so pipelined answers keep their order. Everything a
 * handler allocates comes from the request's scratch arena, reset after the
 * response; a parked request keeps only the state http_park gave it. */
#ifndef TESSERA_PROTO_HTTP_SERVER_H
#define TESSERA_PROTO_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/slice.h"
#include "proto/http1.h"

#define HTTP_ROUTES_MAX 128          /* registered routes */
#define HTTP_ROUTE_SEGMENTS_MAX 12   /* '/'-separated segments of a pattern or a routed path */
#define HTTP_PARAMS_MAX 4            /* {name} captures per route */
#define HTTP_EXTRA_HEADERS_MAX 16    /* headers a handler adds to its response */
#define HTTP_REQUEST_ID_BYTES_MAX 64 /* a client X-Request-Id longer than this is replaced (H28) */
#define HTTP_SCRATCH_BYTES 131072    /* a request's arena: decoded path, handler bodies */
#define HTTP_RESPONSE_BYTES_MAX 65536 /* one response; output room checked before each request */
#define HTTP_LATENCY_BUCKETS 15      /* histogram upper bounds, plus +Inf */
#define HTTP_STATUS_SLOTS 32         /* distinct statuses counted; others count as "other" */
#define HTTP_PARK_BYTES 8832         /* a parked request: its HTTP facts plus the handler's state */
#define HTTP_PARK_PATH_BYTES 208     /* of the path kept for the access log; longer is cut */
#define HTTP_PARK_STATE_MAX 7792     /* handler state per parked request (the rest, 1,040 bytes:
                                      * HTTP facts; a static assert keeps the sum in bounds) */
#define HTTP_FORWARDED_TEXT_MAX 640  /* the access line's "forwarded" member (X-Forwarded-*) */
#define HTTP_CLIENT_ADDRESS_BYTES 46 /* INET6_ADDRSTRLEN: a client's address as text, its NUL */

_Static_assert(HTTP_RESPONSE_BYTES_MAX * 2 <= LOOP_OUT_BUF_BYTES, "a response fits beside pending output");

struct http_server;
struct http_ctx;

typedef void (*http_handler_fn)(struct http_ctx *ctx);

/* What a handler sees of its request. */
struct http_ctx {
    struct conn *conn;
    struct loop *loop;
    struct http_server *server;
    const struct http1_request *req;
    struct slice body;                      /* the whole decoded body */
    struct slice params[HTTP_PARAMS_MAX];   /* decoded {name} captures, in pattern order */
    size_t param_count;
    struct slice request_id;
    void *app;                              /* http_server_create's app argument */
    void *route_arg;                        /* http_route_add's arg for the matched route */
    /* private below */
    void *parked;                           /* set by http_park */
    struct slice forwarded;                 /* a resumed request's access-log member, kept by
                                             * http_park (its headers are gone by then) */
    int route;
    bool head_only;
    bool responded;
    int status;
    size_t response_bytes;
    size_t header_count;
    struct slice header_names[HTTP_EXTRA_HEADERS_MAX];
    struct slice header_values[HTTP_EXTRA_HEADERS_MAX];
    struct buf scratch;
};

struct http_server *http_server_create(const struct config *cfg, void *app);
void http_server_destroy(struct http_server *server);
/* The loop's callbacks for this protocol. */
const struct conn_handler *http_server_handler(void);
/* Gives a shard its HTTP state (before its thread starts). Returns 0 or -TE_NOMEM. */
int http_server_attach(struct http_server *server, struct loop *loop);
/* Loads the TLS certificate and key when the config names them. Returns 0 or -TE_INVAL. */
int http_server_enable_tls(struct http_server *server);

/* Routes: pattern segments are literals or "{name}"; HEAD is served by GET routes.
 * name labels the route in metrics; arg reaches the handler as ctx->route_arg (a
 * module's own state). Returns 0 or -TE_FULL / -TE_INVAL. */
int http_route_add(struct http_server *server, enum http1_method method, const char *pattern,
                   const char *name, http_handler_fn handler, void *arg);

/* Responses. Exactly one per request. */
void http_header_add(struct http_ctx *ctx, const char *name, struct slice value);
void http_respond(struct http_ctx *ctx, int status, const char *content_type, struct slice body);
/* RFC 9457 application/problem+json with type about:blank. */
void http_respond_problem(struct http_ctx *ctx, int status, const char *detail);
/* Scratch memory for the request; NULL when the arena is exhausted. */
void *http_scratch_alloc(struct http_ctx *ctx, size_t bytes);
/* A buffer over the rest of the arena, for building a body; commit with
 * http_scratch_commit once done. */
struct buf http_scratch_buf(struct http_ctx *ctx);
void http_scratch_commit(struct http_ctx *ctx, const struct buf *built);

const char *http_status_reason(int status);

/* The client's address as text, without a port, into dst (cap at least
 * HTTP_CLIENT_ADDRESS_BYTES; "" when it does not fit): the TCP peer's, unless the peer is one
 * of TESSERA_TRUSTED_PROXIES; then the one its X-Forwarded-For names (http_forwarded_client).
 * A request with several X-Forwarded-For fields names nobody: the peer it is. */
void http_client_address(const struct http_ctx *ctx, char *dst, size_t cap);

/* Parking. A handler that must wait calls http_park and returns without answering.
 * It gets `bytes` (at most HTTP_PARK_STATE_MAX) of zeroed, 16-byte aligned state that
 * lives until http_resume; nothing else of the request survives the handler's return
 * (req, body, params, scratch), so it copies what it needs there. NULL when no memory
 * can be had: the handler answers at once instead (503). */
void *http_park(struct http_ctx *ctx, size_t bytes);
/* When the request of parked state was parked (loop_now_us's clock): its idle backstop
 * answers 503 at this plus TESSERA_IDLE_TIMEOUT_MS, if nothing answered it before. */
uint64_t http_parked_since_us(const void *state);
/* The X-Request-Id of the request of parked state (taken or made when it arrived). */
struct slice http_parked_request_id(const void *state);
/* The name its route was added with ("" when none matched). */
const char *http_parked_route(const void *state);
/* Its client's address, as http_client_address said when it was parked. */
const char *http_parked_client(const void *state);
/* False once nobody waits for the answer of parked state any more (the backstop answered,
 * or the client went away): a handler need not commit work whose result nobody will read. */
bool http_parked_waiting(const void *state);
/* A handler that parked and then must answer at once after all (its wait was refused)
 * simply answers: the park is undone. */
/* Ends a parked request, on its shard's thread, from a loop event (a store reply, a
 * worker completion, a message, a timer; never from inside another request's handler):
 * calls respond(ctx, state), which must answer, unless the client has gone meanwhile;
 * then frees the state and goes on with the connection's next pipelined request. Called
 * from inside the handler that parked (its wait ended at once, e.g. an answer from a
 * stale cache when the store refused the query), respond runs when the handler returns. */
typedef void (*http_resume_fn)(struct http_ctx *ctx, void *state);
void http_resume(void *state, http_resume_fn respond);
/* Ends a parked request whose wait reached its idle backstop (http_parked_since_us plus
 * TESSERA_IDLE_TIMEOUT_MS) before the backstop's timer, which ticks every LOOP_TIMER_TICK_MS,
 * answered it: the client hears what the backstop says (503, Retry-After, Connection: close),
 * or nothing when the backstop already spoke or the client left. From a loop event only. */
void http_resume_expired(void *state);

/* Appends the request statistics of every shard, summed, in Prometheus text
 * format: requests by route and status, latency histogram by route. */
void http_server_render_metrics(struct http_server *server, struct buf *out);

#endif
