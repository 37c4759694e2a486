/* proto/http_server.c: HTTP/1.1 connections on the shard loop.
 *
 * Contents
 *   1. State: server, shard, connection
 *   2. Routing
 *   3. Responses
 *   4. Framing: one request at a time out of the received bytes
 *   5. Connection callbacks (plain and TLS)
 *   6. Parked requests
 *   7. Statistics and metrics
 *
 * Received bytes are parsed where they lie (the provided receive buffer) when the
 * connection holds nothing; what a partial request leaves is copied into the
 * connection's stash block, taken from the shard pool only while a request is
 * incomplete. Pipelined requests are answered in order into one output buffer and
 * sent with one write. When the output buffer lacks room for another answer the
 * connection stops reading (RFC 9112 §9.3.2 back-pressure); it stops too while a
 * request is parked, and the bytes already received wait in the stash. */
#include "proto/http_server.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/cidr.h"
#include "core/err.h"
#include "core/log.h"
#include "proto/http_auth.h"
#include "proto/tls.h"
#include "proto/url.h"

#define HTTP_TLS_PLAIN_BYTES 16384 /* one TLS record of plaintext per read */
#define HTTP_FORWARDED_LOG_MAX 256 /* bytes of each X-Forwarded-* value an access line keeps */
#define HTTP_FORWARDED_MEMBER_BYTES 32 /* one such member's name, quotes and braces */

/* ---- 1. State ----------------------------------------------------------------------------- */

struct http_route {
    enum http1_method method;
    const char *name;
    http_handler_fn handler;
    void *arg;                                     /* given to the handler as ctx->route_arg */
    size_t segment_count;
    const char *segments[HTTP_ROUTE_SEGMENTS_MAX]; /* NULL marks a {param} */
    char *pattern_copy;                            /* what segments point into */
    size_t series;     /* the first route added under the same name: its metrics' series */
};

static const int http_status_slots[HTTP_STATUS_SLOTS] = {
    200, 201, 202, 204, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408,
    409, 410, 411, 413, 414, 415, 417, 422, 429, 431, 500, 501, 502, 503, 504, 505,
};
#define HTTP_STATUS_OTHER HTTP_STATUS_SLOTS

/* Upper bounds in microseconds (Prometheus "le" in seconds). */
static const uint64_t http_latency_bounds_us[HTTP_LATENCY_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000,
};

#define HTTP_ROUTE_UNMATCHED HTTP_ROUTES_MAX /* the stats row for requests no route took */

struct http_stats {
    uint64_t requests[HTTP_ROUTES_MAX + 1][HTTP_STATUS_SLOTS + 1];
    uint64_t latency[HTTP_ROUTES_MAX + 1][HTTP_LATENCY_BUCKETS + 1];
    uint64_t latency_sum_us[HTTP_ROUTES_MAX + 1];
};

struct http_shard {
    struct http_server *server;
    struct http1_request req;           /* the request being parsed or handled */
    char scratch[HTTP_SCRATCH_BYTES];
    char tls_plain[HTTP_TLS_PLAIN_BYTES];
    char tls_staging_mem[LOOP_OUT_BUF_BYTES]; /* responses of a TLS connection, before sealing */
    struct buf tls_staging;
    uint64_t request_id_prefix;
    uint64_t request_id_counter;
    bool dispatching;                   /* a handler runs: no resume may start now */
    struct http_stats stats;
};

struct http_server {
    const struct config *cfg;
    void *app;
    struct http1_limits limits;
    size_t stash_bytes;
    struct tls_server *tls;
    struct http_route routes[HTTP_ROUTES_MAX];
    size_t route_count;
    struct http_shard *shards[CONFIG_SHARDS_MAX];
};

/* What a connection keeps between receives: LOOP_CONN_PROTO_BYTES of its slab slot. */
struct http_conn {
    struct http_shard *shard;
    struct tls_conn *tls;
    char *stash;                  /* unprocessed bytes of the current request(s), or NULL */
    uint32_t stash_len;
    uint32_t chunk_body_len;      /* decoded chunked body so far, in chunk_body */
    char *chunk_body;
    struct http1_chunked chunked;
    bool chunked_active;
    bool request_started;         /* the header deadline runs */
    bool awaiting_body;           /* the body deadline runs */
    bool continue_sent;
    bool shutting_down;
    bool backpressure;
    bool close_requested;         /* close once the answers so far are sent */
    uint64_t start_us;            /* the current request's first byte */
    struct http_park *parked;     /* the request waiting for its answer, or NULL */
};

/* A parked request: what its answer needs of it, then the handler's state. It lives in
 * a block of the shard's pool from http_park to http_resume. */
struct http_park {
    struct conn *conn;            /* NULL once the connection went away */
    struct loop *loop;
    uint64_t parked_us;           /* loop_now_us() when the handler parked it */
    int route;
    enum http1_method method;
    int version_minor;
    bool keep_alive;
    bool head_only;
    uint8_t request_id_len;
    uint8_t method_len;
    uint16_t path_len;
    uint16_t state_bytes;         /* what the handler asked for: wiped when the block goes back */
    bool in_handler;              /* the handler that parked has not returned yet */
    http_resume_fn early;         /* http_resume called from inside that handler */
    char request_id[HTTP_REQUEST_ID_BYTES_MAX];
    char method_name[16];
    char path[HTTP_PARK_PATH_BYTES];
    char client[HTTP_CLIENT_ADDRESS_BYTES]; /* http_client_address's, taken when parked */
    uint16_t forwarded_len;
    char forwarded[HTTP_FORWARDED_TEXT_MAX]; /* the access line's member, made when parked */
    _Alignas(16) char state[];
};

_Static_assert(sizeof(struct http_park) + HTTP_PARK_STATE_MAX <= HTTP_PARK_BYTES, "state fits");
_Static_assert(HTTP_PARK_PATH_BYTES <= UINT16_MAX, "path_len holds it");
_Static_assert(HTTP_PARK_STATE_MAX <= UINT16_MAX, "state_bytes holds it");
_Static_assert(HTTP_FORWARDED_TEXT_MAX <= UINT16_MAX, "forwarded_len holds it");

/* A parked request's block back to the pool. Its state is wiped first, however the request
 * ended (answered, abandoned by its client, expired): handlers park secrets there (a password
 * to hash, a minted key or refresh token until it is sent), and a block is reused by any
 * later request of the shard. */
static void http_park_free(struct http_park *park)
{
    explicit_bzero(park->state, park->state_bytes);
    loop_block_put(park->loop, (char *)park, HTTP_PARK_BYTES);
}

_Static_assert(sizeof(struct http_conn) <= LOOP_CONN_PROTO_BYTES, "fits the slab slot");

static struct http_server *http_the_server; /* the loop's callbacks carry no argument */

struct http_server *http_server_create(const struct config *cfg, void *app)
{
    struct http_server *server = calloc(1, sizeof(*server));
    if (server == NULL)
        return NULL;
    server->cfg = cfg;
    server->app = app;
    http1_limits_default(&server->limits);
    server->limits.head_bytes_max = cfg->head_bytes_max;
    server->limits.body_bytes_max = cfg->body_bytes_max;
    server->limits.header_fields_max = cfg->header_fields_max;
    /* A stash holds one incomplete request plus one receive's worth beyond it. */
    server->stash_bytes = cfg->head_bytes_max + cfg->body_bytes_max + HTTP1_TRAILER_BYTES_MAX +
                          HTTP1_CHUNK_EXT_BYTES_MAX + LOOP_RECV_BUF_BYTES + 64;
    http_the_server = server;
    return server;
}

void http_server_destroy(struct http_server *server)
{
    if (server == NULL)
        return;
    for (size_t i = 0; i < CONFIG_SHARDS_MAX; i++)
        free(server->shards[i]);
    for (size_t i = 0; i < server->route_count; i++)
        free(server->routes[i].pattern_copy);
    tls_server_destroy(server->tls);
    if (http_the_server == server)
        http_the_server = NULL;
    free(server);
}

int http_server_enable_tls(struct http_server *server)
{
    if (server->cfg->tls_cert_file[0] == '\0')
        return 0;
    server->tls = tls_server_create(server->cfg->tls_cert_file, server->cfg->tls_key_file);
    return server->tls ? 0 : -TE_INVAL;
}

int http_server_attach(struct http_server *server, struct loop *loop)
{
    struct http_shard *shard = calloc(1, sizeof(*shard));
    if (shard == NULL)
        return -TE_NOMEM;
    shard->server = server;
    buf_init(&shard->tls_staging, shard->tls_staging_mem, sizeof(shard->tls_staging_mem));
    if (getrandom(&shard->request_id_prefix, sizeof(shard->request_id_prefix), 0) < 0)
        shard->request_id_prefix = (uint64_t)loop_now_us() ^ ((uint64_t)loop_index(loop) << 56);
    server->shards[loop_index(loop)] = shard;
    loop_set_app(loop, shard);
    return 0;
}

/* ---- 2. Routing --------------------------------------------------------------------------- */

int http_route_add(struct http_server *server, enum http1_method method, const char *pattern,
                   const char *name, http_handler_fn handler, void *arg)
{
    if (server->route_count == HTTP_ROUTES_MAX)
        return -TE_FULL;
    if (pattern[0] != '/')
        return -TE_INVAL;
    struct http_route *route = &server->routes[server->route_count];
    memset(route, 0, sizeof(*route));
    route->method = method;
    route->name = name;
    route->series = server->route_count;
    for (size_t r = 0; r < server->route_count; r++) {
        if (strcmp(server->routes[r].name, name) == 0) {
            route->series = r;
            break;
        }
    }
    route->handler = handler;
    route->arg = arg;
    /* Patterns are process-lifetime literals: keep pointers into a private copy. */
    char *copy = strdup(pattern + 1);
    if (copy == NULL)
        return -TE_NOMEM;
    route->pattern_copy = copy;
    for (char *save = NULL, *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (route->segment_count == HTTP_ROUTE_SEGMENTS_MAX) {
            free(copy);
            return -TE_INVAL;
        }
        route->segments[route->segment_count++] = seg[0] == '{' ? NULL : seg;
    }
    server->route_count++;
    return 0;
}

struct http_path {
    size_t count;
    struct slice segments[HTTP_ROUTE_SEGMENTS_MAX]; /* decoded */
};

/* Splits the raw path on '/' first, then decodes each segment exactly once, so
 * "%2F" can never make a segment and "%252e" stays "%2e" (RFC 3986 §2.1, §6).
 * Dot segments are refused rather than resolved: resolving one could change the
 * tenant a path names (H23). Returns 0, or the status to answer. */
static int http_path_split(struct http_ctx *ctx, struct slice raw, struct http_path *path)
{
    assert(raw.len > 0 && raw.ptr[0] == '/');
    path->count = 0;
    size_t start = 1;
    for (size_t i = 1; i <= raw.len; i++) {
        if (i < raw.len && raw.ptr[i] != '/')
            continue;
        if (path->count == HTTP_ROUTE_SEGMENTS_MAX)
            return 404;
        struct slice seg = slice_make(raw.ptr + start, i - start);
        char *decoded = http_scratch_alloc(ctx, seg.len + 1);
        if (decoded == NULL)
            return 414;
        int n = url_decode_path_segment(seg, decoded);
        if (n < 0)
            return 400;
        struct slice out = slice_make(decoded, (size_t)n);
        if (slice_eq_cstr(out, ".") || slice_eq_cstr(out, ".."))
            return 400;
        path->segments[path->count++] = out;
        start = i + 1;
    }
    return 0;
}

static bool http_route_matches(const struct http_route *route, const struct http_path *path,
                               struct http_ctx *ctx)
{
    if (route->segment_count != path->count)
        return false;
    size_t params = 0;
    for (size_t i = 0; i < path->count; i++) {
        if (route->segments[i] == NULL) {
            if (path->segments[i].len == 0 || params == HTTP_PARAMS_MAX)
                return false;
            ctx->params[params++] = path->segments[i];
        } else if (!slice_eq_cstr(path->segments[i], route->segments[i])) {
            return false;
        }
    }
    ctx->param_count = params;
    return true;
}

static bool http_method_served(enum http1_method route, enum http1_method asked)
{
    return route == asked || (route == HTTP1_METHOD_GET && asked == HTTP1_METHOD_HEAD);
}

static const char *const http_method_names[HTTP1_METHOD_COUNT] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
};

/* Finds the route, or answers 400/404/405 itself. */
static const struct http_route *http_route_find(struct http_ctx *ctx)
{
    struct http_server *server = ctx->server;
    struct http_path path;
    int status = http_path_split(ctx, ctx->req->path, &path);
    if (status != 0) {
        http_respond_problem(ctx, status, status == 400 ? "malformed path" : "no such resource");
        return NULL;
    }
    char allow[96];
    struct buf allowed;
    buf_init(&allowed, allow, sizeof(allow));
    for (size_t i = 0; i < server->route_count; i++) {
        const struct http_route *route = &server->routes[i];
        if (!http_route_matches(route, &path, ctx))
            continue;
        if (http_method_served(route->method, ctx->req->method)) {
            ctx->route = (int)i;
            return route;
        }
        buf_printf(&allowed, "%s%s", allowed.len ? ", " : "", http_method_names[route->method]);
        if (route->method == HTTP1_METHOD_GET)
            buf_append_cstr(&allowed, ", HEAD");
    }
    if (allowed.len > 0 && !allowed.overflow) {
        http_header_add(ctx, "Allow", buf_slice(&allowed)); /* RFC 9110 §15.5.6 */
        http_respond_problem(ctx, 405, "method not allowed for this resource");
    } else {
        http_respond_problem(ctx, 404, "no such resource");
    }
    return NULL;
}

/* ---- 3. Responses ------------------------------------------------------------------------- */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

void *http_scratch_alloc(struct http_ctx *ctx, size_t bytes)
{
    size_t aligned = (ctx->scratch.len + 15) & ~(size_t)15;
    if (aligned > ctx->scratch.cap || bytes > ctx->scratch.cap - aligned)
        return NULL;
    ctx->scratch.len = aligned + bytes;
    return ctx->scratch.data + aligned;
}

struct buf http_scratch_buf(struct http_ctx *ctx)
{
    struct buf b;
    buf_init(&b, ctx->scratch.data + ctx->scratch.len, ctx->scratch.cap - ctx->scratch.len);
    return b;
}

void http_scratch_commit(struct http_ctx *ctx, const struct buf *built)
{
    assert(built->data == ctx->scratch.data + ctx->scratch.len);
    ctx->scratch.len += built->len;
}

void http_header_add(struct http_ctx *ctx, const char *name, struct slice value)
{
    assert(ctx->header_count < HTTP_EXTRA_HEADERS_MAX);
    ctx->header_names[ctx->header_count] = slice_make(name, strlen(name));
    ctx->header_values[ctx->header_count] = value;
    ctx->header_count++;
}

static struct buf *http_output(struct conn *conn)
{
    struct http_conn *hc = conn_proto(conn);
    return hc->tls ? &hc->shard->tls_staging : conn_out(conn);
}

static void http_write_head(struct buf *out, struct http_ctx *ctx, int status,
                            const char *content_type, size_t body_len)
{
    buf_append_cstr(out, "HTTP/1.1 ");
    buf_append_u64(out, (uint64_t)status);
    buf_append_cstr(out, " ");
    buf_append_cstr(out, http_status_reason(status));
    buf_append_cstr(out, "\r\nDate: ");
    buf_append(out, loop_http_date(ctx->loop).ptr, loop_http_date(ctx->loop).len);
    if (content_type) {
        buf_append_cstr(out, "\r\nContent-Type: ");
        buf_append_cstr(out, content_type);
    }
    buf_append_cstr(out, "\r\nContent-Length: ");
    buf_append_u64(out, body_len);
    buf_append_cstr(out, "\r\nX-Request-Id: ");
    buf_append(out, ctx->request_id.ptr, ctx->request_id.len);
    for (size_t i = 0; i < ctx->header_count; i++) {
        buf_append_cstr(out, "\r\n");
        buf_append(out, ctx->header_names[i].ptr, ctx->header_names[i].len);
        buf_append_cstr(out, ": ");
        buf_append(out, ctx->header_values[i].ptr, ctx->header_values[i].len);
    }
    struct http_conn *hc = conn_proto(ctx->conn);
    if (hc->close_requested || hc->shutting_down || !ctx->req->keep_alive)
        buf_append_cstr(out, "\r\nConnection: close");
    else if (ctx->req->version_minor == 0)
        buf_append_cstr(out, "\r\nConnection: keep-alive");
    buf_append_cstr(out, "\r\n\r\n");
}

void http_respond(struct http_ctx *ctx, int status, const char *content_type, struct slice body)
{
    assert(!ctx->responded);
    ctx->responded = true;
    ctx->status = status;
    struct buf *out = http_output(ctx->conn);
    if (out == NULL) {
        conn_close(ctx->conn, true);
        return;
    }
    size_t before = out->len;
    http_write_head(out, ctx, status, content_type, body.len);
    if (!ctx->head_only)
        buf_append(out, body.ptr, body.len);
    if (out->overflow || out->len - before > HTTP_RESPONSE_BYTES_MAX) {
        /* A handler built more than one response may hold: answer 500 instead. */
        out->overflow = false;
        out->len = before;
        ctx->header_count = 0;
        ctx->status = 500;
        ((struct http_conn *)conn_proto(ctx->conn))->close_requested = true;
        http_write_head(out, ctx, 500, NULL, 0);
        log_msg(LOG_ERROR, "response too large", NULL);
    }
    ctx->response_bytes = out->len - before;
}

void http_respond_problem(struct http_ctx *ctx, int status, const char *detail)
{
    /* RFC 9457 §3: type defaults to about:blank; title is the status phrase. */
    char mem[512];
    struct buf body;
    buf_init(&body, mem, sizeof(mem));
    buf_append_cstr(&body, "{\"type\":\"about:blank\",\"title\":");
    const char *title = http_status_reason(status);
    buf_append_json_string(&body, slice_make(title, strlen(title)));
    buf_printf(&body, ",\"status\":%d,\"detail\":", status);
    buf_append_json_string(&body, slice_make(detail, strlen(detail)));
    buf_append_cstr(&body, "}");
    assert(!body.overflow);
    http_respond(ctx, status, "application/problem+json", buf_slice(&body));
}

/* ---- 4. Framing --------------------------------------------------------------------------- */

enum { HTTP_NEED_MORE = -2, HTTP_STOP = -3 };

static const char http_hex[] = "0123456789abcdef";

/* A client's X-Request-Id is echoed only when it is short printable ASCII, so it
 * can never split a header (CWE-113, H28); otherwise a fresh one is made. */
static struct slice http_request_id(struct http_ctx *ctx, struct http_shard *shard)
{
    const struct http1_header *h = http1_find_header(ctx->req, "X-Request-Id");
    if (h != NULL && h->value.len > 0 && h->value.len <= HTTP_REQUEST_ID_BYTES_MAX) {
        bool printable = true;
        for (size_t i = 0; i < h->value.len && printable; i++)
            printable = h->value.ptr[i] > 0x20 && h->value.ptr[i] < 0x7f;
        if (printable)
            return h->value;
    }
    char *id = http_scratch_alloc(ctx, 32);
    if (id == NULL)
        return SLICE_LIT("-");
    uint64_t words[2] = { shard->request_id_prefix, ++shard->request_id_counter };
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < 16; i++)
            id[w * 16 + i] = http_hex[(words[w] >> (60 - 4 * i)) & 15];
    }
    return slice_make(id, 32);
}

/* request_id: the parked request's, or an empty slice to take the client's or make one. */
static void http_ctx_init(struct http_ctx *ctx, struct conn *conn, struct http_conn *hc,
                          const struct http1_request *req, struct slice request_id)
{
    memset(ctx, 0, offsetof(struct http_ctx, scratch));
    ctx->conn = conn;
    ctx->loop = conn_loop(conn);
    ctx->server = hc->shard->server;
    ctx->req = req;
    ctx->app = ctx->server->app;
    ctx->route = HTTP_ROUTE_UNMATCHED;
    ctx->head_only = req->method == HTTP1_METHOD_HEAD;
    buf_init(&ctx->scratch, hc->shard->scratch, sizeof(hc->shard->scratch));
    ctx->request_id = request_id.len > 0 ? request_id : http_request_id(ctx, hc->shard);
    log_set_request_id(ctx->request_id); /* every line about this request carries it */
}

static void http_stats_record(struct http_shard *shard, const struct http_ctx *ctx, uint64_t us);
static void http_access_log(const struct http_ctx *ctx, uint64_t us);
static size_t http_forwarded_render(const struct http1_request *req, char *dst);

static void http_request_begin(struct conn *conn, struct http_conn *hc)
{
    if (hc->request_started)
        return;
    hc->request_started = true;
    hc->start_us = loop_now_us();
    conn_timer_set(conn, CONN_TIMER_HEADER);
}

/* The request's bytes are all read: forget its framing state (also when it parks). */
static void http_request_input_done(struct conn *conn, struct http_conn *hc)
{
    hc->continue_sent = false;
    hc->awaiting_body = false;
    if (hc->chunk_body) {
        loop_block_put(conn_loop(conn), hc->chunk_body, hc->shard->server->limits.body_bytes_max + 1);
        hc->chunk_body = NULL;
    }
    hc->chunk_body_len = 0;
    hc->chunked_active = false;
}

static void http_request_end(struct conn *conn, struct http_conn *hc, struct http_ctx *ctx)
{
    uint64_t us = loop_now_us() - hc->start_us;
    http_stats_record(hc->shard, ctx, us);
    if (log_access_enabled())
        http_access_log(ctx, us);
    log_set_request_id(slice_make(NULL, 0));
    hc->request_started = false;
    http_request_input_done(conn, hc);
    if (hc->shutting_down || !ctx->req->keep_alive)
        hc->close_requested = true; /* done by http_settle, after TLS has sealed the answer */
    else
        conn_timer_set(conn, CONN_TIMER_IDLE);
}

/* An answer that no parsed request asked for (framing error, timeout): always closes. */
static void http_answer_and_close_after(struct conn *conn, struct http_conn *hc, int status,
                                        const char *detail, struct slice retry_after)
{
    struct http1_request *req = &hc->shard->req;
    memset(req, 0, offsetof(struct http1_request, headers));
    req->header_count = 0;
    req->keep_alive = false;
    req->version_minor = 1;
    struct http_ctx ctx;
    http_ctx_init(&ctx, conn, hc, req, slice_make(NULL, 0));
    hc->close_requested = true; /* framing can no longer be trusted (RFC 9112 §11.2) */
    if (retry_after.len > 0)
        http_header_add(&ctx, "Retry-After", retry_after);
    http_respond_problem(&ctx, status, detail);
    if (!hc->request_started)
        hc->start_us = loop_now_us();
    http_request_end(conn, hc, &ctx);
}

static void http_answer_and_close(struct conn *conn, struct http_conn *hc, int status,
                                  const char *detail)
{
    http_answer_and_close_after(conn, hc, status, detail, slice_make(NULL, 0));
}

/* A parked request outlived the idle deadline, the backstop of waits without a budget of
 * their own (a long worker queue): the client hears 503 with Retry-After (RFC 9110
 * §15.6.4) rather than a silent close, and the answer, when it comes, finds nobody. */
static void http_parked_expired(struct conn *conn, struct http_conn *hc)
{
    hc->parked->conn = NULL;
    hc->parked = NULL;
    http_answer_and_close_after(conn, hc, 503, "the answer took too long; retry later", SLICE_LIT("1"));
}

/* The handler parked the request: keep the connection quiet until http_resume. Its
 * deadline is the handler's (every wait has a budget); the idle deadline is a backstop
 * (http_parked_expired). */
static void http_request_park(struct conn *conn, struct http_conn *hc, struct http_ctx *ctx)
{
    hc->parked = ctx->parked;
    http_request_input_done(conn, hc);
    log_set_request_id(slice_make(NULL, 0));
    conn_pause_recv(conn, true);
    conn_timer_set(conn, CONN_TIMER_IDLE);
}

static void http_dispatch(struct conn *conn, struct http_conn *hc, const struct http1_request *req,
                          struct slice body)
{
    struct http_ctx ctx;
    http_ctx_init(&ctx, conn, hc, req, slice_make(NULL, 0));
    ctx.body = body;
    const struct http_route *route = http_route_find(&ctx);
    if (route != NULL) {
        ctx.route_arg = route->arg;
        hc->shard->dispatching = true;
        route->handler(&ctx);
        hc->shard->dispatching = false;
    }
    struct http_park *park = ctx.parked;
    if (park != NULL && !ctx.responded && park->early == NULL) {
        park->in_handler = false;
        http_request_park(conn, hc, &ctx);
        return;
    }
    if (park != NULL && park->early != NULL) { /* its wait ended before the handler did */
        assert(!ctx.responded);
        park->early(&ctx, park->state);
    }
    if (park != NULL) /* parked, then answered at once after all (its wait was refused) */
        http_park_free(park);
    if (!ctx.responded) {
        log_msg(LOG_ERROR, "handler gave no response", "route", route ? route->name : "", NULL);
        http_respond_problem(&ctx, 500, "internal error");
    }
    http_request_end(conn, hc, &ctx);
}

/* The head is complete, the body is not: say 100 Continue once and start the body deadline. */
static void http_await_body(struct conn *conn, struct http_conn *hc, const struct http1_request *req)
{
    if (hc->awaiting_body)
        return;
    hc->awaiting_body = true;
    conn_timer_set(conn, CONN_TIMER_BODY);
    if (req->expect_continue && !hc->continue_sent) {
        hc->continue_sent = true; /* RFC 9110 §10.1.1 */
        struct buf *out = http_output(conn);
        if (out)
            buf_append_cstr(out, "HTTP/1.1 100 Continue\r\n\r\n");
    }
}

/* Decodes the chunked bytes after the head. Returns the raw bytes the body took,
 * HTTP_NEED_MORE (every byte given was consumed), or HTTP_STOP. */
static int http_chunked_step(struct conn *conn, struct http_conn *hc, const char *raw, size_t len)
{
    const struct http1_limits *limits = &hc->shard->server->limits;
    if (!hc->chunked_active) {
        hc->chunk_body = loop_block_get(conn_loop(conn), limits->body_bytes_max + 1);
        if (hc->chunk_body == NULL) {
            http_answer_and_close(conn, hc, 503, "out of memory");
            return HTTP_STOP;
        }
        http1_chunked_init(&hc->chunked, limits->body_bytes_max);
        hc->chunked_active = true;
        hc->chunk_body_len = 0;
    }
    size_t consumed = 0;
    size_t produced = 0;
    enum http1_chunked_result r = http1_chunked_decode(&hc->chunked, raw, len,
                                                       hc->chunk_body + hc->chunk_body_len,
                                                       &consumed, &produced);
    hc->chunk_body_len += (uint32_t)produced;
    if (r == HTTP1_CHUNKED_DONE)
        return (int)consumed;
    if (r == HTTP1_CHUNKED_MORE)
        return HTTP_NEED_MORE;
    http_answer_and_close(conn, hc, r == HTTP1_CHUNKED_TOO_LARGE ? 413 : 400,
                          r == HTTP1_CHUNKED_TOO_LARGE ? "request body too large" : "malformed chunked body");
    return HTTP_STOP;
}

/* One request out of data[0..len): its length when it was answered, HTTP_NEED_MORE
 * with *keep = the bytes to hold until more arrive, or HTTP_STOP. */
static int http_handle_one(struct conn *conn, struct http_conn *hc, const char *data, size_t len,
                           size_t *keep)
{
    struct http1_request *req = &hc->shard->req;
    http_request_begin(conn, hc);
    int n = http1_parse_head(data, len, &hc->shard->server->limits, req);
    if (n == HTTP1_INCOMPLETE) {
        *keep = len;
        return HTTP_NEED_MORE;
    }
    if (n == HTTP1_ERROR) {
        http_answer_and_close(conn, hc, req->error_status, req->error_reason);
        return HTTP_STOP;
    }
    size_t head = (size_t)n;
    struct slice body = slice_make(data + head, 0);
    size_t total = head;
    if (req->body_kind == HTTP1_BODY_LENGTH) {
        if (len - head < req->content_length) {
            http_await_body(conn, hc, req);
            *keep = len;
            return HTTP_NEED_MORE;
        }
        body.len = (size_t)req->content_length;
        total += body.len;
    } else if (req->body_kind == HTTP1_BODY_CHUNKED) {
        int used = http_chunked_step(conn, hc, data + head, len - head);
        if (used == HTTP_NEED_MORE) {
            http_await_body(conn, hc, req);
            *keep = head; /* the decoded body is kept aside; only the head is parsed again */
            return HTTP_NEED_MORE;
        }
        if (used == HTTP_STOP)
            return HTTP_STOP;
        body = slice_make(hc->chunk_body, hc->chunk_body_len);
        total += (size_t)used;
    }
    http_dispatch(conn, hc, req, body);
    return (int)total;
}

static size_t http_out_room(struct conn *conn, struct http_conn *hc)
{
    size_t room = conn_out_room(conn);
    if (hc->tls) {
        struct buf *staging = &hc->shard->tls_staging;
        size_t staged_room = staging->cap - staging->len;
        room = staged_room < room ? staged_room : room;
        room -= room / 32; /* record headers and tags: under 1/32 of the plaintext */
    }
    return room;
}

/* Answers the complete requests in data[0..len). Returns where the unanswered bytes
 * start; *keep says how many of them to hold. */
static size_t http_process(struct conn *conn, struct http_conn *hc, const char *data, size_t len,
                           size_t *keep)
{
    size_t pos = 0;
    *keep = 0;
    while (pos < len) {
        if (conn_closing(conn) || hc->close_requested)
            return len; /* after an error or "Connection: close" nothing more runs (H24) */
        if (hc->parked) {
            *keep = len - pos; /* the next requests wait for the parked one's answer */
            return pos;
        }
        if (http_out_room(conn, hc) < HTTP_RESPONSE_BYTES_MAX) {
            hc->backpressure = true;
            conn_pause_recv(conn, true);
            *keep = len - pos;
            return pos;
        }
        size_t keep_one = 0;
        int r = http_handle_one(conn, hc, data + pos, len - pos, &keep_one);
        if (r == HTTP_STOP)
            return len;
        if (r == HTTP_NEED_MORE) {
            *keep = keep_one;
            return pos;
        }
        pos += (size_t)r;
    }
    return pos;
}

static void http_stash_release(struct conn *conn, struct http_conn *hc)
{
    loop_block_put(conn_loop(conn), hc->stash, hc->shard->server->stash_bytes);
    hc->stash = NULL;
    hc->stash_len = 0;
}

/* Holds src[0..len) (which may lie inside the stash itself) as the stash. */
static bool http_stash_keep(struct conn *conn, struct http_conn *hc, const char *src, size_t len)
{
    if (len == 0) {
        if (hc->stash)
            http_stash_release(conn, hc);
        return true;
    }
    if (hc->stash == NULL) {
        hc->stash = loop_block_get(conn_loop(conn), hc->shard->server->stash_bytes);
        if (hc->stash == NULL)
            return false;
    }
    memmove(hc->stash, src, len);
    hc->stash_len = (uint32_t)len;
    return true;
}

static void http_process_stash(struct conn *conn, struct http_conn *hc)
{
    size_t keep = 0;
    size_t pos = http_process(conn, hc, hc->stash, hc->stash_len, &keep);
    if (!http_stash_keep(conn, hc, hc->stash + pos, keep))
        conn_close(conn, true);
}

static void http_input(struct conn *conn, struct http_conn *hc, const char *data, size_t len)
{
    if (hc->stash_len == 0) {
        size_t keep = 0;
        size_t pos = http_process(conn, hc, data, len, &keep);
        if (!http_stash_keep(conn, hc, data + pos, keep))
            conn_close(conn, true);
        return;
    }
    if (len > hc->shard->server->stash_bytes - hc->stash_len) {
        if (hc->parked) {
            /* An answer now would overtake the parked one: a client this far ahead of
             * its answers loses the connection instead. */
            conn_close(conn, true);
            return;
        }
        http_answer_and_close(conn, hc, 431, "request too large");
        return;
    }
    memcpy(hc->stash + hc->stash_len, data, len);
    hc->stash_len += (uint32_t)len;
    if (!hc->backpressure && !hc->parked)
        http_process_stash(conn, hc);
}

/* ---- 5. Connection callbacks -------------------------------------------------------------- */

/* TLS: seal the staged answers into the connection's output. */
static void http_tls_flush(struct conn *conn, struct http_conn *hc)
{
    struct buf *staging = &hc->shard->tls_staging;
    if (staging->len > 0 && tls_conn_write(hc->tls, staging->data, staging->len) != 0) {
        staging->len = 0;
        conn_close(conn, true);
        return;
    }
    staging->len = 0;
    struct buf *out = conn_out(conn);
    if (out == NULL || tls_conn_drain(hc->tls, out) != 0)
        conn_close(conn, true);
}

/* End of every callback: seal TLS output, then close if an answer asked for it. */
static void http_settle(struct conn *conn, struct http_conn *hc)
{
    if (hc->tls && !conn_closing(conn))
        http_tls_flush(conn, hc);
    if (hc->close_requested && !conn_closing(conn))
        conn_close(conn, false);
}

static void http_tls_pump(struct conn *conn, struct http_conn *hc)
{
    while (!hc->backpressure && !hc->parked && !conn_closing(conn) && !hc->close_requested) {
        int n = tls_conn_read(hc->tls, hc->shard->tls_plain, sizeof(hc->shard->tls_plain));
        if (n == 0)
            return;
        if (n < 0) {
            /* close_notify: finish politely; a broken record or handshake: cut. */
            if (n == -TE_CLOSED)
                hc->close_requested = true;
            else
                conn_close(conn, true);
            return;
        }
        http_input(conn, hc, hc->shard->tls_plain, (size_t)n);
    }
}

static void http_on_open(struct conn *conn)
{
    struct http_conn *hc = conn_proto(conn);
    hc->shard = loop_app(conn_loop(conn));
    assert(hc->shard != NULL);
    if (hc->shard->server->tls) {
        hc->tls = tls_conn_create(hc->shard->server->tls);
        if (hc->tls == NULL)
            conn_close(conn, true);
    }
}

static void http_on_data(struct conn *conn, const char *data, size_t len)
{
    struct http_conn *hc = conn_proto(conn);
    if (hc->tls == NULL) {
        http_input(conn, hc, data, len);
    } else if (tls_conn_feed(hc->tls, data, len) != 0) {
        conn_close(conn, true);
        return;
    } else {
        http_tls_pump(conn, hc);
    }
    http_settle(conn, hc);
}

static void http_on_sent(struct conn *conn)
{
    struct http_conn *hc = conn_proto(conn);
    if (hc->backpressure) {
        hc->backpressure = false;
        conn_pause_recv(conn, false);
        if (hc->stash_len > 0)
            http_process_stash(conn, hc);
        if (hc->tls)
            http_tls_pump(conn, hc);
    }
    if (hc->shutting_down && !hc->request_started && hc->stash_len == 0)
        hc->close_requested = true;
    http_settle(conn, hc);
}

static void http_on_timeout(struct conn *conn, enum conn_timer timer)
{
    struct http_conn *hc = conn_proto(conn);
    if (hc->parked != NULL) {
        http_parked_expired(conn, hc);
        http_settle(conn, hc);
        return;
    }
    if (timer == CONN_TIMER_IDLE || !hc->request_started) {
        conn_close(conn, true); /* nothing was asked: nothing to answer */
        return;
    }
    /* RFC 9110 §15.5.9: the client took too long to send its request. */
    http_answer_and_close(conn, hc, 408, timer == CONN_TIMER_HEADER ? "request head not received in time"
                                                                    : "request body not received in time");
    http_settle(conn, hc);
}

static void http_on_shutdown(struct conn *conn)
{
    struct http_conn *hc = conn_proto(conn);
    hc->shutting_down = true;
    if (!hc->request_started && hc->stash_len == 0 && conn_out_pending(conn) == 0)
        conn_close(conn, true); /* idle keep-alive: nothing in flight to finish */
}

static void http_on_close(struct conn *conn)
{
    struct http_conn *hc = conn_proto(conn);
    if (hc->parked) {
        hc->parked->conn = NULL; /* its answer, when it comes, has nobody to go to */
        hc->parked = NULL;
    }
    if (hc->stash)
        http_stash_release(conn, hc);
    if (hc->chunk_body)
        loop_block_put(conn_loop(conn), hc->chunk_body, hc->shard->server->limits.body_bytes_max + 1);
    hc->chunk_body = NULL;
    tls_conn_destroy(hc->tls);
    hc->tls = NULL;
}

static const struct conn_handler http_handler = {
    .on_open = http_on_open,
    .on_data = http_on_data,
    .on_sent = http_on_sent,
    .on_timeout = http_on_timeout,
    .on_shutdown = http_on_shutdown,
    .on_close = http_on_close,
};

const struct conn_handler *http_server_handler(void)
{
    return &http_handler;
}

/* ---- 6. Parked requests ------------------------------------------------------------------- */

static size_t http_copy_cut(char *dst, size_t cap, struct slice src)
{
    size_t n = src.len < cap ? src.len : cap;
    memcpy(dst, src.ptr, n);
    return n;
}

/* ---- The client's address ------------------------------------------------------------------ */

/* "a.b.c.d" or "v6" of conn_peer's "a.b.c.d:port" or "[v6]:port". */
static struct slice http_peer_host(const char *peer)
{
    const char *colon = strrchr(peer, ':');
    size_t len = colon ? (size_t)(colon - peer) : strlen(peer);
    if (len >= 2 && peer[0] == '[' && peer[len - 1] == ']')
        return slice_make(peer + 1, len - 2);
    return slice_make(peer, len);
}

/* The request's one X-Forwarded-For field; empty when there is none, or several (a client
 * may send its own beside the one a proxy wrote, and which the proxy appended to is not
 * known). */
static struct slice http_forwarded_for(const struct http1_request *req)
{
    struct slice found = slice_make(NULL, 0);
    for (size_t i = 0; i < req->header_count; i++) {
        if (!slice_case_eq_cstr(req->headers[i].name, "X-Forwarded-For"))
            continue;
        if (found.ptr != NULL)
            return slice_make(NULL, 0);
        found = req->headers[i].value;
    }
    return found;
}

static struct slice http_client_of(const struct config *cfg, const struct http1_request *req, struct slice peer)
{
    struct cidr_addr addr;
    if (cfg->trusted_proxies_count == 0 || cidr_addr_parse(peer.ptr, peer.len, &addr) != 0 ||
        !cidr_match(cfg->trusted_proxies, cfg->trusted_proxies_count, &addr))
        return peer;
    return http_forwarded_client(cfg->trusted_proxies, cfg->trusted_proxies_count, peer,
                                 http_forwarded_for(req));
}

void http_client_address(const struct http_ctx *ctx, char *dst, size_t cap)
{
    const struct http_conn *hc = conn_proto(ctx->conn);
    struct slice client = http_client_of(hc->shard->server->cfg, ctx->req, http_peer_host(conn_peer(ctx->conn)));
    size_t len = client.len < cap ? client.len : 0;
    memcpy(dst, client.ptr, len);
    dst[len] = '\0';
}

void *http_park(struct http_ctx *ctx, size_t bytes)
{
    assert(ctx->parked == NULL && !ctx->responded);
    if (bytes > HTTP_PARK_STATE_MAX)
        return NULL;
    struct http_park *park = (struct http_park *)loop_block_get(ctx->loop, HTTP_PARK_BYTES);
    if (park == NULL)
        return NULL;
    memset(park, 0, sizeof(*park) + bytes);
    park->state_bytes = (uint16_t)bytes;
    park->conn = ctx->conn;
    park->loop = ctx->loop;
    park->parked_us = loop_now_us();
    park->route = ctx->route;
    park->method = ctx->req->method;
    park->version_minor = ctx->req->version_minor;
    park->keep_alive = ctx->req->keep_alive;
    park->head_only = ctx->head_only;
    park->request_id_len = (uint8_t)http_copy_cut(park->request_id, sizeof(park->request_id),
                                                  ctx->request_id);
    park->method_len = (uint8_t)http_copy_cut(park->method_name, sizeof(park->method_name),
                                              ctx->req->method_name);
    park->path_len = (uint16_t)http_copy_cut(park->path, sizeof(park->path), ctx->req->path);
    http_client_address(ctx, park->client, sizeof(park->client));
    if (log_access_enabled())
        park->forwarded_len = (uint16_t)http_forwarded_render(ctx->req, park->forwarded);
    park->in_handler = true;
    ctx->parked = park;
    return park->state;
}

static const struct http_park *http_park_of(const void *state)
{
    return (const struct http_park *)((const char *)state - offsetof(struct http_park, state));
}

uint64_t http_parked_since_us(const void *state)
{
    return http_park_of(state)->parked_us;
}

struct slice http_parked_request_id(const void *state)
{
    const struct http_park *park = http_park_of(state);
    return slice_make(park->request_id, park->request_id_len);
}

const char *http_parked_route(const void *state)
{
    const struct http_park *park = http_park_of(state);
    const struct http_server *server = http_the_server;
    return park->route >= 0 && (size_t)park->route < server->route_count ? server->routes[park->route].name : "";
}

const char *http_parked_client(const void *state)
{
    return http_park_of(state)->client;
}

bool http_parked_waiting(const void *state)
{
    const struct http_park *park = http_park_of(state);
    return park->in_handler || (park->conn != NULL && !conn_closing(park->conn));
}

/* The request as the answer and the access log need it, from what the park kept. */
static void http_park_request(const struct http_park *park, struct http1_request *req)
{
    memset(req, 0, offsetof(struct http1_request, headers));
    req->header_count = 0;
    req->method = park->method;
    req->method_name = slice_make(park->method_name, park->method_len);
    req->path = slice_make(park->path, park->path_len);
    req->target = req->path;
    req->version_minor = park->version_minor;
    req->keep_alive = park->keep_alive;
}

/* After a resumed answer: read again and answer what waited behind the parked request. */
static void http_continue(struct conn *conn, struct http_conn *hc)
{
    conn_pause_recv(conn, false);
    if (hc->stash_len > 0 && !hc->backpressure)
        http_process_stash(conn, hc);
    if (hc->tls)
        http_tls_pump(conn, hc);
    if (hc->shutting_down && !hc->request_started && hc->stash_len == 0)
        hc->close_requested = true;
    http_settle(conn, hc);
    conn_flush(conn);
}

void http_resume_expired(void *state)
{
    struct http_park *park = (struct http_park *)((char *)state - offsetof(struct http_park, state));
    assert(!park->in_handler);
    struct conn *conn = park->conn;
    if (conn != NULL && !conn_closing(conn)) {
        struct http_conn *hc = conn_proto(conn);
        assert(hc->parked == park && !hc->shard->dispatching);
        http_parked_expired(conn, hc);
        http_settle(conn, hc);
        conn_flush(conn);
    } else if (conn != NULL) {
        ((struct http_conn *)conn_proto(conn))->parked = NULL;
    }
    http_park_free(park);
}

void http_resume(void *state, http_resume_fn respond)
{
    struct http_park *park = (struct http_park *)((char *)state - offsetof(struct http_park, state));
    if (park->in_handler) { /* answered by http_dispatch when the handler returns */
        assert(park->early == NULL);
        park->early = respond;
        return;
    }
    struct conn *conn = park->conn;
    if (conn != NULL && !conn_closing(conn)) {
        struct http_conn *hc = conn_proto(conn);
        assert(hc->parked == park && !hc->shard->dispatching);
        hc->parked = NULL;
        struct http1_request req;
        http_park_request(park, &req);
        struct http_ctx ctx;
        http_ctx_init(&ctx, conn, hc, &req, slice_make(park->request_id, park->request_id_len));
        ctx.route = park->route;
        ctx.head_only = park->head_only;
        ctx.forwarded = slice_make(park->forwarded, park->forwarded_len);
        respond(&ctx, state);
        if (!ctx.responded) {
            log_msg(LOG_ERROR, "resumed handler gave no response", NULL);
            http_respond_problem(&ctx, 500, "internal error");
        }
        http_request_end(conn, hc, &ctx);
        http_continue(conn, hc);
    } else if (conn != NULL) {
        ((struct http_conn *)conn_proto(conn))->parked = NULL;
    }
    http_park_free(park);
}

/* ---- 7. Statistics and metrics ------------------------------------------------------------ */

static void http_stat_add(uint64_t *counter, uint64_t n)
{
    /* Owner-only write; relaxed store so a scrape's relaxed load is race-free. */
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

static size_t http_status_slot(int status)
{
    for (size_t i = 0; i < HTTP_STATUS_SLOTS; i++) {
        if (http_status_slots[i] == status)
            return i;
    }
    return HTTP_STATUS_OTHER;
}

static void http_stats_record(struct http_shard *shard, const struct http_ctx *ctx, uint64_t us)
{
    size_t route = (size_t)ctx->route;
    http_stat_add(&shard->stats.requests[route][http_status_slot(ctx->status)], 1);
    size_t bucket = 0;
    while (bucket < HTTP_LATENCY_BUCKETS && us > http_latency_bounds_us[bucket])
        bucket++;
    http_stat_add(&shard->stats.latency[route][bucket], 1);
    http_stat_add(&shard->stats.latency_sum_us[route], us);
}

/* What a proxy or a gateway says of the request (nginx auth_request, Traefik forwardAuth and
 * Envoy ext_authz asking /verify about the request they hold), for the access line: the member
 * ,"forwarded":{"for":…,"proto":…,"host":…,"method":…,"uri":…} of the X-Forwarded-* fields
 * sent, rendered into dst (HTTP_FORWARDED_TEXT_MAX bytes). The values are the sender's claims,
 * each cut to HTTP_FORWARDED_LOG_MAX bytes, X-Forwarded-Uri without its query (which may carry
 * a code or a token, as the path rule below). A member that would not fit is left out, with
 * those after it. Its length; 0 when none was sent. */
static size_t http_forwarded_render(const struct http1_request *req, char *dst)
{
    /* X-Forwarded-<member>, in the order rendered; the first field of each name counts. */
    static const char *const members[] = { "for", "proto", "host", "method", "uri" };
    enum { MEMBERS = sizeof(members) / sizeof(members[0]), MEMBER_URI = 4 };
    static const char prefix[] = "X-Forwarded-";
    const size_t prefix_len = sizeof(prefix) - 1;
    struct slice values[MEMBERS];
    bool sent[MEMBERS] = { false };
    for (size_t i = 0; i < req->header_count; i++) { /* one pass over the fields */
        struct slice name = req->headers[i].name;
        if (name.len <= prefix_len || !slice_case_eq_cstr(slice_make(name.ptr, prefix_len), prefix))
            continue;
        struct slice suffix = slice_make(name.ptr + prefix_len, name.len - prefix_len);
        for (size_t m = 0; m < MEMBERS; m++) {
            if (!sent[m] && slice_case_eq_cstr(suffix, members[m])) {
                values[m] = req->headers[i].value;
                sent[m] = true;
            }
        }
    }
    struct buf out;
    buf_init(&out, dst, HTTP_FORWARDED_TEXT_MAX);
    for (size_t m = 0; m < MEMBERS; m++) {
        if (!sent[m])
            continue;
        struct slice v = values[m];
        const char *query = m == MEMBER_URI ? memchr(v.ptr, '?', v.len) : NULL;
        if (query != NULL)
            v.len = (size_t)(query - v.ptr);
        if (v.len > HTTP_FORWARDED_LOG_MAX)
            v.len = HTTP_FORWARDED_LOG_MAX;
        if (out.len + buf_json_string_len(v) + HTTP_FORWARDED_MEMBER_BYTES > out.cap)
            break; /* a cut value would not be JSON */
        buf_append_cstr(&out, out.len > 0 ? ",\"" : ",\"forwarded\":{\"");
        buf_append_cstr(&out, members[m]);
        buf_append_cstr(&out, "\":");
        buf_append_json_string(&out, v);
    }
    if (out.len > 0)
        buf_append_cstr(&out, "}");
    return out.len;
}

static void http_access_log(const struct http_ctx *ctx, uint64_t us)
{
    struct buf *line = log_begin(LOG_INFO, "access");
    if (line == NULL)
        return;
    /* The path only: a query string may carry a code or a token (K rows). */
    buf_append_cstr(line, ",\"method\":");
    buf_append_json_string(line, ctx->req->method_name);
    buf_append_cstr(line, ",\"path\":");
    buf_append_json_string(line, ctx->req->path);
    buf_printf(line, ",\"status\":%d,\"bytes\":%zu,\"duration_us\":%llu,\"peer\":", ctx->status,
               ctx->response_bytes, (unsigned long long)us);
    const char *peer = conn_peer(ctx->conn);
    buf_append_json_string(line, slice_make(peer, strlen(peer)));
    char mem[HTTP_FORWARDED_TEXT_MAX];
    struct slice forwarded = ctx->forwarded;
    if (forwarded.len == 0) /* not resumed: the request's own fields (a resumed one has none) */
        forwarded = slice_make(mem, http_forwarded_render(ctx->req, mem));
    if (line->len + forwarded.len <= line->cap) /* else left out: cut, it would not be JSON */
        buf_append(line, forwarded.ptr, forwarded.len);
    log_end(line);
}

static uint64_t http_sum(struct http_server *server, size_t offset)
{
    uint64_t total = 0;
    for (size_t s = 0; s < CONFIG_SHARDS_MAX; s++) {
        if (server->shards[s] == NULL)
            continue;
        const uint64_t *counter = (const uint64_t *)((const char *)&server->shards[s]->stats + offset);
        total += __atomic_load_n(counter, __ATOMIC_RELAXED);
    }
    return total;
}

#define HTTP_STAT_OFFSET(field) ((size_t)((const char *)&(field) - (const char *)&probe))

static const char *http_route_label(const struct http_server *server, size_t route)
{
    return route == HTTP_ROUTE_UNMATCHED ? "unmatched" : server->routes[route].name;
}

/* Routes added under one name (an endpoint's GET and POST, or its several paths) are one
 * series (struct http_route's series, found when added): rendered at the first of them, summed
 * over all. True when route is that first one (the unmatched row is its own). */
static bool http_route_first_of_name(const struct http_server *server, size_t route)
{
    return route == HTTP_ROUTE_UNMATCHED || server->routes[route].series == route;
}

/* A per-route counter summed over the shards and the routes of route's series: offset0 is its
 * offset for route 0, stride the distance from one route's to the next's. */
static uint64_t http_sum_named(struct http_server *server, size_t route, size_t offset0, size_t stride)
{
    if (route == HTTP_ROUTE_UNMATCHED)
        return http_sum(server, offset0 + route * stride);
    uint64_t total = 0;
    for (size_t r = route; r < server->route_count; r++) {
        if (server->routes[r].series == route)
            total += http_sum(server, offset0 + r * stride);
    }
    return total;
}

static void http_render_requests(struct http_server *server, size_t route, struct buf *out)
{
    static const struct http_stats probe;
    const char *label = http_route_label(server, route);
    if (!http_route_first_of_name(server, route))
        return;
    for (size_t slot = 0; slot <= HTTP_STATUS_SLOTS; slot++) {
        uint64_t n = http_sum_named(server, route, HTTP_STAT_OFFSET(probe.requests[0][slot]),
                                    sizeof(probe.requests[0]));
        if (n == 0)
            continue;
        if (slot == HTTP_STATUS_OTHER)
            buf_printf(out, "tessera_http_requests_total{route=\"%s\",status=\"other\"} %llu\n", label,
                       (unsigned long long)n);
        else
            buf_printf(out, "tessera_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", label,
                       http_status_slots[slot], (unsigned long long)n);
    }
}

static void http_render_latency(struct http_server *server, size_t route, struct buf *out)
{
    static const struct http_stats probe;
    const char *label = http_route_label(server, route);
    uint64_t buckets[HTTP_LATENCY_BUCKETS + 1], cumulative = 0, count = 0;
    if (!http_route_first_of_name(server, route))
        return;
    for (size_t b = 0; b <= HTTP_LATENCY_BUCKETS; b++) {
        buckets[b] = http_sum_named(server, route, HTTP_STAT_OFFSET(probe.latency[0][b]), sizeof(probe.latency[0]));
        count += buckets[b];
    }
    if (count == 0)
        return; /* a route never asked has no series yet: the body stays within its bound */
    for (size_t b = 0; b <= HTTP_LATENCY_BUCKETS; b++) {
        cumulative += buckets[b];
        if (b < HTTP_LATENCY_BUCKETS)
            buf_printf(out, "tessera_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                       label, (double)http_latency_bounds_us[b] / 1e6, (unsigned long long)cumulative);
        else
            buf_printf(out, "tessera_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                       label, (unsigned long long)cumulative);
    }
    uint64_t sum_us = http_sum_named(server, route, HTTP_STAT_OFFSET(probe.latency_sum_us[0]),
                                     sizeof(probe.latency_sum_us[0]));
    buf_printf(out, "tessera_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", label,
               (double)sum_us / 1e6);
    buf_printf(out, "tessera_http_request_duration_seconds_count{route=\"%s\"} %llu\n", label,
               (unsigned long long)cumulative);
}

void http_server_render_metrics(struct http_server *server, struct buf *out)
{
    /* Each family's lines stay together (Prometheus text format 0.0.4). */
    buf_append_cstr(out, "# HELP tessera_http_requests_total Requests answered, by route and status.\n"
                         "# TYPE tessera_http_requests_total counter\n");
    for (size_t route = 0; route < server->route_count; route++)
        http_render_requests(server, route, out);
    http_render_requests(server, HTTP_ROUTE_UNMATCHED, out);
    buf_append_cstr(out, "# HELP tessera_http_request_duration_seconds Time from a request's first "
                         "byte to its answer.\n"
                         "# TYPE tessera_http_request_duration_seconds histogram\n");
    for (size_t route = 0; route < server->route_count; route++)
        http_render_latency(server, route, out);
    http_render_latency(server, HTTP_ROUTE_UNMATCHED, out);
}
