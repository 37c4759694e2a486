/* crypto/secret.h: the opaque secrets of DESIGN §4, generated with RAND_bytes and
 * stored only as SHA-256 (high-entropy values need no slow hash).
 *
 *   API key        sk_<43 base64url chars = 32 random bytes>      display prefix: 8 chars after sk_
 *   refresh token  rt_<session id>.<43 base64url chars>           session id: [A-Za-z0-9_-]{1,64}
 *   client secret  <43 base64url chars>                            (one-time tokens too)
 *
 * Parsing is strict and bounded (SECURITY K02): exact length, exact prefix, canonical
 * base64url, so garbage is refused before any store lookup. Lookups use the SHA-256
 * of the whole presented string; stored digests are compared with secret_digest_eq
 * (constant time, K06). The display prefix is never a lookup key (K01). */
#ifndef TESSERA_CRYPTO_SECRET_H
#define TESSERA_CRYPTO_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"
#include "crypto/hash.h"

#define SECRET_RANDOM_BYTES 32 /* 256 bits */
#define SECRET_RANDOM_CHARS 43 /* base64url of 32 bytes, no padding */
#define SECRET_API_KEY_LEN (3 + SECRET_RANDOM_CHARS)
#define SECRET_DISPLAY_PREFIX_LEN 8
#define SECRET_SESSION_ID_MAX 64
#define SECRET_REFRESH_MAX (3 + SECRET_SESSION_ID_MAX + 1 + SECRET_RANDOM_CHARS)
#define SECRET_CLIENT_SECRET_LEN SECRET_RANDOM_CHARS
/* RFC 7636 §4.1: code_verifier is 43..128 unreserved characters. */
#define SECRET_PKCE_VERIFIER_MIN 43
#define SECRET_PKCE_VERIFIER_MAX 128

/* New API key into key (NUL-terminated), its digest and its display prefix. 0 or -TE_IO. */
int secret_api_key_new(char key[SECRET_API_KEY_LEN + 1], uint8_t digest[HASH_SHA256_BYTES],
                       char prefix[SECRET_DISPLAY_PREFIX_LEN + 1]);
/* Checks the shape of a presented key and gives its digest and display prefix.
 * 0 or -TE_INVAL. */
int secret_api_key_parse(struct slice presented, uint8_t digest[HASH_SHA256_BYTES],
                         char prefix[SECRET_DISPLAY_PREFIX_LEN + 1]);

/* New refresh token for session_id (validated as above). Returns its length. */
int secret_refresh_new(struct slice session_id, char token[SECRET_REFRESH_MAX + 1],
                       uint8_t digest[HASH_SHA256_BYTES]);
/* Splits a presented refresh token: session id (NUL-terminated copy) and digest. */
int secret_refresh_parse(struct slice presented, char session_id[SECRET_SESSION_ID_MAX + 1],
                         uint8_t digest[HASH_SHA256_BYTES]);

/* New client secret / one-time token and its digest. 0 or -TE_IO. */
int secret_client_new(char secret[SECRET_CLIENT_SECRET_LEN + 1], uint8_t digest[HASH_SHA256_BYTES]);
/* Shape check and digest of a presented client secret. 0 or -TE_INVAL. */
int secret_client_parse(struct slice presented, uint8_t digest[HASH_SHA256_BYTES]);

/* Constant-time equality of two SHA-256 digests. */
bool secret_digest_eq(const uint8_t a[HASH_SHA256_BYTES], const uint8_t b[HASH_SHA256_BYTES]);

/* RFC 7636 §4.1: 43 to 128 unreserved characters. */
bool secret_pkce_verifier_valid(struct slice verifier);

/* RFC 7636 §4.6 S256: BASE64URL(SHA256(ASCII(verifier))) == challenge, compared in
 * constant time; the verifier's length and alphabet are checked first (§4.1). */
bool secret_pkce_s256_check(struct slice verifier, struct slice challenge);

#endif
