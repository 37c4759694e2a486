/* crypto/hash.c: see hash.h. The HMAC implementation is fetched once per process:
 * an explicit fetch on every call would cost more than the MAC of a short token. */
#include "crypto/hash.h"

#include <assert.h>
#include <pthread.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "core/err.h"

static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hash_hmac;

static void hash_init(void)
{
    hash_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_BYTES])
{
    assert(data != NULL || len == 0);
    unsigned n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != HASH_SHA256_BYTES) {
        return -TE_IO;
    }
    return 0;
}

int hash_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                     uint8_t out[HASH_SHA256_BYTES])
{
    assert((key != NULL || key_len == 0) && (data != NULL || len == 0));
    pthread_once(&hash_once, hash_init);
    if (hash_hmac == NULL) {
        return -TE_IO;
    }
    static const uint8_t empty_key[1];
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hash_hmac);
    size_t n = 0;
    int ok = ctx != NULL &&
             EVP_MAC_init(ctx, key_len > 0 ? key : empty_key, key_len, params) == 1 &&
             EVP_MAC_update(ctx, data, len) == 1 &&
             EVP_MAC_final(ctx, out, &n, HASH_SHA256_BYTES) == 1 && n == HASH_SHA256_BYTES;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -TE_IO;
}
