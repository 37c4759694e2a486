/* tests/crypto/fuzz_b64url.c: libFuzzer target for the strict base64url decoder.
 * Property: whatever decodes re-encodes to exactly the input (one encoding per byte
 * string, RFC 4648 §3.5), and nothing reads or writes out of bounds. Built by
 * tests/fuzz/CMakeLists.txt (link tessera_crypto) under clang with -DTESSERA_FUZZ=ON. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/b64url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
