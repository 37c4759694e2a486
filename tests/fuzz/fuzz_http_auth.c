/* tests/fuzz/fuzz_http_auth.c: libFuzzer target for the credential and form parsers the
 * OAuth endpoints run on untrusted bytes: proto/http_auth (Basic, Bearer, Cookie) and
 * proto/url's form iterator and decoder. Properties: nothing reads or writes out of bounds
 * (ASan, the input is an exactly-sized heap copy); a Basic credential that parses yields two
 * NUL-terminated values with no NUL inside and within their buffers; a Bearer token is a
 * sub-slice of the header, and so is a cookie's value, right after its name; a decoded form
 * component is never longer than its encoding; and
 * every decode (form component, path segment, url_form_get into a small buffer) answers
 * exactly what a byte-at-a-time decoder written from RFC 3986 §2.1 and WHATWG URL §5.1 here
 * answers: the same bytes, or the same refusal. The input as X-Forwarded-For from a trusted
 * proxy names the peer or a bare address inside it, the one a reference walk written here
 * (split first, then read from the right) names. */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http_auth.h"
#include "proto/url.h"

#define FUZZ_INPUT_MAX 8192 /* a header or a small form body */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- X-Forwarded-For ---- */

#define XFF_ENTRIES_MAX 4096 /* commas in FUZZ_INPUT_MAX bytes, plus one */

static struct slice xff_trim(struct slice s)
{
    while (s.len > 0 && (s.ptr[0] == ' ' || s.ptr[0] == '\t'))
        s.ptr++, s.len--;
    while (s.len > 0 && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* The rule of http_forwarded_client, read differently: every entry found first, then walked
 * from the last, at most HTTP_FORWARDED_HOPS_MAX of them. */
static struct slice xff_reference(const struct cidr *trusted, size_t count, struct slice peer, struct slice in)
{
    static struct slice entries[XFF_ENTRIES_MAX];
    size_t n = 0, from = 0;
    for (size_t i = 0; i <= in.len; i++) {
        if (i == in.len || in.ptr[i] == ',') {
            entries[n++] = xff_trim(slice_make(in.ptr + from, i - from));
            from = i + 1;
        }
    }
    if (in.len == 0)
        return peer;
    struct slice client = peer;
    for (size_t k = 0; k < n && k < HTTP_FORWARDED_HOPS_MAX; k++) {
        struct slice e = entries[n - 1 - k];
        struct cidr_addr a;
        if (cidr_addr_parse(e.ptr, e.len, &a) != 0)
            return client;
        client = e;
        if (!cidr_match(trusted, count, &a))
            return client;
    }
    return client;
}

static void fuzz_forwarded(struct slice in)
{
    static struct cidr trusted[3];
    static bool ready;
    if (!ready) {
        static const char *const ranges[] = { "127.0.0.0/8", "10.0.0.0/8", "2001:db8::/32" };
        for (int i = 0; i < 3; i++)
            assert(cidr_parse(ranges[i], strlen(ranges[i]), &trusted[i]) == 0);
        ready = true;
    }
    struct slice peer = SLICE_LIT("127.0.0.1");
    struct slice got = http_forwarded_client(trusted, 3, peer, in);
    struct cidr_addr a;
    assert(got.ptr == peer.ptr || (got.ptr >= in.ptr && got.ptr + got.len <= in.ptr + in.len &&
                                    cidr_addr_parse(got.ptr, got.len, &a) == 0));
    struct slice want = xff_reference(trusted, 3, peer, in);
    assert(got.ptr == want.ptr && got.len == want.len);
}

static void fuzz_basic(struct slice in)
{
    char id[64], secret[128];
    if (http_auth_basic(in, id, sizeof(id), secret, sizeof(secret)) == 0) {
        assert(memchr(id, '\0', sizeof(id)) != NULL && memchr(secret, '\0', sizeof(secret)) != NULL);
    }
    struct slice token = http_auth_bearer(in);
    assert(token.len == 0 || (token.ptr >= in.ptr && token.ptr + token.len <= in.ptr + in.len));
}

/* A cookie found is a sub-slice of the header, holds no ';', follows "name=" at the
 * header's start or after a ';' or a space, and is the only one of its name (the rest of the
 * header holds none). */
static void fuzz_cookie(struct slice in)
{
    static const char name[] = "tessera_csrf";
    struct slice v = http_cookie(in, name);
    if (v.len == 0)
        return;
    size_t at = (size_t)(v.ptr - in.ptr), n = sizeof(name) - 1;
    assert(v.ptr >= in.ptr + n + 1 && v.ptr + v.len <= in.ptr + in.len);
    assert(memchr(v.ptr, ';', v.len) == NULL);
    assert(memcmp(in.ptr + at - n - 1, name, n) == 0 && in.ptr[at - 1] == '=');
    assert(at == n + 1 || in.ptr[at - n - 2] == ';' || in.ptr[at - n - 2] == ' ');
    struct slice rest = slice_make(v.ptr + v.len, (size_t)(in.ptr + in.len - (v.ptr + v.len)));
    assert(http_cookie(rest, name).len == 0);
}

#define REF_MALFORMED (-1)
#define REF_TOO_LONG (-2)
#define FUZZ_SMALL_CAP 16 /* url_form_get's buffer in the too-long check */

static int ref_hex(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The oracle: one byte at a time, the first problem in the input decides the answer. */
static int ref_decode(struct slice in, char *out, size_t cap, bool form)
{
    size_t n = 0;
    for (size_t i = 0; i < in.len;) {
        int c = (unsigned char)in.ptr[i];
        if (c == '%') {
            int hi = i + 2 < in.len ? ref_hex((unsigned char)in.ptr[i + 1]) : -1;
            int lo = i + 2 < in.len ? ref_hex((unsigned char)in.ptr[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return REF_MALFORMED;
            c = hi * 16 + lo;
            i += 3;
        } else {
            c = form && c == '+' ? ' ' : c;
            i++;
        }
        bool refused = c == 0 || (!form && (c < 0x20 || c == 0x7f || c == '/'));
        if (refused)
            return REF_MALFORMED;
        if (n == cap)
            return REF_TOO_LONG;
        out[n++] = (char)c;
    }
    return (int)n;
}

static void fuzz_decode_matches(struct slice in, char *out, char *want)
{
    int got = url_decode_form_component(in, out);
    int ref = ref_decode(in, want, in.len, true);
    assert(got == (ref < 0 ? -1 : ref) && (got < 0 || memcmp(out, want, (size_t)got) == 0));
    got = url_decode_path_segment(in, out);
    ref = ref_decode(in, want, in.len, false);
    assert(got == (ref < 0 ? -1 : ref) && (got < 0 || memcmp(out, want, (size_t)got) == 0));
}

static void fuzz_form(struct slice in)
{
    size_t pos = 0;
    struct slice key, value;
    char *out = malloc(in.len + 1);
    char *want = malloc(in.len + 1);
    assert(out != NULL && want != NULL);
    fuzz_decode_matches(in, out, want);
    while (url_form_next(in, &pos, &key, &value)) {
        assert(pos <= in.len);
        int n = url_decode_form_component(value, out);
        assert(n < 0 || (size_t)n <= value.len);
        n = url_decode_form_component(key, out);
        assert(n < 0 || (size_t)n <= key.len);
        fuzz_decode_matches(value, out, want);
    }
    /* url_form_get of the first pair's key, into a buffer that may be too small. */
    pos = 0;
    char name[FUZZ_SMALL_CAP + 1];
    int klen = url_form_next(in, &pos, &key, &value) ? ref_decode(key, name, FUZZ_SMALL_CAP, true) : -1;
    if (klen > 0) { /* a key that decodes, with no NUL (refused), short enough for name */
        name[klen] = '\0';
        char small[FUZZ_SMALL_CAP];
        int got = url_form_get(in, name, small, sizeof(small));
        int ref = ref_decode(value, want, sizeof(small), true);
        assert(got == (ref < 0 ? -2 : ref) && (got < 0 || memcmp(small, want, (size_t)got) == 0));
    }
    free(out);
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_INPUT_MAX)
        return 0;
    char *copy = malloc(size ? size : 1);
    assert(copy != NULL);
    memcpy(copy, data, size);
    struct slice in = slice_make(copy, size);
    fuzz_basic(in);
    fuzz_cookie(in);
    fuzz_form(in);
    fuzz_forwarded(in);
    free(copy);
    return 0;
}
