/* tests/fuzz/fuzz_http_auth.c: libFuzzer target for the credential and form parsers the
 * OAuth endpoints run on untrusted bytes: proto/http_auth (Basic, Bearer) and proto/url's
 * form iterator and decoder. Properties: nothing reads or writes out of bounds (ASan, the
 * input is an exactly-sized heap copy); a Basic credential that parses yields two
 * NUL-terminated values with no NUL inside and within their buffers; a Bearer token is a
 * sub-slice of the header; a decoded form component is never longer than its encoding. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http_auth.h"
#include "proto/url.h"

#define FUZZ_INPUT_MAX 8192 /* a header or a small form body */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_basic(struct slice in)
{
    char id[64], secret[128];
    if (http_auth_basic(in, id, sizeof(id), secret, sizeof(secret)) == 0) {
        assert(memchr(id, '\0', sizeof(id)) != NULL && memchr(secret, '\0', sizeof(secret)) != NULL);
    }
    struct slice token = http_auth_bearer(in);
    assert(token.len == 0 || (token.ptr >= in.ptr && token.ptr + token.len <= in.ptr + in.len));
}

static void fuzz_form(struct slice in)
{
    size_t pos = 0;
    struct slice key, value;
    char *out = malloc(in.len + 1);
    assert(out != NULL);
    while (url_form_next(in, &pos, &key, &value)) {
        assert(pos <= in.len);
        int n = url_decode_form_component(value, out);
        assert(n < 0 || (size_t)n <= value.len);
        n = url_decode_form_component(key, out);
        assert(n < 0 || (size_t)n <= key.len);
    }
    free(out);
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
    fuzz_form(in);
    free(copy);
    return 0;
}
