/* proto/http1.h: HTTP/1.1 request parsing (RFC 9112), strict where the RFC says a
 * server must be, bounded everywhere. No I/O, no allocation: the parser returns
 * slices into the caller's buffer.
 *
 * Use:
 *   1. http1_parse_head() on the bytes received so far. It returns the length of
 *      the request head (request line + fields + the empty line) when complete,
 *      HTTP1_INCOMPLETE when more bytes are needed, HTTP1_ERROR with
 *      req->error_status set (400, 413, 414, 417, 431, 501, 505) when the request
 *      must be refused. After an error the connection is closed: framing can no
 *      longer be trusted (RFC 9112 §11.2), so no later byte is ever parsed.
 *   2. The body framing is in req->body_kind. For HTTP1_BODY_LENGTH, the next
 *      req->content_length bytes are the body. For HTTP1_BODY_CHUNKED, feed the
 *      bytes after the head to http1_chunked_decode() until it says done.
 *
 * Split input: parsing the first n bytes of a head returns HTTP1_INCOMPLETE, or
 * HTTP1_ERROR with the same status as the whole head would give, for every n; a
 * limit is enforced as soon as the bytes present prove it is exceeded (an
 * over-long head answers 431 before its terminator arrives). */
#ifndef TESSERA_PROTO_HTTP1_H
#define TESSERA_PROTO_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define HTTP1_ERROR (-1)
#define HTTP1_INCOMPLETE (-2)

/* Defaults (DESIGN §6); each is a field of struct http1_limits so config can change it. */
#define HTTP1_HEAD_BYTES_MAX 8192      /* request line + header section → 431 */
#define HTTP1_TARGET_BYTES_MAX 4096    /* request-target → 414; below the head limit */
#define HTTP1_HEADER_FIELDS_MAX 64     /* field lines → 431 */
#define HTTP1_BODY_BYTES_MAX 65536     /* decoded body → 413 */
#define HTTP1_METHOD_BYTES_MAX 16      /* longer than any method we implement → 501 */
#define HTTP1_CHUNK_EXT_BYTES_MAX 256  /* one chunk's extensions (RFC 9112 §7.1.1) → 400 */
#define HTTP1_TRAILER_BYTES_MAX 1024   /* the whole trailer section → 400 */

_Static_assert(HTTP1_TARGET_BYTES_MAX < HTTP1_HEAD_BYTES_MAX, "a target at its limit fits a head");

enum http1_method {
    HTTP1_METHOD_GET,
    HTTP1_METHOD_HEAD,
    HTTP1_METHOD_POST,
    HTTP1_METHOD_PUT,
    HTTP1_METHOD_PATCH,
    HTTP1_METHOD_DELETE,
    HTTP1_METHOD_OPTIONS,
    HTTP1_METHOD_COUNT,
};

enum http1_body_kind {
    HTTP1_BODY_NONE,    /* no Content-Length, no Transfer-Encoding: empty body */
    HTTP1_BODY_LENGTH,  /* Content-Length: content_length bytes follow */
    HTTP1_BODY_CHUNKED, /* Transfer-Encoding: chunked */
};

struct http1_header {
    struct slice name;  /* as received; compare case-insensitively */
    struct slice value; /* leading and trailing SP/HTAB removed; bytes 0x80-0xFF kept opaque */
};

struct http1_limits {
    size_t head_bytes_max;
    size_t target_bytes_max;
    size_t header_fields_max; /* at most HTTP1_HEADER_FIELDS_MAX: the array below is that big */
    size_t body_bytes_max;
};

struct http1_request {
    enum http1_method method;
    struct slice method_name;
    struct slice target;  /* the request-target exactly as received */
    struct slice path;    /* origin-form: the part before '?'; absolute-form: the path after
                             the authority ("/" when empty). Still percent-encoded. */
    struct slice query;   /* after '?', without it; empty when none. Still encoded. */
    int version_minor;    /* HTTP/1.0 → 0, HTTP/1.1 → 1 */
    struct http1_header headers[HTTP1_HEADER_FIELDS_MAX];
    size_t header_count;
    struct slice host;    /* the Host field value (required and single in HTTP/1.1) */
    enum http1_body_kind body_kind;
    uint64_t content_length; /* HTTP1_BODY_LENGTH only */
    bool keep_alive;      /* 1.1 unless "Connection: close"; 1.0 only with "keep-alive" */
    bool expect_continue; /* "Expect: 100-continue" */
    int error_status;     /* set when HTTP1_ERROR is returned */
    const char *error_reason; /* short static text for logs and the problem detail */
};

void http1_limits_default(struct http1_limits *limits);

/* Parses a request head from buf[0..len). Returns the head's length in bytes,
 * HTTP1_INCOMPLETE, or HTTP1_ERROR with req->error_status and req->error_reason. */
int http1_parse_head(const char *buf, size_t len, const struct http1_limits *limits,
                     struct http1_request *req);

/* Case-insensitive lookup of a field by name; NULL when absent. Returns the first. */
const struct http1_header *http1_find_header(const struct http1_request *req, const char *name);

/* Chunked body decoding (RFC 9112 §7.1), incremental and in place: dst may equal
 * src (decoded data is never longer than its encoding). Trailer fields are read,
 * bounded and discarded: they are never merged into the header section
 * (RFC 9110 §6.5.1). */
struct http1_chunked {
    int state;               /* private */
    uint64_t chunk_left;     /* private: data bytes left in the current chunk */
    size_t ext_bytes;        /* private: extension bytes seen in this chunk line */
    size_t size_digits;      /* private */
    size_t trailer_bytes;    /* private */
    uint64_t body_bytes;     /* decoded so far */
    uint64_t body_bytes_max; /* from the limits; crossing it is 413 */
};

enum http1_chunked_result {
    HTTP1_CHUNKED_DONE = 0,      /* the last chunk and trailers are consumed */
    HTTP1_CHUNKED_MORE = 1,      /* all of src consumed, the body goes on */
    HTTP1_CHUNKED_BAD = -1,      /* malformed framing: 400, close */
    HTTP1_CHUNKED_TOO_LARGE = -2 /* decoded body over the limit: 413, close */
};

void http1_chunked_init(struct http1_chunked *chunked, uint64_t body_bytes_max);

/* Decodes from src[0..len) appending data to dst. *consumed gets the bytes of src
 * used (on DONE, bytes after the body belong to the next request), *produced the
 * data bytes written to dst. */
enum http1_chunked_result http1_chunked_decode(struct http1_chunked *chunked, const char *src,
                                               size_t len, char *dst, size_t *consumed,
                                               size_t *produced);

#endif
