/* crypto/b64url.c: see b64url.h. Table-driven; no data-dependent branches on the
 * decoded bits beyond validity, which is public (the encoding of a token). */
#include "crypto/b64url.h"

#include <assert.h>
#include <stdbool.h>

#include "core/err.h"

static const char b64url_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63 for an alphabet character, -1 for anything else. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
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
        for (int k = 0; k < 4; k++) {
            v[k] = b64url_value((unsigned char)in[i + k]);
            if (v[k] < 0) {
                return -TE_INVAL;
            }
        }
        if (!room) {
            continue; /* keep validating so malformed input reports -TE_INVAL first */
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
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
