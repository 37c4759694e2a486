/* crypto/jscan.c: see jscan.h. One pass over the text, recursion bounded by
 * JSCAN_DEPTH_MAX, no allocation: member names are kept as spans for the duplicate
 * check, and strings are unescaped only when a caller asks for one. */
#include "crypto/jscan.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/err.h"

#define JSCAN_UTF8_MAX 4 /* bytes of one code point, RFC 3629 */

struct jscan_ctx {
    const char *p;
    const char *end;
    bool unchecked; /* an object had more than JSCAN_MEMBERS_MAX members */
};

static int jscan_value_at(struct jscan_ctx *c, int depth, struct jscan_value *v);

/* RFC 8259 §2: the four insignificant whitespace characters, nothing else. */
static void jscan_ws(struct jscan_ctx *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) {
        c->p++;
    }
}

static int jscan_hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (d < 0) {
            return -TE_INVAL;
        }
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* One escape at p (p[0] == '\\'), RFC 8259 §7: returns its length (2, 6 or 12 for a
 * surrogate pair) and the code point. \u0000 is refused (jansson's default) and so
 * are lone or reversed surrogates. */
static int jscan_escape(const char *p, const char *end, uint32_t *cp)
{
    static const char simple[] = "\"\\/bfnrt";
    static const char value[] = "\"\\/\b\f\n\r\t";
    if (end - p < 2) {
        return -TE_INVAL;
    }
    const char *s = p[1] != '\0' ? strchr(simple, p[1]) : NULL;
    if (s != NULL) {
        *cp = (unsigned char)value[s - simple];
        return 2;
    }
    uint32_t u;
    if (p[1] != 'u' || end - p < 6 || jscan_hex4(p + 2, &u) < 0 || u == 0 ||
        (u >= 0xDC00 && u <= 0xDFFF)) {
        return -TE_INVAL;
    }
    if (u < 0xD800 || u > 0xDBFF) {
        *cp = u;
        return 6;
    }
    uint32_t lo;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || jscan_hex4(p + 8, &lo) < 0 || lo < 0xDC00 ||
        lo > 0xDFFF) {
        return -TE_INVAL;
    }
    *cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    return 12;
}

/* One multi-byte UTF-8 sequence at p (p[0] >= 0x80), RFC 3629 §4: no overlongs,
 * no surrogates, nothing above U+10FFFF. Returns its length. */
static int jscan_utf8(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 0 || end - p < n) {
        return -TE_INVAL;
    }
    uint32_t cp = c & (0x7Fu >> n);
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return -TE_INVAL;
        }
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        return -TE_INVAL;
    }
    return n;
}

static int jscan_utf8_encode(uint32_t cp, uint8_t out[JSCAN_UTF8_MAX])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* 1 for a byte that stands for itself inside a string (printable ASCII other than
 * '"' and '\\'): the common case, skipped without further tests. */
static const uint8_t jscan_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* A string at c->p (the opening quote): control characters, bad escapes and bad
 * UTF-8 are refused (RFC 8259 §7, §8.1). */
static int jscan_string_at(struct jscan_ctx *c, struct jscan_value *v)
{
    const char *p = c->p + 1;
    uint32_t cp;
    *v = (struct jscan_value){ .type = JSCAN_STRING, .ptr = p };
    while (p < c->end) {
        if (jscan_plain[(unsigned char)*p]) {
            p++;
            continue;
        }
        unsigned char ch = (unsigned char)*p;
        int n = 1;
        if (ch == '"') {
            v->len = (size_t)(p - v->ptr);
            c->p = p + 1;
            return 0;
        }
        if (ch < 0x20) {
            return -TE_INVAL;
        }
        if (ch == '\\') {
            v->escaped = true;
            n = jscan_escape(p, c->end, &cp);
        } else if (ch >= 0x80) {
            n = jscan_utf8((const unsigned char *)p, (const unsigned char *)c->end);
        }
        if (n < 0) {
            return -TE_INVAL;
        }
        p += n;
    }
    return -TE_INVAL;
}

static bool jscan_digit(const struct jscan_ctx *c)
{
    return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

static void jscan_digits(struct jscan_ctx *c)
{
    while (jscan_digit(c)) {
        c->p++;
    }
}

/* RFC 8259 §6 grammar; the value must also convert (int64 or finite double). */
static int jscan_number_at(struct jscan_ctx *c, struct jscan_value *v)
{
    const char *start = c->p;
    bool real = false;
    if (c->p < c->end && *c->p == '-') {
        c->p++;
    }
    if (!jscan_digit(c)) {
        return -TE_INVAL; /* NaN, Infinity, "-", "+1", ".5" */
    }
    if (*c->p++ != '0') {
        jscan_digits(c); /* no leading zeros */
    }
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        real = true;
        if (!jscan_digit(c)) {
            return -TE_INVAL;
        }
        jscan_digits(c);
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        real = true;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) {
            c->p++;
        }
        if (!jscan_digit(c)) {
            return -TE_INVAL;
        }
        jscan_digits(c);
    }
    *v = (struct jscan_value){ .type = real ? JSCAN_REAL : JSCAN_INTEGER,
                               .ptr = start,
                               .len = (size_t)(c->p - start) };
    int64_t i;
    double d;
    return real ? jscan_real(v, &d) : jscan_integer(v, &i);
}

static int jscan_literal_at(struct jscan_ctx *c, const char *word, enum jscan_type type,
                            struct jscan_value *v)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) {
        return -TE_INVAL;
    }
    *v = (struct jscan_value){ .type = type, .ptr = c->p, .len = n };
    c->p += n;
    return 0;
}

/* Decoded bytes of a validated string, one at a time (escapes re-encoded as UTF-8). */
struct jscan_iter {
    const char *p;
    const char *end;
    uint8_t pend[JSCAN_UTF8_MAX];
    int npend;
    int ipend;
};

static int jscan_iter_next(struct jscan_iter *it)
{
    if (it->ipend < it->npend) {
        return it->pend[it->ipend++];
    }
    if (it->p >= it->end) {
        return -1;
    }
    if (*it->p != '\\') {
        return (unsigned char)*it->p++;
    }
    uint32_t cp;
    int n = jscan_escape(it->p, it->end, &cp);
    assert(n > 0); /* validated by jscan_string_at */
    it->p += n;
    it->npend = jscan_utf8_encode(cp, it->pend);
    it->ipend = 1;
    return it->pend[0];
}

static struct jscan_iter jscan_iter_make(const struct jscan_value *v)
{
    return (struct jscan_iter){ .p = v->ptr, .end = v->ptr + v->len };
}

/* Equality of two validated strings after unescaping (duplicate names, RFC 7515 §4). */
static bool jscan_names_eq(const struct jscan_value *a, const struct jscan_value *b)
{
    if (!a->escaped && !b->escaped) {
        return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
    }
    struct jscan_iter ia = jscan_iter_make(a);
    struct jscan_iter ib = jscan_iter_make(b);
    int x;
    int y;
    do {
        x = jscan_iter_next(&ia);
        y = jscan_iter_next(&ib);
    } while (x == y && x >= 0);
    return x == y;
}

/* One "name":value member of an object. Its name must differ from names[0..n) when
 * n < JSCAN_MEMBERS_MAX; past that the quadratic check stops and the whole document
 * is checked for duplicates once more by jscan_object (c->unchecked). */
static int jscan_member_at(struct jscan_ctx *c, int depth, struct jscan_value *names, size_t n,
                           struct jscan_value *value)
{
    struct jscan_value name;
    jscan_ws(c);
    if (c->p >= c->end || *c->p != '"' || jscan_string_at(c, &name) < 0) {
        return -TE_INVAL;
    }
    if (n < JSCAN_MEMBERS_MAX) {
        for (size_t i = 0; i < n; i++) {
            if (jscan_names_eq(&names[i], &name)) {
                return -TE_INVAL;
            }
        }
        names[n] = name;
    } else {
        c->unchecked = true;
    }
    jscan_ws(c);
    if (c->p >= c->end || *c->p != ':') {
        return -TE_INVAL;
    }
    c->p++;
    jscan_ws(c);
    return jscan_value_at(c, depth, value);
}

/* An object at c->p ('{'); index, when not NULL, receives its members (the first
 * JSCAN_MEMBERS_MAX; index->overflow says there were more). */
static int jscan_object_at(struct jscan_ctx *c, int depth, struct jscan_object *index)
{
    struct jscan_value names[JSCAN_MEMBERS_MAX];
    struct jscan_value value;
    size_t n = 0;
    if (depth > JSCAN_DEPTH_MAX) {
        return -TE_INVAL;
    }
    c->p++;
    jscan_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
    }
    for (;;) {
        if (jscan_member_at(c, depth, names, n, &value) < 0) {
            return -TE_INVAL;
        }
        if (index != NULL && n < JSCAN_MEMBERS_MAX) {
            index->members[n] = (struct jscan_member){ .name = names[n], .value = value };
            index->n = n + 1;
        } else if (index != NULL) {
            index->overflow = true;
        }
        n++;
        jscan_ws(c);
        if (c->p >= c->end || (*c->p != ',' && *c->p != '}')) {
            return -TE_INVAL;
        }
        if (*c->p++ == '}') {
            return 0;
        }
    }
}

static int jscan_array_at(struct jscan_ctx *c, int depth)
{
    struct jscan_value v;
    if (depth > JSCAN_DEPTH_MAX) {
        return -TE_INVAL;
    }
    c->p++;
    jscan_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 0;
    }
    for (;;) {
        jscan_ws(c);
        if (jscan_value_at(c, depth, &v) < 0) {
            return -TE_INVAL;
        }
        jscan_ws(c);
        if (c->p >= c->end || (*c->p != ',' && *c->p != ']')) {
            return -TE_INVAL;
        }
        if (*c->p++ == ']') {
            return 0;
        }
    }
}

/* Any value at c->p; depth is the nesting level of the container holding it. */
static int jscan_value_at(struct jscan_ctx *c, int depth, struct jscan_value *v)
{
    const char *start = c->p;
    int rc;
    if (c->p >= c->end) {
        return -TE_INVAL;
    }
    switch (*c->p) {
    case '"':
        return jscan_string_at(c, v);
    case 't':
        return jscan_literal_at(c, "true", JSCAN_TRUE, v);
    case 'f':
        return jscan_literal_at(c, "false", JSCAN_FALSE, v);
    case 'n':
        return jscan_literal_at(c, "null", JSCAN_NULL, v);
    case '{':
        rc = jscan_object_at(c, depth + 1, NULL);
        *v = (struct jscan_value){ .type = JSCAN_OBJECT };
        break;
    case '[':
        rc = jscan_array_at(c, depth + 1);
        *v = (struct jscan_value){ .type = JSCAN_ARRAY };
        break;
    default:
        return jscan_number_at(c, v);
    }
    v->ptr = start;
    v->len = (size_t)(c->p - start);
    return rc;
}

/* The rare document with an object of more than JSCAN_MEMBERS_MAX members: jansson,
 * with its hash table, finds duplicates among all of them (RFC 7515 §4). */
static int jscan_no_duplicates(const char *json, size_t len)
{
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = doc != NULL ? 0 : -TE_INVAL;
    json_decref(doc);
    return rc;
}

int jscan_object(const char *json, size_t len, struct jscan_object *out)
{
    assert((json != NULL || len == 0) && out != NULL);
    struct jscan_ctx c = { .p = json, .end = json + len };
    out->n = 0;
    out->overflow = false;
    out->text = json;
    jscan_ws(&c);
    if (c.p >= c.end || *c.p != '{' || jscan_object_at(&c, 1, out) < 0) {
        out->n = 0;
        return -TE_INVAL;
    }
    out->text_len = (size_t)(c.p - json);
    jscan_ws(&c);
    if (c.p != c.end || (c.unchecked && jscan_no_duplicates(json, len) < 0)) {
        out->n = 0;
        return -TE_INVAL; /* trailing bytes, a second document, duplicates */
    }
    return 0;
}

/* Walks the top-level members of a validated document, past the indexed ones. */
static const struct jscan_value *jscan_get_rest(const struct jscan_object *obj,
                                                struct slice want)
{
    struct jscan_ctx c = { .p = obj->text, .end = obj->text + obj->text_len };
    struct jscan_value name;
    struct jscan_value value;
    static __thread struct jscan_value found; /* overflow path only: returned by pointer */
    jscan_ws(&c);
    c.p++; /* '{' */
    for (size_t i = 0;; i++) {
        jscan_ws(&c);
        if (c.p >= c.end || *c.p == '}') {
            return NULL;
        }
        if (*c.p == ',') {
            c.p++;
            jscan_ws(&c);
        }
        int rc = jscan_string_at(&c, &name);
        jscan_ws(&c);
        c.p++; /* ':' */
        jscan_ws(&c);
        rc |= jscan_value_at(&c, 1, &value);
        assert(rc == 0); /* validated by jscan_object */
        if (i >= JSCAN_MEMBERS_MAX && jscan_string_eq(&name, want)) {
            found = value;
            return &found;
        }
    }
}

bool jscan_string_eq(const struct jscan_value *v, struct slice s)
{
    if (v == NULL || v->type != JSCAN_STRING) {
        return false;
    }
    if (!v->escaped) { /* first bytes first: most claim names differ there (iss/iat) */
        return v->len == s.len && (s.len == 0 || v->ptr[0] == s.ptr[0]) &&
               memcmp(v->ptr, s.ptr, s.len) == 0;
    }
    struct jscan_iter it = jscan_iter_make(v);
    size_t i = 0;
    int b;
    while ((b = jscan_iter_next(&it)) >= 0) {
        if (i == s.len || (unsigned char)s.ptr[i] != b) {
            return false;
        }
        i++;
    }
    return i == s.len;
}

const struct jscan_value *jscan_get(const struct jscan_object *obj, const char *name)
{
    assert(obj != NULL && name != NULL);
    struct slice want = slice_make(name, strlen(name));
    for (size_t i = 0; i < obj->n; i++) {
        if (jscan_string_eq(&obj->members[i].name, want)) {
            return &obj->members[i].value;
        }
    }
    return obj->overflow ? jscan_get_rest(obj, want) : NULL;
}

int jscan_string_copy(const struct jscan_value *v, char *dst, size_t max, size_t *len)
{
    assert(dst != NULL && len != NULL);
    if (v == NULL || v->type != JSCAN_STRING) {
        return -TE_INVAL;
    }
    size_t n = 0;
    if (!v->escaped) {
        if (v->len > max) {
            return -TE_INVAL;
        }
        memcpy(dst, v->ptr, v->len);
        n = v->len;
    } else {
        struct jscan_iter it = jscan_iter_make(v);
        int b;
        while ((b = jscan_iter_next(&it)) >= 0) {
            if (n == max) {
                return -TE_INVAL;
            }
            dst[n++] = (char)b;
        }
    }
    dst[n] = '\0';
    *len = n;
    return 0;
}

int jscan_integer(const struct jscan_value *v, int64_t *out)
{
    if (v == NULL || v->type != JSCAN_INTEGER || v->len == 0) {
        return -TE_INVAL;
    }
    const char *p = v->ptr;
    const char *end = p + v->len;
    bool neg = *p == '-';
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t acc = 0;
    for (p += neg; p < end; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (acc > (limit - d) / 10) {
            return -TE_INVAL; /* outside int64: jansson refused these too */
        }
        acc = acc * 10 + d;
    }
    *out = !neg ? (int64_t)acc : acc == 0 ? 0 : -(int64_t)(acc - 1) - 1;
    return 0;
}

int jscan_real(const struct jscan_value *v, double *out)
{
    char text[JSCAN_NUMBER_MAX + 1];
    if (v == NULL || v->type != JSCAN_REAL || v->len > JSCAN_NUMBER_MAX) {
        return -TE_INVAL;
    }
    memcpy(text, v->ptr, v->len);
    text[v->len] = '\0';
    double d = strtod(text, NULL);
    if (!isfinite(d)) {
        return -TE_INVAL; /* 1e999: overflow is refused, not clamped to infinity */
    }
    *out = d;
    return 0;
}

int jscan_array_next(const struct jscan_value *array, const char **pos, struct jscan_value *out)
{
    assert(array != NULL && array->type == JSCAN_ARRAY && pos != NULL && out != NULL);
    struct jscan_ctx c = { .p = *pos != NULL ? *pos : array->ptr + 1,
                           .end = array->ptr + array->len };
    jscan_ws(&c);
    if (c.p < c.end && *c.p == ',') {
        c.p++;
        jscan_ws(&c);
    }
    if (c.p >= c.end || *c.p == ']') {
        return 0;
    }
    int rc = jscan_value_at(&c, 1, out);
    assert(rc == 0); /* validated as part of the whole document */
    (void)rc;
    *pos = c.p;
    return 1;
}
