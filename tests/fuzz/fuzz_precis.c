/* tests/fuzz/fuzz_precis.c: libFuzzer target for the PRECIS profiles (core/precis.c,
 * SECURITY P06/P07). Properties, for precis_username, precis_username_lookup and
 * precis_password on any bytes:
 * nothing reads or writes out of bounds (ASan, and a guard byte past cap); a result is valid
 * UTF-8, NUL-terminated, shorter than cap, free of NUL; normalising a result again gives it
 * back unchanged (one stored form: RFC 8264 §7's idempotence, which makes the comparison at
 * login the comparison at sign-up); a refusal leaves an empty result. The first input byte
 * picks a small cap now and then, to reach the output bound. Built by
 * tests/fuzz/CMakeLists.txt (links tessera_core) under clang with -DTESSERA_FUZZ=ON. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unistr.h>

#include "core/err.h"
#include "core/precis.h"

#define FUZZ_PRECIS_GUARD 0x5a /* the byte past cap, that must stay */
#define FUZZ_PRECIS_SMALL_CAPS 8 /* the first byte's low bits choose cap 1..8 * 8 when set */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*fuzz_profile_fn)(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

static void fuzz_precis_one(fuzz_profile_fn profile, const char *in, size_t len, size_t cap)
{
    static char out[PRECIS_OUTPUT_MAX + 1];
    static char again[PRECIS_OUTPUT_MAX + 1];
    assert(cap <= PRECIS_OUTPUT_MAX);
    memset(out, FUZZ_PRECIS_GUARD, sizeof(out));
    size_t out_len = SIZE_MAX;
    int rc = profile(in, len, out, cap, &out_len);
    assert(out[cap] == FUZZ_PRECIS_GUARD);
    assert(rc == 0 || rc == -TE_INVAL || rc == -TE_NOMEM);
    if (rc != 0) {
        assert(out_len == 0 && out[0] == '\0');
        return;
    }
    assert(out_len > 0 && out_len < cap && out[out_len] == '\0');
    assert(memchr(out, '\0', out_len) == NULL);
    assert(u8_check((const uint8_t *)out, out_len) == NULL);
    if (out_len > PRECIS_INPUT_MAX)
        return; /* grown past the input bound (U+0130 lowers to 3 bytes from 2): not re-read */
    size_t again_len = 0;
    int rc2 = profile(out, out_len, again, sizeof(again), &again_len);
    assert(rc2 == 0 && again_len == out_len && memcmp(again, out, out_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > PRECIS_INPUT_MAX + 1)
        return 0;
    size_t cap = PRECIS_OUTPUT_MAX;
    if (data[0] & 0x80)
        cap = 8 * (1 + (data[0] % FUZZ_PRECIS_SMALL_CAPS));
    const char *in = (const char *)data + 1;
    fuzz_precis_one(precis_username, in, size - 1, cap);
    fuzz_precis_one(precis_username_lookup, in, size - 1, cap);
    fuzz_precis_one(precis_password, in, size - 1, cap);
    return 0;
}
