/* core/cidr.c: see cidr.h. */
#include "core/cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t cidr_v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

int cidr_addr_parse(const char *text, size_t len, struct cidr_addr *out)
{
    char copy[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(copy))
        return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, copy, out->bytes) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, copy, out->bytes) != 1)
        return -1;
    out->family = AF_INET6;
    if (memcmp(out->bytes, cidr_v4_mapped, sizeof(cidr_v4_mapped)) == 0) {
        memmove(out->bytes, out->bytes + sizeof(cidr_v4_mapped), 4);
        memset(out->bytes + 4, 0, CIDR_ADDR_BYTES - 4);
        out->family = AF_INET;
    }
    return 0;
}

static unsigned cidr_family_bits(uint8_t family)
{
    return family == AF_INET ? 32 : 128;
}

/* Whether a and b agree on their first `bits` bits. */
static bool cidr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int cidr_parse(const char *text, size_t len, struct cidr *out)
{
    const char *slash = memchr(text, '/', len);
    size_t addr_len = slash ? (size_t)(slash - text) : len;
    if (cidr_addr_parse(text, addr_len, &out->addr) != 0)
        return -1;
    unsigned max = cidr_family_bits(out->addr.family);
    unsigned bits = max;
    if (slash != NULL) {
        size_t digits = len - addr_len - 1;
        if (digits == 0 || digits > 3)
            return -1;
        bits = 0;
        for (size_t i = 0; i < digits; i++) {
            char c = slash[1 + i];
            if (c < '0' || c > '9')
                return -1;
            bits = bits * 10 + (unsigned)(c - '0');
        }
        if (bits > max)
            return -1;
    }
    out->bits = (uint8_t)bits;
    /* Bits past the prefix must be zero: "10.0.0.1/8" is more likely a mistake than a range. */
    for (unsigned b = bits; b < max; b++) {
        if (out->addr.bytes[b / 8] & (0x80 >> (b % 8)))
            return -1;
    }
    return 0;
}

bool cidr_match(const struct cidr *ranges, size_t count, const struct cidr_addr *addr)
{
    for (size_t i = 0; i < count; i++) {
        if (ranges[i].addr.family == addr->family &&
            cidr_prefix_equal(ranges[i].addr.bytes, addr->bytes, ranges[i].bits))
            return true;
    }
    return false;
}
