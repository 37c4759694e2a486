/* crypto/hash.h: SHA-256 and HMAC-SHA-256 over caller buffers (OpenSSL EVP). */
#ifndef TESSERA_CRYPTO_HASH_H
#define TESSERA_CRYPTO_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_SHA256_BYTES 32

/* 0 or -TE_IO (OpenSSL failure). */
int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_BYTES]);
int hash_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                     uint8_t out[HASH_SHA256_BYTES]);

#endif
