/* tests/fuzz/fuzz_b64url.c: libFuzzer target for the strict base64url decoder and the
 * opaque secrets' shape checks built on it (crypto/secret.h: API keys, SECURITY K02).
 * Properties: whatever decodes re-encodes to exactly the input (one encoding per byte
 * string, RFC 4648 §3.5); an API key that parses is sk_ and 43 characters that decode to 32
 * bytes, its display prefix the 8 after sk_ and its digest the SHA-256 of the whole input;
 * nothing reads or writes out of bounds. Built by tests/fuzz/CMakeLists.txt (link
 * tessera_crypto) under clang with -DTESSERA_FUZZ=ON. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/b64url.h"
#include "crypto/hash.h"
#include "crypto/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_api_key(const uint8_t *data, size_t size)
{
    uint8_t digest[HASH_SHA256_BYTES], again[HASH_SHA256_BYTES], raw[SECRET_RANDOM_BYTES + 2];
    char prefix[SECRET_DISPLAY_PREFIX_LEN + 1];
    if (secret_api_key_parse(slice_make((const char *)data, size), digest, prefix) != 0)
        return;
    assert(size == SECRET_API_KEY_LEN && memcmp(data, "sk_", 3) == 0);
    assert(strlen(prefix) == SECRET_DISPLAY_PREFIX_LEN && memcmp(prefix, data + 3, SECRET_DISPLAY_PREFIX_LEN) == 0);
    assert(b64url_decode((const char *)data + 3, SECRET_RANDOM_CHARS, raw, sizeof(raw)) == SECRET_RANDOM_BYTES);
    assert(hash_sha256(data, size, again) == 0 && memcmp(digest, again, sizeof(digest)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_api_key(data, size);
    if (size > B64URL_INPUT_MAX) {
        return 0;
    }
    uint8_t *out = malloc(B64URL_DECODED_MAX(size) + 1);
    char *again = malloc(size + 1);
    assert(out != NULL && again != NULL);
    int n = b64url_decode((const char *)data, size, out, B64URL_DECODED_MAX(size));
    if (n >= 0) {
        int e = b64url_encode(out, (size_t)n, again, size);
        assert(e == (int)size && memcmp(again, data, size) == 0);
    }
    free(out);
    free(again);
    return 0;
}
