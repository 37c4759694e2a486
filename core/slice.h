/* core/slice.h: a borrowed run of bytes. Parsers return slices into their input
 * and copy nothing (picohttpparser's shape); the slice never owns its bytes. */
#ifndef TESSERA_CORE_SLICE_H
#define TESSERA_CORE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct slice {
    const char *ptr;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){ .ptr = (s), .len = sizeof(s) - 1 })

static inline struct slice slice_make(const char *ptr, size_t len)
{
    return (struct slice){ .ptr = ptr, .len = len };
}

/* Byte-exact equality. Not constant-time: never use it on secrets. */
static inline bool slice_eq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline bool slice_eq_cstr(struct slice a, const char *s)
{
    return slice_eq(a, slice_make(s, strlen(s)));
}

/* ASCII case-insensitive equality (header names, tokens). Not constant-time. */
static inline bool slice_case_eq_cstr(struct slice a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && (n == 0 || strncasecmp(a.ptr, s, n) == 0);
}

#endif
