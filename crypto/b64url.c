/* crypto/b64url.c: see b64url.h. Table-driven; no data-dependent branches on the
 * decoded bits beyond validity, which is public (the encoding of a token). */
#include "crypto/b64url.h"

#include <assert.h>
#include <stdbool.h>

#include "core/err.h"

static const char b64url_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decoding table: the 6-bit value of each alphabet byte, B64URL_BAD for every other
 * byte (padding, '+', '/', whitespace, NUL, non-ASCII). One lookup per character and
 * one test per group of four replaces a chain of range comparisons (perf/crypto). */
#define B64URL_BAD 0x80
static const uint8_t b64url_rev[256] = {
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x3e, 0x80, 0x80,
    0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
    0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x80, 0x80, 0x80, 0x80, 0x3f,
    0x80, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
};

/* 0..63 for an alphabet character, -1 for anything else. */
static int b64url_value(unsigned char c)
{
    return b64url_rev[c] == B64URL_BAD ? -1 : b64url_rev[c];
}

int b64url_encode(const uint8_t *in, size_t in_len, char *out, size_t out_cap)
{
    assert(in != NULL || in_len == 0);
    if (in_len > B64URL_INPUT_MAX) {
        return -TE_INVAL;
    }
    size_t need = B64URL_ENCODED_LEN(in_len);
    if (need > out_cap) {
        return -TE_NOMEM;
    }
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= in_len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    size_t rest = in_len - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        if (rest == 2) {
            out[o++] = b64url_alphabet[v >> 6 & 63];
        }
    }
    assert(o == need);
    return (int)o;
}

/* Decodes a final group of 2 or 3 characters; the bits past the last whole byte
 * must be zero (RFC 4648 §3.5: canonical encoding). */
static int b64url_decode_tail(const int v[3], size_t n, uint8_t *out)
{
    assert(n == 2 || n == 3);
    uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
    if (n == 3) {
        bits |= (uint32_t)v[2] << 6;
    }
    uint32_t unused_mask = n == 2 ? 0xffffu : 0xffu;
    if ((bits & unused_mask) != 0) {
        return -TE_INVAL;
    }
    out[0] = (uint8_t)(bits >> 16);
    if (n == 3) {
        out[1] = (uint8_t)(bits >> 8);
    }
    return (int)n - 1;
}

int b64url_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    assert(in != NULL || in_len == 0);
    if (in_len > B64URL_INPUT_MAX || in_len % 4 == 1) {
        return -TE_INVAL;
    }
    size_t need = B64URL_DECODED_MAX(in_len);
    size_t o = 0;
    size_t i = 0;
    int v[4];
    bool room = need <= out_cap;
    for (; i + 4 <= in_len; i += 4) {
        uint32_t a = b64url_rev[(unsigned char)in[i]];
        uint32_t b = b64url_rev[(unsigned char)in[i + 1]];
        uint32_t c = b64url_rev[(unsigned char)in[i + 2]];
        uint32_t d = b64url_rev[(unsigned char)in[i + 3]];
        if (((a | b | c | d) & B64URL_BAD) != 0) {
            return -TE_INVAL;
        }
        if (!room) {
            continue; /* keep validating so malformed input reports -TE_INVAL first */
        }
        uint32_t bits = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (uint8_t)(bits >> 16);
        out[o++] = (uint8_t)(bits >> 8);
        out[o++] = (uint8_t)bits;
    }
    size_t rest = in_len - i;
    uint8_t tail[2];
    if (rest > 0) {
        for (size_t k = 0; k < rest; k++) {
            v[k] = b64url_value((unsigned char)in[i + k]);
            if (v[k] < 0) {
                return -TE_INVAL;
            }
        }
        int n = b64url_decode_tail(v, rest, tail);
        if (n < 0) {
            return n;
        }
        if (room) {
            for (int k = 0; k < n; k++) {
                out[o++] = tail[k];
            }
        }
    }
    if (!room) {
        return -TE_NOMEM;
    }
    assert(o == need);
    return (int)o;
}
