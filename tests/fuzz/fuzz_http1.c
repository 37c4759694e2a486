/* tests/fuzz/fuzz_http1.c: libFuzzer target for proto/http1.c and proto/url.c.
 * Each input is parsed as a request head with the default limits; the bytes
 * after it go through the chunked decoder; the path segments and query pairs
 * through the url decoders. Beside memory errors (ASan, UBSan) it checks the
 * split property (SECURITY.md H29): the input cut at a position taken from its
 * first byte parses to INCOMPLETE or the whole input's outcome, and the whole
 * input given in a fresh buffer parses to the same result and slices; the chunked
 * decoder gives the same result whole and split. Any difference aborts. Every
 * copy is malloc'ed to its exact length so ASan catches a read past the end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http1.h"
#include "proto/url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static char *fuzz_copy(const uint8_t *data, size_t size)
{
    char *p = malloc(size > 0 ? size : 1);
    fuzz_check(p != NULL);
    if (size > 0)
        memcpy(p, data, size);
    return p;
}

static long fuzz_offset(struct slice s, const char *base, size_t len)
{
    if (s.ptr == NULL || s.ptr < base || s.ptr > base + len)
        return -1; /* NULL, or a static "/" for absolute-form without a path */
    return (long)(s.ptr - base);
}

static int fuzz_same_slice(struct slice a, const char *abase, struct slice b, const char *bbase,
                           size_t len)
{
    return a.len == b.len && fuzz_offset(a, abase, len) == fuzz_offset(b, bbase, len);
}

static void fuzz_same_request(int rc, const struct http1_request *a, const char *abase,
                              const struct http1_request *b, const char *bbase, size_t len)
{
    if (rc == HTTP1_ERROR) {
        fuzz_check(a->error_status == b->error_status);
        return;
    }
    if (rc < 0)
        return;
    fuzz_check(fuzz_same_slice(a->target, abase, b->target, bbase, len));
    fuzz_check(fuzz_same_slice(a->path, abase, b->path, bbase, len));
    fuzz_check(fuzz_same_slice(a->query, abase, b->query, bbase, len));
    fuzz_check(fuzz_same_slice(a->host, abase, b->host, bbase, len));
    fuzz_check(a->header_count == b->header_count);
    for (size_t i = 0; i < a->header_count; i++) {
        fuzz_check(fuzz_same_slice(a->headers[i].name, abase, b->headers[i].name, bbase, len));
        fuzz_check(fuzz_same_slice(a->headers[i].value, abase, b->headers[i].value, bbase, len));
    }
    fuzz_check(a->method == b->method && a->version_minor == b->version_minor);
    fuzz_check(a->body_kind == b->body_kind && a->content_length == b->content_length);
    fuzz_check(a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue);
}

/* H29: the prefix gives INCOMPLETE or the whole outcome; a fresh copy of the
 * whole gives the same parse. */
static int fuzz_head(const uint8_t *data, size_t size, const struct http1_limits *limits,
                     struct http1_request *whole, char *whole_buf)
{
    static struct http1_request part;
    int rc = http1_parse_head(whole_buf, size, limits, whole);
    fuzz_check(rc == HTTP1_ERROR || rc == HTTP1_INCOMPLETE || (rc > 0 && (size_t)rc <= size));
    fuzz_check(rc != HTTP1_ERROR || whole->error_reason != NULL);
    size_t split = size > 0 ? (size_t)data[0] * size / 255 : 0;
    char *prefix = fuzz_copy(data, split);
    int prc = http1_parse_head(prefix, split, limits, &part);
    if (prc != HTTP1_INCOMPLETE) {
        fuzz_check(prc == rc);
        fuzz_same_request(rc, whole, whole_buf, &part, prefix, split);
    } else {
        fuzz_check(rc < 0 || (size_t)rc > split); /* a complete head stays complete */
    }
    free(prefix);
    char *again = fuzz_copy(data, size);
    fuzz_check(http1_parse_head(again, size, limits, &part) == rc);
    fuzz_same_request(rc, whole, whole_buf, &part, again, size);
    free(again);
    return rc;
}

/* Decodes src whole and split at `split`, in place in private copies. */
static void fuzz_chunked(const uint8_t *src, size_t len, size_t split, uint64_t body_max)
{
    char *bufs[2] = { fuzz_copy(src, len), fuzz_copy(src, len) };
    enum http1_chunked_result results[2];
    size_t outs[2];
    size_t ins[2];
    for (int k = 0; k < 2; k++) {
        struct http1_chunked ch;
        http1_chunked_init(&ch, body_max);
        size_t in = 0;
        size_t out = 0;
        size_t cut = k == 0 ? len : split;
        enum http1_chunked_result r = HTTP1_CHUNKED_MORE;
        while (r == HTTP1_CHUNKED_MORE && in < len) {
            size_t n = in < cut ? cut - in : len - in;
            size_t consumed;
            size_t produced;
            r = http1_chunked_decode(&ch, bufs[k] + in, n, bufs[k] + out, &consumed, &produced);
            fuzz_check(consumed <= n && produced <= consumed);
            fuzz_check(r != HTTP1_CHUNKED_MORE || consumed == n);
            in += consumed;
            out += produced;
        }
        fuzz_check(ch.body_bytes == out && out <= body_max);
        results[k] = r;
        outs[k] = out;
        ins[k] = in;
    }
    fuzz_check(results[0] == results[1]);
    if (results[0] != HTTP1_CHUNKED_BAD && results[0] != HTTP1_CHUNKED_TOO_LARGE) {
        fuzz_check(outs[0] == outs[1] && memcmp(bufs[0], bufs[1], outs[0]) == 0);
        fuzz_check(ins[0] == ins[1]);
    }
    free(bufs[0]);
    free(bufs[1]);
}

/* Path segments and query pairs through the url decoders. */
static void fuzz_url(const struct http1_request *req)
{
    static char out[HTTP1_HEAD_BYTES_MAX];
    struct slice path = req->path;
    size_t start = 0;
    for (size_t i = 0; i <= path.len; i++) {
        if (i < path.len && path.ptr[i] != '/')
            continue;
        struct slice seg = slice_make(path.ptr + start, i - start);
        int n = url_decode_path_segment(seg, out);
        fuzz_check(n >= -1 && (n < 0 || (size_t)n <= seg.len));
        fuzz_check(n < 0 || memchr(out, '/', (size_t)n) == NULL);
        start = i + 1;
    }
    size_t pos = 0;
    struct slice key;
    struct slice value;
    while (url_form_next(req->query, &pos, &key, &value)) {
        int k = url_decode_form_component(key, out);
        int v = url_decode_form_component(value, out);
        fuzz_check((k < 0 || (size_t)k <= key.len) && (v < 0 || (size_t)v <= value.len));
        fuzz_check(k < 0 || memchr(out, '\0', (size_t)k) == NULL);
    }
    int g = url_form_get(req->query, "code", out, 64);
    fuzz_check(g >= -2 && g <= 64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http1_request req;
    struct http1_limits limits;
    http1_limits_default(&limits);
    char *buf = fuzz_copy(data, size);
    int rc = fuzz_head(data, size, &limits, &req, buf);
    /* The body decoder runs on what follows a parsed head, or on the whole
     * input when there is none, so it is fuzzed either way. */
    size_t body_at = rc > 0 ? (size_t)rc : 0;
    size_t body_len = size - body_at;
    size_t split = size > 1 ? (size_t)data[size - 1] * body_len / 255 : 0;
    fuzz_chunked(data + body_at, body_len, split, limits.body_bytes_max);
    fuzz_chunked(data + body_at, body_len, split, 16); /* a small limit reaches H16 */
    if (rc > 0)
        fuzz_url(&req);
    free(buf);
    return 0;
}
