/* crypto/jscan.h: a strict, allocation-free JSON reader for JOSE headers and JWT claim
 * sets, used on the verification path instead of jansson (which spent about a fifth of
 * an RS256 jwt_verify building and freeing a DOM, perf/crypto).
 *
 * jscan_object validates a whole document as RFC 8259 JSON whose top level is an
 * object, with the same strictness the JOSE layer had with jansson and
 * JSON_REJECT_DUPLICATES: duplicate member names (compared after unescaping, at every
 * level) are refused (RFC 7515 §4, RFC 7519 §4); invalid UTF-8 (overlongs, surrogates,
 * > U+10FFFF), lone \u surrogates, \u0000, control characters, a BOM, comments, NaN,
 * trailing bytes, integers outside int64 and non-finite reals are refused. The first
 * JSCAN_MEMBERS_MAX top-level members are indexed (spans into the caller's text,
 * nothing copied); nested values are validated but not indexed. An object with more
 * members (a legal but unusual claim set) is still accepted: its duplicate check is
 * handed to jansson (JSON_REJECT_DUPLICATES) and lookups past the index walk the text.
 * Nesting deeper than JSCAN_DEPTH_MAX levels is refused (jansson allowed 2048). */
#ifndef TESSERA_CRYPTO_JSCAN_H
#define TESSERA_CRYPTO_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

/* Members indexed and checked for duplicates in place, per object: RFC 9068 access
 * tokens carry about 12 claims; 64 leaves room for custom claims while bounding the
 * quadratic duplicate check and the index (on the stack). */
#define JSCAN_MEMBERS_MAX 64
/* Nesting depth (top-level object = 1): claims such as "cnf" or "act" nest two or
 * three levels; the bound keeps the recursion's stack use small and fixed. */
#define JSCAN_DEPTH_MAX 8
/* Longest number text accepted: strtod needs a NUL-terminated copy (RFC 8259 §6
 * sets no limit; no NumericDate or claim needs more than 40 characters). */
#define JSCAN_NUMBER_MAX 64

enum jscan_type {
    JSCAN_STRING,
    JSCAN_INTEGER, /* no fraction or exponent, within int64 (jansson's integer) */
    JSCAN_REAL,
    JSCAN_TRUE,
    JSCAN_FALSE,
    JSCAN_NULL,
    JSCAN_OBJECT,
    JSCAN_ARRAY,
};

struct jscan_value {
    enum jscan_type type;
    const char *ptr; /* strings: the raw text between the quotes; others: the value text */
    size_t len;
    bool escaped; /* strings: holds a backslash, so raw text is not the value */
};

struct jscan_member {
    struct jscan_value name; /* always JSCAN_STRING */
    struct jscan_value value;
};

struct jscan_object {
    struct jscan_member members[JSCAN_MEMBERS_MAX]; /* the first members, in order */
    size_t n;
    bool overflow;    /* more members than indexed: jscan_get walks the rest of the text */
    const char *text; /* the object's text, for that walk */
    size_t text_len;
};

/* Validates json[0..len) and indexes its top-level object. 0 or -TE_INVAL. */
int jscan_object(const char *json, size_t len, struct jscan_object *out);

/* The value of the member whose unescaped name equals name (ASCII), or NULL. For a
 * member past the index (obj->overflow) the pointer is to per-thread storage that the
 * next such lookup overwrites: use each result before the next jscan_get. */
const struct jscan_value *jscan_get(const struct jscan_object *obj, const char *name);

/* Unescapes a string value into dst (at most max bytes, then a NUL). 0 and *len,
 * -TE_INVAL if not a string or longer than max. */
int jscan_string_copy(const struct jscan_value *v, char *dst, size_t max, size_t *len);

/* True if v is a string whose unescaped bytes equal s exactly. */
bool jscan_string_eq(const struct jscan_value *v, struct slice s);

/* An integer as int64, or a real as double. 0 or -TE_INVAL (wrong type). */
int jscan_integer(const struct jscan_value *v, int64_t *out);
int jscan_real(const struct jscan_value *v, double *out);

/* Iterates an array value: *pos starts NULL; each call stores the next element in
 * *out and returns 1, or returns 0 at the end. The array was validated by
 * jscan_object, so elements need no further checks. */
int jscan_array_next(const struct jscan_value *array, const char **pos, struct jscan_value *out);

#endif
