/* crypto/seal.h: sealing secrets at rest (private signing keys, stored credentials)
 * with AES-256-GCM under a 32-byte master key (DESIGN §4).
 *
 * Sealed blob, version 1:
 *   version (1 byte = 1) | key_id (4 bytes, big-endian) | nonce (12 bytes) |
 *   ciphertext (same length as the plaintext) | tag (16 bytes)
 * The associated data is the first 17 bytes followed by the caller's owner binding
 * (for example "tenant-id\0kid"): a blob moved to another owner, or a header edited
 * to another version or key, fails to open. key_id names the master key generation,
 * so `tessera admin reseal` can find blobs under an old key (seal_needs_reseal).
 * The nonce is random (RAND_bytes): 2^-32 collision odds are reached only after
 * about 2^32 seals under one key (NIST SP 800-38D §8.3), far beyond a key's life. */
#ifndef TESSERA_CRYPTO_SEAL_H
#define TESSERA_CRYPTO_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define SEAL_KEY_BYTES 32   /* AES-256 */
#define SEAL_NONCE_BYTES 12 /* 96-bit IV: GCM's direct mode (SP 800-38D §8.2.2) */
#define SEAL_TAG_BYTES 16   /* full 128-bit tag; never truncated */
#define SEAL_VERSION 1
#define SEAL_HEADER_BYTES (1 + 4 + SEAL_NONCE_BYTES)
#define SEAL_OVERHEAD (SEAL_HEADER_BYTES + SEAL_TAG_BYTES)
/* Largest plaintext: an RSA-4096 private key in DER is about 2.4 KiB. */
#define SEAL_PLAINTEXT_MAX 16384
/* Largest owner binding (tenant id, kid, purpose). */
#define SEAL_AAD_MAX 1024
/* Environment variable naming the master key file. */
#define SEAL_MASTER_KEY_ENV "TESSERA_MASTER_KEY_FILE"

struct seal_key {
    uint32_t key_id;
    uint8_t bytes[SEAL_KEY_BYTES];
};

/* Reads a master key file: 64 hex digits, optionally followed by one newline.
 * The file must be a regular file with no group or other permissions (0600 or
 * stricter). 0, -TE_INVAL (format or permissions) or -TE_IO. */
int seal_key_load(const char *path, uint32_t key_id, struct seal_key *out);
/* seal_key_load on the path in TESSERA_MASTER_KEY_FILE; -TE_INVAL if unset. */
int seal_key_load_env(uint32_t key_id, struct seal_key *out);
/* Wipes the key bytes. */
void seal_key_wipe(struct seal_key *key);

/* Seals pt[0..len) bound to owner. out needs len + SEAL_OVERHEAD bytes. Returns the
 * blob length, -TE_INVAL (too long), -TE_NOMEM (cap) or -TE_IO. */
int seal(const struct seal_key *key, struct slice owner, const uint8_t *pt, size_t len,
         uint8_t *out, size_t cap);

/* Opens a blob with whichever of keys[0..n) has its key_id. Returns the plaintext
 * length, or -TE_INVAL for any failure (unknown version or key, wrong owner,
 * tampering); -TE_NOMEM if cap is too small. out is wiped on failure. */
int seal_open(const struct seal_key *const *keys, size_t n, struct slice owner, const uint8_t *blob,
              size_t len, uint8_t *out, size_t cap);

/* True if the blob is not sealed under current (older key_id or version). */
bool seal_needs_reseal(const struct seal_key *current, const uint8_t *blob, size_t len);

/* Raw AES-GCM (128/192/256-bit keys, IV 1..128 bytes, 16-byte tag) as the sealed
 * format uses it; exposed for the Wycheproof vectors. encrypt returns 0 and writes
 * len bytes to ct and the tag; decrypt returns 0 only if the tag verifies (pt is
 * wiped otherwise). -TE_INVAL for unsupported sizes or a failed tag. */
int seal_gcm_encrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                     const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                     uint8_t tag[SEAL_TAG_BYTES]);
int seal_gcm_decrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                     const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                     const uint8_t *tag, size_t tag_len, uint8_t *pt);

#endif
