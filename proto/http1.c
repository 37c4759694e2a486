/* proto/http1.c: the HTTP/1.1 request-head parser and the chunked body decoder
 * (RFC 9112). Strict where the RFC lets a server be: a head is accepted whole or
 * refused with one status, never repaired (SECURITY.md H01-H23, H27, H29).
 *
 * Contents
 *   1. Byte classes (RFC 9110 §5.6.2 tchar, §5.5 field-value, RFC 3986 host)
 *   2. Request line (RFC 9112 §3)
 *   3. Field lines (RFC 9112 §5)
 *   4. Framing and semantics: Host, Content-Length, Transfer-Encoding,
 *      Connection, Expect (RFC 9112 §3.2, §6, §9.3; RFC 9110 §10.1.1)
 *   5. http1_parse_head
 *   6. Chunked decoder (RFC 9112 §7.1)
 *
 * Split input (H29): the parser re-reads the head from its first byte on every
 * call (heads are at most head_bytes_max, so this stays linear per call), and
 * every error is decided at a byte position from the bytes before it, or when a
 * line or the whole head is complete. Hence any prefix gives HTTP1_INCOMPLETE or
 * the error the whole head gives. */
#include "proto/http1.h"

#include <assert.h>
#include <limits.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
 * request line; two covers clients that end a POST body with an extra CRLF. */
#define HTTP1_EMPTY_LINES_MAX 2
/* "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3) is exactly this long. */
#define HTTP1_VERSION_BYTES 8
/* RFC 9110 §8.6: 19 decimal digits always fit a uint64_t (max 1.8e19), so a
 * Content-Length of at most this many digits cannot overflow. */
#define HTTP1_CONTENT_LENGTH_DIGITS_MAX 19
/* RFC 3986 §3.2.3: a port is *DIGIT; 65535 has five. */
#define HTTP1_PORT_DIGITS_MAX 5
/* A chunk-size of 16 hex digits fits a uint64_t exactly (RFC 9112 §7.1: the
 * recipient must anticipate and guard against overflow). */
#define HTTP1_CHUNK_SIZE_DIGITS_MAX 16

_Static_assert(HTTP1_HEAD_BYTES_MAX <= INT_MAX, "a head length is returned as int");
_Static_assert(HTTP1_METHOD_BYTES_MAX > sizeof("OPTIONS") - 1, "the longest method fits");

/* 1. Byte classes ------------------------------------------------------------ */

/* RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-"
 * / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. A table: names are the
 * bytes scanned one at a time. */
static const bool http1_tchar_table[256] = {
    ['0' ... '9'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true,
    ['!'] = true, ['#' ... '\''] = true, ['*'] = true, ['+'] = true, ['-'] = true,
    ['.'] = true, ['^'] = true, ['_'] = true, ['`'] = true, ['|'] = true, ['~'] = true,
};

static bool http1_is_tchar(unsigned char c)
{
    return http1_tchar_table[c];
}

/* The length of the run of bytes in [lo, 0x7E] at p[0..n), lo >= 0x20: the
 * common bytes of targets and field values, 16 at a time where SSE2 exists
 * (picohttpparser's findchar_fast does the same with SSE4.2). Never reads
 * p[n] or beyond. */
static size_t http1_span_visible(const char *p, size_t n, unsigned char lo)
{
    assert(lo >= 0x20 && lo < 0x7F);
    size_t i = 0;
#ifdef __SSE2__
    const __m128i below = _mm_set1_epi8((char)(lo - 1));
    const __m128i above = _mm_set1_epi8(0x7F);
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        /* Signed compares: bytes 0x80-0xFF are negative, so they fall out too. */
        __m128i ok = _mm_and_si128(_mm_cmpgt_epi8(x, below), _mm_cmplt_epi8(x, above));
        unsigned stop = (unsigned)_mm_movemask_epi8(ok) ^ 0xFFFFu;
        if (stop != 0)
            return i + (size_t)__builtin_ctz(stop);
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < lo || c > 0x7E)
            break;
    }
    return i;
}

/* RFC 9110 §5.5: field-vchar / SP / HTAB, with obs-text (0x80-0xFF) kept opaque.
 * NUL, CR, LF and the other controls are refused (H10). */
static bool http1_is_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

/* RFC 9112 §3.2: the request-target is visible ASCII only (H10, H11). */
static bool http1_is_target_byte(unsigned char c)
{
    return c >= 0x21 && c <= 0x7E;
}

static bool http1_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool http1_is_hex(unsigned char c)
{
    return http1_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned http1_hex_value(unsigned char c)
{
    assert(http1_is_hex(c));
    if (c <= '9')
        return c - '0';
    return (unsigned)(c | 0x20) - 'a' + 10;
}

/* RFC 3986 §2.2, §2.3: unreserved / sub-delims, the bytes of a reg-name. */
static const bool http1_host_table[256] = {
    ['0' ... '9'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true,
    ['-'] = true, ['.'] = true, ['_'] = true, ['~'] = true,
    ['!'] = true, ['$'] = true, ['&' ... ','] = true, [';'] = true, ['='] = true,
};

static bool http1_is_host_byte(unsigned char c)
{
    return http1_host_table[c];
}

static bool http1_is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static struct slice http1_trim_ows(struct slice s)
{
    while (s.len > 0 && http1_is_ows((unsigned char)s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len > 0 && http1_is_ows((unsigned char)s.ptr[s.len - 1]))
        s.len--;
    return s;
}

/* 2. Request line -------------------------------------------------------------- */

struct http1_cursor {
    const char *buf;
    size_t len; /* bytes present, already capped at head_bytes_max */
    size_t pos;
};

static int http1_fail(struct http1_request *req, int status, const char *reason)
{
    req->error_status = status;
    req->error_reason = reason;
    return HTTP1_ERROR;
}

/* Expects CRLF at cur->pos. 0 when consumed; a lone CR is refused (H09). */
static int http1_expect_crlf(struct http1_cursor *cur, struct http1_request *req)
{
    assert(cur->pos < cur->len && cur->buf[cur->pos] == '\r');
    if (cur->pos + 1 >= cur->len)
        return HTTP1_INCOMPLETE;
    if (cur->buf[cur->pos + 1] != '\n')
        return http1_fail(req, 400, "bare CR");
    cur->pos += 2;
    return 0;
}

/* RFC 9112 §2.2: skip up to HTTP1_EMPTY_LINES_MAX CRLFs before the request line. */
static int http1_skip_empty_lines(struct http1_cursor *cur, struct http1_request *req)
{
    for (int lines = 0;; lines++) {
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        if (cur->buf[cur->pos] == '\n')
            return http1_fail(req, 400, "bare LF");
        if (cur->buf[cur->pos] != '\r')
            return 0;
        if (lines == HTTP1_EMPTY_LINES_MAX) {
            if (cur->pos + 1 >= cur->len)
                return HTTP1_INCOMPLETE;
            return http1_fail(req, 400, cur->buf[cur->pos + 1] == '\n' ?
                              "too many empty lines before the request line" : "bare CR");
        }
        int rc = http1_expect_crlf(cur, req);
        if (rc != 0)
            return rc;
    }
}

/* Scans the method up to its SP. Its syntax is judged once the line is complete
 * (the version is checked first), but its length now: a method of
 * HTTP1_METHOD_BYTES_MAX bytes is no method we implement (H21). */
static int http1_scan_method(struct http1_cursor *cur, struct http1_request *req)
{
    size_t start = cur->pos;
    for (;;) {
        if (cur->pos - start == HTTP1_METHOD_BYTES_MAX)
            return http1_fail(req, 501, "method too long");
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        char c = cur->buf[cur->pos];
        if (c == ' ')
            break;
        if (c == '\r' || c == '\n')
            return http1_fail(req, 400, "malformed request line");
        cur->pos++;
    }
    req->method_name = slice_make(cur->buf + start, cur->pos - start);
    cur->pos++; /* the SP */
    return 0;
}

/* Scans the request-target up to its SP; 414 as soon as target_bytes_max + 1
 * bytes are present (H13). *bad_byte notes a byte outside 0x21-0x7E, judged
 * when the line is complete. */
static int http1_scan_target(struct http1_cursor *cur, const struct http1_limits *limits,
                             struct http1_request *req, bool *bad_byte)
{
    size_t start = cur->pos;
    *bad_byte = false;
    for (;;) {
        cur->pos += http1_span_visible(cur->buf + cur->pos, cur->len - cur->pos, 0x21);
        if (cur->pos - start > limits->target_bytes_max)
            return http1_fail(req, 414, "request-target too long");
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        unsigned char c = (unsigned char)cur->buf[cur->pos];
        if (c == ' ')
            break;
        if (c == '\r' || c == '\n')
            return http1_fail(req, 400, "malformed request line");
        if (!http1_is_target_byte(c))
            *bad_byte = true;
        cur->pos++;
    }
    req->target = slice_make(cur->buf + start, cur->pos - start);
    cur->pos++; /* the SP */
    return 0;
}

/* Scans the version up to the CRLF ending the request line. */
static int http1_scan_version(struct http1_cursor *cur, struct http1_request *req,
                              struct slice *version)
{
    size_t start = cur->pos;
    for (;;) {
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        char c = cur->buf[cur->pos];
        if (c == '\r')
            break;
        if (c == '\n')
            return http1_fail(req, 400, "bare LF");
        if (cur->pos - start == HTTP1_VERSION_BYTES)
            return http1_fail(req, 400, "malformed HTTP version");
        cur->pos++;
    }
    *version = slice_make(cur->buf + start, cur->pos - start);
    return http1_expect_crlf(cur, req);
}

/* RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive. A
 * well-formed version other than 1.0 and 1.1 is 505 (H20). */
static int http1_check_version(struct slice version, struct http1_request *req)
{
    const unsigned char *v = (const unsigned char *)version.ptr;
    if (version.len != HTTP1_VERSION_BYTES || memcmp(v, "HTTP/", 5) != 0 ||
        !http1_is_digit(v[5]) || v[6] != '.' || !http1_is_digit(v[7]))
        return http1_fail(req, 400, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return http1_fail(req, 505, "HTTP version not supported");
    req->version_minor = v[7] - '0';
    return 0;
}

static const char *const http1_method_names[HTTP1_METHOD_COUNT] = {
    [HTTP1_METHOD_GET] = "GET",         [HTTP1_METHOD_HEAD] = "HEAD",
    [HTTP1_METHOD_POST] = "POST",       [HTTP1_METHOD_PUT] = "PUT",
    [HTTP1_METHOD_PATCH] = "PATCH",     [HTTP1_METHOD_DELETE] = "DELETE",
    [HTTP1_METHOD_OPTIONS] = "OPTIONS",
};

/* RFC 9112 §3.1: method = token, case-sensitive (H21: "get" is unknown → 501). */
static int http1_check_method(struct http1_request *req)
{
    struct slice m = req->method_name;
    if (m.len == 0)
        return http1_fail(req, 400, "empty method");
    for (size_t i = 0; i < m.len; i++) {
        if (!http1_is_tchar((unsigned char)m.ptr[i]))
            return http1_fail(req, 400, "method is not a token");
    }
    for (int i = 0; i < HTTP1_METHOD_COUNT; i++) {
        if (slice_eq_cstr(m, http1_method_names[i])) {
            req->method = (enum http1_method)i;
            return 0;
        }
    }
    return http1_fail(req, 501, "method not implemented");
}

/* Splits "path[?query]" into req->path and req->query. */
static void http1_split_query(struct slice rest, struct http1_request *req)
{
    const char *q = rest.len > 0 ? memchr(rest.ptr, '?', rest.len) : NULL;
    if (q == NULL) {
        req->path = rest;
        req->query = slice_make(rest.ptr + rest.len, 0);
        return;
    }
    req->path = slice_make(rest.ptr, (size_t)(q - rest.ptr));
    req->query = slice_make(q + 1, rest.len - req->path.len - 1);
}

/* RFC 9112 §3.2.2: absolute-form. Only the path is kept: the authority is never
 * used for routing, issuers or URLs (H22). Returns false when not http(s). */
static bool http1_absolute_form(struct slice t, struct http1_request *req)
{
    size_t skip;
    if (t.len >= 7 && strncasecmp(t.ptr, "http://", 7) == 0)
        skip = 7;
    else if (t.len >= 8 && strncasecmp(t.ptr, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    size_t end = skip;
    while (end < t.len && t.ptr[end] != '/' && t.ptr[end] != '?')
        end++;
    if (end == skip)
        return false; /* RFC 3986 §3.2.2: the http(s) schemes need a non-empty host */
    http1_split_query(slice_make(t.ptr + end, t.len - end), req);
    if (req->path.len == 0)
        req->path = SLICE_LIT("/"); /* RFC 9112 §3.2.2 (as for an empty path, §3.3) */
    return true;
}

/* RFC 9112 §3.2: origin-form and absolute-form are served; asterisk-form ("*",
 * only for OPTIONS to the server itself) and authority-form (CONNECT) are 400. */
static int http1_check_target(struct http1_request *req, bool bad_byte)
{
    struct slice t = req->target;
    if (bad_byte)
        return http1_fail(req, 400, "invalid byte in request-target");
    if (t.len > 0 && t.ptr[0] == '/') {
        http1_split_query(t, req);
        return 0;
    }
    if (http1_absolute_form(t, req))
        return 0;
    return http1_fail(req, 400, "unsupported request-target form");
}

static int http1_parse_request_line(struct http1_cursor *cur, const struct http1_limits *limits,
                                    struct http1_request *req)
{
    bool bad_target_byte;
    struct slice version;
    int rc = http1_scan_method(cur, req);
    if (rc == 0)
        rc = http1_scan_target(cur, limits, req, &bad_target_byte);
    if (rc == 0)
        rc = http1_scan_version(cur, req, &version);
    /* The line is complete: judge it, version first (RFC 9112 §2.3, H20). */
    if (rc == 0)
        rc = http1_check_version(version, req);
    if (rc == 0)
        rc = http1_check_method(req);
    if (rc == 0)
        rc = http1_check_target(req, bad_target_byte);
    return rc;
}

/* 3. Field lines ---------------------------------------------------------------- */

/* RFC 9112 §5.1: field-line = field-name ":" OWS field-value OWS, the name a
 * token with no whitespace before the colon (H08, H11). */
static int http1_parse_field(struct http1_cursor *cur, struct http1_request *req,
                             struct http1_header *header)
{
    size_t start = cur->pos;
    for (;;) {
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        unsigned char c = (unsigned char)cur->buf[cur->pos];
        if (c == ':')
            break;
        if (!http1_is_tchar(c))
            return http1_fail(req, 400, "invalid byte in field name");
        cur->pos++;
    }
    if (cur->pos == start)
        return http1_fail(req, 400, "empty field name");
    header->name = slice_make(cur->buf + start, cur->pos - start);
    size_t value_start = ++cur->pos;
    for (;;) {
        cur->pos += http1_span_visible(cur->buf + cur->pos, cur->len - cur->pos, 0x20);
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        unsigned char c = (unsigned char)cur->buf[cur->pos];
        if (c == '\r')
            break;
        if (c == '\n')
            return http1_fail(req, 400, "bare LF");
        if (!http1_is_value_byte(c))
            return http1_fail(req, 400, "control byte in field value");
        cur->pos++;
    }
    header->value = http1_trim_ows(slice_make(cur->buf + value_start, cur->pos - value_start));
    return http1_expect_crlf(cur, req);
}

/* Field lines up to and including the empty line that ends the head. */
static int http1_parse_fields(struct http1_cursor *cur, const struct http1_limits *limits,
                              struct http1_request *req)
{
    for (;;) {
        if (cur->pos >= cur->len)
            return HTTP1_INCOMPLETE;
        char c = cur->buf[cur->pos];
        if (c == '\r')
            return http1_expect_crlf(cur, req);
        if (c == '\n')
            return http1_fail(req, 400, "bare LF");
        /* RFC 9112 §5.2 obs-fold, and §2.2 whitespace before the first field (H07, H09). */
        if (c == ' ' || c == '\t')
            return http1_fail(req, 400, "line folding or leading whitespace");
        if (req->header_count == limits->header_fields_max)
            return http1_fail(req, 431, "too many header fields");
        int rc = http1_parse_field(cur, req, &req->headers[req->header_count]);
        if (rc != 0)
            return rc;
        req->header_count++;
    }
}

/* 4. Framing and semantics ---------------------------------------------------- */

/* RFC 3986 §3.2.2: IP-literal = "[" ( IPv6address / IPvFuture ) "]". Checked by
 * alphabet, not by full grammar: the value is never used to build anything. */
static bool http1_ip_literal_valid(struct slice inner)
{
    if (inner.len == 0)
        return false;
    bool colon = false;
    for (size_t i = 0; i < inner.len; i++) {
        unsigned char c = (unsigned char)inner.ptr[i];
        if (c == ':')
            colon = true;
        else if (!http1_is_host_byte(c))
            return false;
    }
    return colon || inner.ptr[0] == 'v' || inner.ptr[0] == 'V';
}

/* RFC 9112 §3.2: Host = uri-host [ ":" port ] (RFC 3986 §3.2.2, §3.2.3). An
 * empty value is allowed by that grammar. */
static bool http1_host_valid(struct slice v)
{
    size_t i = 0;
    if (v.len > 0 && v.ptr[0] == '[') {
        const char *close = memchr(v.ptr, ']', v.len);
        if (close == NULL)
            return false;
        if (!http1_ip_literal_valid(slice_make(v.ptr + 1, (size_t)(close - v.ptr) - 1)))
            return false;
        i = (size_t)(close - v.ptr) + 1;
    } else {
        for (; i < v.len && v.ptr[i] != ':'; i++) {
            unsigned char c = (unsigned char)v.ptr[i];
            if (c == '%') {
                if (i + 2 >= v.len || !http1_is_hex((unsigned char)v.ptr[i + 1]) ||
                    !http1_is_hex((unsigned char)v.ptr[i + 2]))
                    return false;
                i += 2;
            } else if (!http1_is_host_byte(c)) {
                return false;
            }
        }
    }
    if (i == v.len)
        return true;
    if (v.ptr[i] != ':' || v.len - i - 1 > HTTP1_PORT_DIGITS_MAX)
        return false;
    for (i++; i < v.len; i++) {
        if (!http1_is_digit((unsigned char)v.ptr[i]))
            return false;
    }
    return true;
}

/* RFC 9110 §8.6: Content-Length = 1*DIGIT; no sign, list or space (H02-H04). */
static bool http1_content_length_parse(struct slice v, uint64_t *out)
{
    if (v.len == 0 || v.len > HTTP1_CONTENT_LENGTH_DIGITS_MAX)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        if (!http1_is_digit(c))
            return false;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return true;
}

/* What the comma lists of Transfer-Encoding and Connection hold. */
struct http1_list_state {
    size_t elements;
    size_t chunked;
    bool chunked_last;
    bool has_close;
    bool has_keep_alive;
};

/* Calls fn on each non-empty element of a comma list (RFC 9110 §5.6.1), OWS
 * trimmed. Empty elements are ignored as §5.6.1 asks. */
static void http1_list_each(struct slice v, struct http1_list_state *st,
                            void (*fn)(struct slice element, struct http1_list_state *st))
{
    size_t start = 0;
    for (size_t i = 0; i <= v.len; i++) {
        if (i < v.len && v.ptr[i] != ',')
            continue;
        struct slice e = http1_trim_ows(slice_make(v.ptr + start, i - start));
        if (e.len > 0) {
            st->elements++;
            fn(e, st);
        }
        start = i + 1;
    }
}

static void http1_te_element(struct slice e, struct http1_list_state *st)
{
    bool chunked = slice_case_eq_cstr(e, "chunked");
    st->chunked += chunked;
    st->chunked_last = chunked;
}

static void http1_connection_element(struct slice e, struct http1_list_state *st)
{
    if (slice_case_eq_cstr(e, "close"))
        st->has_close = true;
    else if (slice_case_eq_cstr(e, "keep-alive"))
        st->has_keep_alive = true;
}

/* The fields that decide framing and connection handling, found in one pass. */
struct http1_framing {
    size_t host_count;
    size_t content_length_count;
    size_t transfer_encoding_count;
    struct slice content_length;
    struct http1_list_state te;
    struct http1_list_state connection;
    bool expect_other;
    bool expect_continue;
};

/* Sorts one field into f; names are told apart by length first. */
static void http1_collect_field(const struct http1_header *h, struct http1_request *req,
                                struct http1_framing *f)
{
    struct slice n = h->name;
    struct slice v = h->value;
    switch (n.len) {
    case 4:
        if (slice_case_eq_cstr(n, "host") && f->host_count++ == 0)
            req->host = v;
        break;
    case 6:
        /* RFC 9110 §10.1.1: 100-continue is the only expectation defined. */
        if (!slice_case_eq_cstr(n, "expect"))
            break;
        if (slice_case_eq_cstr(v, "100-continue"))
            f->expect_continue = true;
        else
            f->expect_other = true;
        break;
    case 10:
        if (slice_case_eq_cstr(n, "connection"))
            http1_list_each(v, &f->connection, http1_connection_element);
        break;
    case 14:
        if (slice_case_eq_cstr(n, "content-length")) {
            f->content_length_count++;
            f->content_length = v;
        }
        break;
    case 17:
        if (slice_case_eq_cstr(n, "transfer-encoding")) {
            f->transfer_encoding_count++;
            http1_list_each(v, &f->te, http1_te_element);
        }
        break;
    default:
        break;
    }
}

static void http1_collect(struct http1_request *req, struct http1_framing *f)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < req->header_count; i++)
        http1_collect_field(&req->headers[i], req, f);
}

/* RFC 9112 §6.1, §6.3: Transfer-Encoding decides the framing (H01, H05, H06). */
static int http1_check_transfer_encoding(const struct http1_framing *f, struct http1_request *req)
{
    if (req->version_minor == 0)
        return http1_fail(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (f->content_length_count > 0)
        return http1_fail(req, 400, "both Content-Length and Transfer-Encoding");
    if (f->te.elements == 0)
        return http1_fail(req, 400, "empty Transfer-Encoding");
    if (f->te.chunked > 1)
        return http1_fail(req, 400, "chunked applied twice");
    if (f->te.chunked == 1 && !f->te.chunked_last)
        return http1_fail(req, 400, "chunked is not the final coding");
    if (f->te.elements > 1 || f->te.chunked == 0)
        return http1_fail(req, 501, "transfer coding not implemented");
    req->body_kind = HTTP1_BODY_CHUNKED;
    return 0;
}

static int http1_check_framing(const struct http1_framing *f, const struct http1_limits *limits,
                               struct http1_request *req)
{
    if (f->content_length_count > 1)
        return http1_fail(req, 400, "more than one Content-Length");
    if (f->content_length_count == 1 &&
        !http1_content_length_parse(f->content_length, &req->content_length))
        return http1_fail(req, 400, "invalid Content-Length");
    if (f->transfer_encoding_count > 0)
        return http1_check_transfer_encoding(f, req);
    if (f->content_length_count == 1) {
        req->body_kind = HTTP1_BODY_LENGTH;
        /* Refused before a body byte is read, Expect or not (H15, H27). */
        if (req->content_length > limits->body_bytes_max)
            return http1_fail(req, 413, "body too large");
    }
    return 0;
}

static int http1_check_semantics(const struct http1_limits *limits, struct http1_request *req)
{
    struct http1_framing f;
    http1_collect(req, &f);
    /* RFC 9112 §3.2: missing (1.1), repeated or invalid Host is 400 (H12). */
    if (f.host_count > 1)
        return http1_fail(req, 400, "more than one Host");
    if (f.host_count == 0 && req->version_minor == 1)
        return http1_fail(req, 400, "missing Host");
    if (f.host_count == 1 && !http1_host_valid(req->host))
        return http1_fail(req, 400, "invalid Host");
    int rc = http1_check_framing(&f, limits, req);
    if (rc != 0)
        return rc;
    if (f.expect_other)
        return http1_fail(req, 417, "unsupported expectation");
    /* RFC 9110 §10.1.1: a 100-continue in an HTTP/1.0 request is ignored. */
    req->expect_continue = f.expect_continue && req->version_minor == 1;
    /* RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive". */
    if (req->version_minor == 1)
        req->keep_alive = !f.connection.has_close;
    else
        req->keep_alive = f.connection.has_keep_alive && !f.connection.has_close;
    return 0;
}

/* 5. http1_parse_head ------------------------------------------------------------ */

void http1_limits_default(struct http1_limits *limits)
{
    limits->head_bytes_max = HTTP1_HEAD_BYTES_MAX;
    limits->target_bytes_max = HTTP1_TARGET_BYTES_MAX;
    limits->header_fields_max = HTTP1_HEADER_FIELDS_MAX;
    limits->body_bytes_max = HTTP1_BODY_BYTES_MAX;
}

static void http1_request_reset(struct http1_request *req)
{
    req->method = HTTP1_METHOD_COUNT;
    req->method_name = slice_make(NULL, 0);
    req->target = slice_make(NULL, 0);
    req->path = slice_make(NULL, 0);
    req->query = slice_make(NULL, 0);
    req->version_minor = -1;
    req->header_count = 0;
    req->host = slice_make(NULL, 0);
    req->body_kind = HTTP1_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->error_status = 0;
    req->error_reason = NULL;
}

int http1_parse_head(const char *buf, size_t len, const struct http1_limits *limits,
                     struct http1_request *req)
{
    assert(buf != NULL || len == 0);
    assert(limits != NULL);
    assert(req != NULL);
    assert(limits->header_fields_max <= HTTP1_HEADER_FIELDS_MAX);
    assert(limits->head_bytes_max <= INT_MAX);
    http1_request_reset(req);
    /* Only the first head_bytes_max bytes are ever looked at: a head that is not
     * complete within them is 431 whatever follows (H14), decided as soon as one
     * byte more is present. */
    struct http1_cursor cur = {
        .buf = buf,
        .len = len < limits->head_bytes_max ? len : limits->head_bytes_max,
        .pos = 0,
    };
    int rc = http1_skip_empty_lines(&cur, req);
    if (rc == 0)
        rc = http1_parse_request_line(&cur, limits, req);
    if (rc == 0)
        rc = http1_parse_fields(&cur, limits, req);
    if (rc == 0)
        rc = http1_check_semantics(limits, req);
    if (rc == HTTP1_INCOMPLETE && len > limits->head_bytes_max)
        return http1_fail(req, 431, "request head too large");
    if (rc != 0)
        return rc;
    assert(cur.pos <= limits->head_bytes_max);
    return (int)cur.pos;
}

const struct http1_header *http1_find_header(const struct http1_request *req, const char *name)
{
    assert(req->header_count <= HTTP1_HEADER_FIELDS_MAX);
    for (size_t i = 0; i < req->header_count; i++) {
        if (slice_case_eq_cstr(req->headers[i].name, name))
            return &req->headers[i];
    }
    return NULL;
}

/* 6. Chunked decoder ----------------------------------------------------------- */

enum http1_chunked_state {
    HTTP1_CH_SIZE,          /* chunk-size hex digits */
    HTTP1_CH_EXT,           /* after ';' up to CR */
    HTTP1_CH_SIZE_LF,       /* LF ending the chunk-size line */
    HTTP1_CH_DATA,          /* chunk_left data bytes */
    HTTP1_CH_DATA_CR,       /* CRLF after the data */
    HTTP1_CH_DATA_LF,
    HTTP1_CH_TRAILER_START, /* a trailer field line or the final CRLF */
    HTTP1_CH_TRAILER_NAME,
    HTTP1_CH_TRAILER_VALUE,
    HTTP1_CH_TRAILER_LF,
    HTTP1_CH_END_LF,        /* LF of the final CRLF */
    HTTP1_CH_DONE,
    HTTP1_CH_BAD,           /* sticky: framing is lost, the connection closes */
    HTTP1_CH_TOO_LARGE,     /* sticky */
};

void http1_chunked_init(struct http1_chunked *chunked, uint64_t body_bytes_max)
{
    memset(chunked, 0, sizeof(*chunked));
    chunked->state = HTTP1_CH_SIZE;
    chunked->body_bytes_max = body_bytes_max;
}

static int http1_chunked_bad(struct http1_chunked *chunked)
{
    chunked->state = HTTP1_CH_BAD;
    return HTTP1_CHUNKED_BAD;
}

/* chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1); no whitespace before
 * or after the digits (H17). */
static int http1_chunked_size_byte(struct http1_chunked *chunked, unsigned char c)
{
    if (http1_is_hex(c)) {
        if (chunked->size_digits == HTTP1_CHUNK_SIZE_DIGITS_MAX)
            return http1_chunked_bad(chunked);
        chunked->size_digits++;
        chunked->chunk_left = chunked->chunk_left * 16 + http1_hex_value(c);
        return HTTP1_CHUNKED_MORE;
    }
    if (chunked->size_digits == 0 || (c != ';' && c != '\r'))
        return http1_chunked_bad(chunked);
    chunked->state = c == ';' ? HTTP1_CH_EXT : HTTP1_CH_SIZE_LF;
    chunked->ext_bytes = c == ';';
    return HTTP1_CHUNKED_MORE;
}

/* RFC 9112 §7.1.1: extensions are ignored but bounded (H18). */
static int http1_chunked_ext_byte(struct http1_chunked *chunked, unsigned char c)
{
    if (c == '\r') {
        chunked->state = HTTP1_CH_SIZE_LF;
        return HTTP1_CHUNKED_MORE;
    }
    if (!http1_is_value_byte(c) || ++chunked->ext_bytes > HTTP1_CHUNK_EXT_BYTES_MAX)
        return http1_chunked_bad(chunked);
    return HTTP1_CHUNKED_MORE;
}

static int http1_chunked_size_lf(struct http1_chunked *chunked, unsigned char c)
{
    if (c != '\n')
        return http1_chunked_bad(chunked);
    chunked->size_digits = 0;
    chunked->ext_bytes = 0;
    if (chunked->chunk_left == 0) {
        chunked->state = HTTP1_CH_TRAILER_START;
        return HTTP1_CHUNKED_MORE;
    }
    /* A chunk that would carry the body past the limit is refused before its
     * data is read (H16). */
    if (chunked->chunk_left > chunked->body_bytes_max - chunked->body_bytes) {
        chunked->state = HTTP1_CH_TOO_LARGE;
        return HTTP1_CHUNKED_TOO_LARGE;
    }
    chunked->state = HTTP1_CH_DATA;
    return HTTP1_CHUNKED_MORE;
}

/* trailer-section = *( field-line CRLF ) (RFC 9112 §7.1.2), validated like the
 * header section, bounded as a whole, then discarded: never merged (H19). */
static int http1_chunked_trailer_byte(struct http1_chunked *chunked, unsigned char c)
{
    if (++chunked->trailer_bytes > HTTP1_TRAILER_BYTES_MAX)
        return http1_chunked_bad(chunked);
    switch (chunked->state) {
    case HTTP1_CH_TRAILER_START:
        if (c == '\r') {
            chunked->state = HTTP1_CH_END_LF;
            return HTTP1_CHUNKED_MORE;
        }
        if (!http1_is_tchar(c))
            return http1_chunked_bad(chunked);
        chunked->state = HTTP1_CH_TRAILER_NAME;
        return HTTP1_CHUNKED_MORE;
    case HTTP1_CH_TRAILER_NAME:
        if (c == ':')
            chunked->state = HTTP1_CH_TRAILER_VALUE;
        else if (!http1_is_tchar(c))
            return http1_chunked_bad(chunked);
        return HTTP1_CHUNKED_MORE;
    case HTTP1_CH_TRAILER_VALUE:
        if (c == '\r')
            chunked->state = HTTP1_CH_TRAILER_LF;
        else if (!http1_is_value_byte(c))
            return http1_chunked_bad(chunked);
        return HTTP1_CHUNKED_MORE;
    case HTTP1_CH_TRAILER_LF:
        if (c != '\n')
            return http1_chunked_bad(chunked);
        chunked->state = HTTP1_CH_TRAILER_START;
        return HTTP1_CHUNKED_MORE;
    default:
        assert(chunked->state == HTTP1_CH_END_LF);
        if (c != '\n')
            return http1_chunked_bad(chunked);
        chunked->state = HTTP1_CH_DONE;
        return HTTP1_CHUNKED_DONE;
    }
}

/* One framing byte (everything but chunk data). */
static int http1_chunked_byte(struct http1_chunked *chunked, unsigned char c)
{
    switch (chunked->state) {
    case HTTP1_CH_SIZE:
        return http1_chunked_size_byte(chunked, c);
    case HTTP1_CH_EXT:
        return http1_chunked_ext_byte(chunked, c);
    case HTTP1_CH_SIZE_LF:
        return http1_chunked_size_lf(chunked, c);
    case HTTP1_CH_DATA_CR:
        if (c != '\r')
            return http1_chunked_bad(chunked); /* data longer than its size (H18) */
        chunked->state = HTTP1_CH_DATA_LF;
        return HTTP1_CHUNKED_MORE;
    case HTTP1_CH_DATA_LF:
        if (c != '\n')
            return http1_chunked_bad(chunked);
        chunked->state = HTTP1_CH_SIZE;
        return HTTP1_CHUNKED_MORE;
    default:
        assert(chunked->state >= HTTP1_CH_TRAILER_START && chunked->state <= HTTP1_CH_END_LF);
        return http1_chunked_trailer_byte(chunked, c);
    }
}

enum http1_chunked_result http1_chunked_decode(struct http1_chunked *chunked, const char *src,
                                               size_t len, char *dst, size_t *consumed,
                                               size_t *produced)
{
    assert(src != NULL || len == 0);
    size_t in = 0;
    size_t out = 0;
    int rc = HTTP1_CHUNKED_MORE;
    if (chunked->state == HTTP1_CH_DONE)
        rc = HTTP1_CHUNKED_DONE;
    else if (chunked->state == HTTP1_CH_BAD)
        rc = HTTP1_CHUNKED_BAD;
    else if (chunked->state == HTTP1_CH_TOO_LARGE)
        rc = HTTP1_CHUNKED_TOO_LARGE;
    while (rc == HTTP1_CHUNKED_MORE && in < len) {
        if (chunked->state == HTTP1_CH_DATA) {
            size_t n = len - in;
            if (n > chunked->chunk_left)
                n = (size_t)chunked->chunk_left;
            assert(out <= in); /* in place: the output never overtakes the input */
            memmove(dst + out, src + in, n);
            in += n;
            out += n;
            chunked->chunk_left -= n;
            chunked->body_bytes += n;
            if (chunked->chunk_left == 0)
                chunked->state = HTTP1_CH_DATA_CR;
            continue;
        }
        rc = http1_chunked_byte(chunked, (unsigned char)src[in]);
        in++;
    }
    assert(chunked->body_bytes <= chunked->body_bytes_max);
    *consumed = in;
    *produced = out;
    return (enum http1_chunked_result)rc;
}
