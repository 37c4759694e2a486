/* core/buf.h: a bounded byte buffer over caller memory, with the appenders that
 * responses, logs and metrics need (decimal numbers, JSON strings). Appending past
 * the capacity sets a sticky overflow flag instead of writing: the caller checks
 * once at the end (BearSSL's sticky-error shape). */
#ifndef TESSERA_CORE_BUF_H
#define TESSERA_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

struct buf {
    char *data;
    size_t len;
    size_t cap;
    bool overflow;
};

static inline void buf_init(struct buf *buf, char *mem, size_t cap)
{
    buf->data = mem;
    buf->len = 0;
    buf->cap = cap;
    buf->overflow = false;
}

static inline struct slice buf_slice(const struct buf *buf)
{
    return slice_make(buf->data, buf->len);
}

void buf_append(struct buf *buf, const void *bytes, size_t len);
void buf_append_cstr(struct buf *buf, const char *s);
void buf_append_u64(struct buf *buf, uint64_t value);
void buf_append_i64(struct buf *buf, int64_t value);
/* A JSON string literal with its quotes, escaped per RFC 8259 §7: quote, backslash
 * and every control byte; bytes >= 0x80 are copied as they are. */
void buf_append_json_string(struct buf *buf, struct slice s);
/* The bytes buf_append_json_string would append for s, quotes included. */
size_t buf_json_string_len(struct slice s);
void buf_printf(struct buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
