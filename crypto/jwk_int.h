/* crypto/jwk_int.h: the inside of struct jwk_key, for the .c files of crypto/ only (the one
 * place OpenSSL types meet the key model). Never include it outside crypto/. */
#ifndef TESSERA_CRYPTO_JWK_INT_H
#define TESSERA_CRYPTO_JWK_INT_H

#include <stdint.h>

#include <openssl/evp.h>

#include "core/slice.h"
#include "crypto/b64url.h"
#include "crypto/jwk.h"

/* Base64url of the largest public member: a 4096-bit modulus (512 bytes). */
#define JWK_MEMBER_B64_MAX B64URL_ENCODED_LEN(JWK_RSA_BITS_MAX / 8)

struct jwk_key {
    enum jwk_alg alg;
    bool has_private;
    EVP_PKEY *pkey;                   /* NULL for HS256 */
    /* Set up once at import to prove EVP accepts the key for its alg; signing and
     * verifying use per-thread contexts instead (jws.c), not copies of these. */
    EVP_MD_CTX *verify_template;
    EVP_MD_CTX *sign_template; /* private keys only */
    uint8_t secret[JWK_HMAC_KEY_MAX]; /* HS256 only */
    size_t secret_len;
    /* Public members as base64url, NUL-terminated: RSA n/e, EC x/y, OKP x/-. */
    char pub1[JWK_MEMBER_B64_MAX + 1];
    char pub2[JWK_MEMBER_B64_MAX + 1];
    char kid[JWK_KID_MAX + 1];
    char thumbprint[JWK_THUMBPRINT_LEN + 1];
};

/* jws_sign without re-parsing the header: for headers crypto/ itself built from the
 * key (jwt_sign writes alg from the key, typ and kid JSON-escaped), where parsing
 * them again only cost time on every issued token (perf/crypto). Same results. */
int jws_sign_built(const struct jwk_key *key, struct slice header_json, const uint8_t *payload,
                   size_t payload_len, char *out, size_t cap);

/* A digest-sign or -verify context for the key's alg (jws.c). NULL on failure. */
EVP_MD_CTX *jws_md_ctx_new(const struct jwk_key *key, bool sign);

#endif
