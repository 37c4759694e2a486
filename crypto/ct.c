/* crypto/ct.c: see ct.h. */
#include "crypto/ct.h"

#include <assert.h>
#include <limits.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/err.h"

bool ct_memeq(const void *a, const void *b, size_t n)
{
    assert(a != NULL && b != NULL);
    return CRYPTO_memcmp(a, b, n) == 0;
}

int ct_random_bytes(void *buf, size_t n)
{
    assert(buf != NULL || n == 0);
    assert(n <= INT_MAX); /* RAND_bytes takes an int */
    if (n == 0) {
        return 0;
    }
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -TE_IO;
}

int ct_uuid7(uint64_t unix_ms, uint8_t out[CT_UUID_BYTES])
{
    assert(unix_ms < (1ull << 48)); /* 48-bit field, RFC 9562 §5.7: good until year 10889 */
    int rc = ct_random_bytes(out + 6, CT_UUID_BYTES - 6);
    if (rc < 0) {
        return rc;
    }
    for (int i = 0; i < 6; i++) {
        out[i] = (uint8_t)(unix_ms >> (40 - 8 * i));
    }
    out[6] = (uint8_t)(0x70 | (out[6] & 0x0f)); /* version 7 */
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f)); /* variant 10 (RFC 9562 §4.1) */
    return 0;
}

void ct_uuid_format(const uint8_t uuid[CT_UUID_BYTES], char out[CT_UUID_TEXT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < CT_UUID_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[uuid[i] >> 4];
        out[o++] = hex[uuid[i] & 15];
    }
    assert(o == CT_UUID_TEXT_LEN);
    out[o] = '\0';
}

int ct_uuid7_now(char out[CT_UUID_TEXT_LEN + 1])
{
    uint8_t uuid[CT_UUID_BYTES];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    out[0] = '\0';
    if (ct_uuid7((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000, uuid) != 0)
        return -TE_IO;
    ct_uuid_format(uuid, out);
    return 0;
}
