/* proto/http_auth.c: Basic and Bearer credentials (see http_auth.h). */
#include "proto/http_auth.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "proto/url.h"

static int http_auth_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict RFC 4648 §4 base64: length a multiple of 4, '=' only as the last one or two
 * characters, and the unused bits of the last group zero (§3.5: canonical encoding).
 * Returns the decoded length or -1. */
static int http_auth_b64_decode(struct slice in, uint8_t *out, size_t cap)
{
    if (in.len == 0 || in.len % 4 != 0)
        return -1;
    size_t pad = in.ptr[in.len - 1] == '=' ? (in.ptr[in.len - 2] == '=' ? 2 : 1) : 0;
    size_t n = in.len / 4 * 3 - pad;
    if (n > cap)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < in.len; i += 4) {
        uint32_t group = 0;
        for (size_t j = 0; j < 4; j++) {
            bool padding = i + j >= in.len - pad;
            int v = padding ? 0 : http_auth_b64_value((unsigned char)in.ptr[i + j]);
            if (v < 0 || (padding && in.ptr[i + j] != '='))
                return -1;
            group = group << 6 | (uint32_t)v;
        }
        uint8_t bytes[3] = { (uint8_t)(group >> 16), (uint8_t)(group >> 8), (uint8_t)group };
        size_t take = o + 3 <= n ? 3 : n - o;
        if (take < 3 && bytes[take] != 0)
            return -1; /* non-zero bits under the padding: not canonical */
        memcpy(out + o, bytes, take);
        o += take;
    }
    return (int)n;
}

/* The parameter after "<scheme> " when header uses scheme, else an empty slice. */
static struct slice http_auth_param(struct slice header, const char *scheme)
{
    size_t len = strlen(scheme);
    if (header.len <= len + 1 || strncasecmp(header.ptr, scheme, len) != 0 || header.ptr[len] != ' ')
        return slice_make(NULL, 0);
    return slice_make(header.ptr + len + 1, header.len - len - 1);
}

static int http_auth_form_part(struct slice raw, char *out, size_t cap)
{
    if (raw.len >= cap) /* decoding never lengthens: a raw part that fits, fits decoded */
        return -1;
    int n = url_decode_form_component(raw, out);
    if (n < 0 || memchr(out, '\0', (size_t)n) != NULL)
        return -1;
    out[n] = '\0';
    return n;
}

int http_auth_basic(struct slice header, char *id, size_t id_cap, char *secret, size_t secret_cap)
{
    struct slice b64 = http_auth_param(header, "Basic");
    uint8_t decoded[HTTP_AUTH_BASIC_MAX];
    int n = b64.len > 0 ? http_auth_b64_decode(b64, decoded, sizeof(decoded)) : -1;
    if (n < 0)
        return -1;
    const uint8_t *colon = memchr(decoded, ':', (size_t)n);
    if (colon == NULL)
        return -1;
    struct slice raw_id = slice_make((const char *)decoded, (size_t)(colon - decoded));
    struct slice raw_secret = slice_make((const char *)colon + 1, (size_t)n - raw_id.len - 1);
    int rc = 0;
    if (http_auth_form_part(raw_id, id, id_cap) < 0 || http_auth_form_part(raw_secret, secret, secret_cap) < 0)
        rc = -1;
    explicit_bzero(decoded, sizeof(decoded));
    return rc;
}

/* RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
 * A lookup per character: a chain of range tests over an 800-byte token, mispredicted on
 * every class change, cost 6% of an uncached /verify (perf record). */
static const bool http_auth_b64token[256] = {
    ['A' ... 'Z'] = true, ['a' ... 'z'] = true, ['0' ... '9'] = true,
    ['-'] = true, ['.'] = true, ['_'] = true, ['~'] = true, ['+'] = true, ['/'] = true,
};

struct slice http_auth_bearer(struct slice header)
{
    struct slice token = http_auth_param(header, "Bearer");
    size_t i = 0;
    while (i < token.len && http_auth_b64token[(unsigned char)token.ptr[i]])
        i++;
    if (i == 0)
        return slice_make(NULL, 0);
    while (i < token.len && token.ptr[i] == '=')
        i++;
    return i == token.len ? token : slice_make(NULL, 0);
}

struct slice http_cookie(struct slice header, const char *name)
{
    size_t name_len = strlen(name);
    struct slice found = slice_make(NULL, 0);
    const char *p = header.ptr, *end = header.ptr + header.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *pair = p;
        while (p < end && *p != ';')
            p++;
        size_t len = (size_t)(p - pair);
        if (len > name_len && memcmp(pair, name, name_len) == 0 && pair[name_len] == '=') {
            if (found.ptr != NULL)
                return slice_make(NULL, 0); /* sent twice: neither is trusted */
            found = slice_make(pair + name_len + 1, len - name_len - 1);
        }
    }
    return found;
}

static struct slice forwarded_trim(const char *p, size_t len)
{
    while (len > 0 && (p[0] == ' ' || p[0] == '\t'))
        p++, len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    return slice_make(p, len);
}

struct slice http_forwarded_client(const struct cidr *trusted, size_t count, struct slice peer,
                                   struct slice xff)
{
    struct slice client = peer;
    size_t end = xff.len;
    for (unsigned hop = 0; hop < HTTP_FORWARDED_HOPS_MAX && xff.len > 0; hop++) {
        size_t start = end;
        while (start > 0 && xff.ptr[start - 1] != ',')
            start--;
        struct slice entry = forwarded_trim(xff.ptr + start, end - start);
        struct cidr_addr addr;
        if (cidr_addr_parse(entry.ptr, entry.len, &addr) != 0)
            return client; /* not a bare address: nothing left of it is believed */
        client = entry;
        if (!cidr_match(trusted, count, &addr) || start == 0)
            return client;
        end = start - 1; /* before the comma */
    }
    return client;
}
