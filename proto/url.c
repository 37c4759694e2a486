/* proto/url.c: percent-decoding (RFC 3986 §2.1) of path segments, query
 * strings and application/x-www-form-urlencoded bodies (WHATWG URL §5.1). One
 * pass over the input, exactly once: the output is never decoded again, so
 * "%252e" stays "%2e" (H23). No allocation. */
#include "proto/url.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

#define URL_MALFORMED (-1)
#define URL_TOO_LONG (-2)

enum url_mode {
    URL_MODE_PATH, /* a path segment: no encoded '/', NUL or control byte */
    URL_MODE_FORM, /* a form component: '+' is SP, no NUL */
};

static int url_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Path segments never hold a control byte, raw or decoded: it has no meaning in
 * a route and would reach logs. A '/' would forge a segment boundary. */
static bool url_path_byte_ok(unsigned char c)
{
    return c >= 0x20 && c != 0x7F && c != '/';
}

/* Reads the byte at in[*i] (an escape or a literal), advancing *i. -1 when an
 * escape is malformed ("%zz", "%4", a trailing "%"). */
static int url_next_byte(struct slice in, size_t *i, enum url_mode mode)
{
    unsigned char c = (unsigned char)in.ptr[*i];
    if (c != '%') {
        (*i)++;
        return mode == URL_MODE_FORM && c == '+' ? ' ' : c;
    }
    if (in.len - *i < 3)
        return -1;
    int hi = url_hex_value((unsigned char)in.ptr[*i + 1]);
    int lo = url_hex_value((unsigned char)in.ptr[*i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    *i += 3;
    return hi * 16 + lo;
}

/* How many bytes from in[i] on stand for themselves: no escape, no '+' in a form, nothing the
 * mode refuses. Most of a form value is such a run (a JWT is all of one), and copying it whole
 * is what keeps decoding an introspection's token cheap. */
static size_t url_literal_run(struct slice in, size_t i, enum url_mode mode)
{
    size_t j = i;
    if (mode == URL_MODE_FORM) {
        while (j < in.len && in.ptr[j] != '%' && in.ptr[j] != '+' && in.ptr[j] != '\0')
            j++;
    } else {
        while (j < in.len && in.ptr[j] != '%' && url_path_byte_ok((unsigned char)in.ptr[j]))
            j++;
    }
    return j - i;
}

/* Decodes in into out[0..out_cap). Returns the length, URL_MALFORMED, or
 * URL_TOO_LONG when the result does not fit (whichever comes first in the input). */
static int url_decode(struct slice in, char *out, size_t out_cap, enum url_mode mode)
{
    if (in.len > INT_MAX)
        return URL_TOO_LONG;
    size_t i = 0;
    size_t n = 0;
    while (i < in.len) {
        size_t run = url_literal_run(in, i, mode);
        if (run > 0) {
            if (run > out_cap - n)
                return URL_TOO_LONG;
            memcpy(out + n, in.ptr + i, run);
            n += run;
            i += run;
            continue;
        }
        int c = url_next_byte(in, &i, mode);
        if (c < 0)
            return URL_MALFORMED;
        if (c == 0 || (mode == URL_MODE_PATH && !url_path_byte_ok((unsigned char)c)))
            return URL_MALFORMED;
        if (n == out_cap)
            return URL_TOO_LONG;
        out[n++] = (char)c;
    }
    return (int)n;
}

int url_decode_path_segment(struct slice in, char *out)
{
    assert(in.ptr != NULL || in.len == 0);
    int rc = url_decode(in, out, in.len, URL_MODE_PATH);
    return rc < 0 ? -1 : rc;
}

int url_decode_form_component(struct slice in, char *out)
{
    assert(in.ptr != NULL || in.len == 0);
    int rc = url_decode(in, out, in.len, URL_MODE_FORM);
    return rc < 0 ? -1 : rc;
}

bool url_form_next(struct slice in, size_t *pos, struct slice *key, struct slice *value)
{
    assert(*pos <= in.len);
    while (*pos < in.len) {
        size_t start = *pos;
        const char *amp = memchr(in.ptr + start, '&', in.len - start);
        size_t end = amp != NULL ? (size_t)(amp - in.ptr) : in.len;
        *pos = amp != NULL ? end + 1 : in.len;
        if (end == start)
            continue; /* "a=1&&b=2": empty pairs are skipped */
        struct slice pair = slice_make(in.ptr + start, end - start);
        const char *eq = memchr(pair.ptr, '=', pair.len);
        if (eq == NULL) {
            *key = pair;
            *value = slice_make(pair.ptr + pair.len, 0);
        } else {
            *key = slice_make(pair.ptr, (size_t)(eq - pair.ptr));
            *value = slice_make(eq + 1, pair.len - key->len - 1);
        }
        return true;
    }
    return false;
}

/* Compares a raw form key, decoding as it goes, with a plain key. 1 equal, 0
 * different, -1 malformed. */
static int url_form_key_eq(struct slice raw, const char *key)
{
    size_t i = 0;
    size_t k = 0;
    bool equal = true;
    while (i < raw.len) {
        int c = url_next_byte(raw, &i, URL_MODE_FORM);
        if (c <= 0)
            return -1; /* malformed escape or an encoded NUL */
        if (equal && (key[k] == '\0' || (unsigned char)key[k] != c))
            equal = false;
        if (equal)
            k++;
    }
    return equal && key[k] == '\0';
}

int url_form_get(struct slice in, const char *key, char *out, size_t out_cap)
{
    assert(key != NULL);
    size_t pos = 0;
    struct slice k;
    struct slice v;
    while (url_form_next(in, &pos, &k, &v)) {
        int eq = url_form_key_eq(k, key);
        if (eq < 0)
            return -2; /* an undecodable key might be the one asked for */
        if (eq == 0)
            continue;
        int rc = url_decode(v, out, out_cap, URL_MODE_FORM);
        return rc < 0 ? -2 : rc;
    }
    return -1;
}
