/* core/buf.c: bounded appenders over caller memory. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void buf_append(struct buf *buf, const void *bytes, size_t len)
{
    if (buf->overflow || len > buf->cap - buf->len) {
        buf->overflow = true;
        return;
    }
    if (len > 0)
        memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
}

void buf_append_cstr(struct buf *buf, const char *s)
{
    buf_append(buf, s, strlen(s));
}

void buf_append_u64(struct buf *buf, uint64_t value)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    buf_append(buf, digits + sizeof(digits) - n, n);
}

void buf_append_i64(struct buf *buf, int64_t value)
{
    if (value < 0) {
        buf_append(buf, "-", 1);
        buf_append_u64(buf, (uint64_t)0 - (uint64_t)value);
        return;
    }
    buf_append_u64(buf, (uint64_t)value);
}

static bool buf_json_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\' && c != 0x7f;
}

size_t buf_json_string_len(struct slice s)
{
    size_t len = 2; /* the quotes */
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        len += buf_json_plain(c) ? 1 : (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') ? 2 : 6;
    }
    return len;
}

void buf_append_json_string(struct buf *buf, struct slice s)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(buf, "\"", 1);
    size_t run = 0; /* bytes copied as a block: the common case is no escape at all */
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (buf_json_plain(c))
            continue;
        buf_append(buf, s.ptr + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            buf_append(buf, esc, 2);
        } else if (c == '\n') {
            buf_append(buf, "\\n", 2);
        } else if (c == '\r') {
            buf_append(buf, "\\r", 2);
        } else if (c == '\t') {
            buf_append(buf, "\\t", 2);
        } else {
            char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            buf_append(buf, esc, 6);
        }
    }
    buf_append(buf, s.ptr + run, s.len - run);
    buf_append(buf, "\"", 1);
}

void buf_printf(struct buf *buf, const char *fmt, ...)
{
    if (buf->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    size_t room = buf->cap - buf->len;
    int n = vsnprintf(buf->data + buf->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        buf->overflow = true;
        return;
    }
    buf->len += (size_t)n;
}
