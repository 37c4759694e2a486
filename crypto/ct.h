/* crypto/ct.h: constant-time comparison and the process's only source of secret
 * randomness (DESIGN §4: RAND_bytes for every secret, CRYPTO_memcmp for every
 * secret comparison), plus UUIDv7 identifiers (RFC 9562 §5.7). */
#ifndef TESSERA_CRYPTO_CT_H
#define TESSERA_CRYPTO_CT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CT_UUID_BYTES 16
#define CT_UUID_TEXT_LEN 36 /* 8-4-4-4-12 hex digits and hyphens, RFC 9562 §4 */

/* Time taken depends on n only, never on where a and b differ (CRYPTO_memcmp).
 * Compare fixed-length digests: the length itself is not hidden. */
bool ct_memeq(const void *a, const void *b, size_t n);

/* Fills buf with n bytes from OpenSSL's CSPRNG. Returns 0 or -TE_IO. */
int ct_random_bytes(void *buf, size_t n);

/* UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits, variant 10.
 * Sorts by creation time, so database indexes stay append-mostly. 0 or -TE_IO. */
int ct_uuid7(uint64_t unix_ms, uint8_t out[CT_UUID_BYTES]);
/* Lowercase text form into out[0..36); out must hold CT_UUID_TEXT_LEN + 1 (NUL). */
void ct_uuid_format(const uint8_t uuid[CT_UUID_BYTES], char out[CT_UUID_TEXT_LEN + 1]);
/* A new UUIDv7 of the wall clock's now, in text form. 0 or -TE_IO (then out is ""). */
int ct_uuid7_now(char out[CT_UUID_TEXT_LEN + 1]);

#endif
