/* crypto/jwk_int.h: the inside of struct jwk_key, for the .c files of crypto/ only (the one
 * place OpenSSL types meet the key model). Never include it outside crypto/. */
#ifndef TESSERA_CRYPTO_JWK_INT_H
#define TESSERA_CRYPTO_JWK_INT_H

#include <stdint.h>

#include <openssl/evp.h>

#include "crypto/b64url.h"
#include "crypto/jwk.h"

/* Base64url of the largest public member: a 4096-bit modulus (512 bytes). */
#define JWK_MEMBER_B64_MAX B64URL_ENCODED_LEN(JWK_RSA_BITS_MAX / 8)

struct jwk_key {
    enum jwk_alg alg;
    bool has_private;
    EVP_PKEY *pkey;                   /* NULL for HS256 */
    EVP_MD_CTX *verify_template;      /* set up for verification; copied per use */
    EVP_MD_CTX *sign_template;        /* set up for signing (private keys only); copied per use */
    uint8_t secret[JWK_HMAC_KEY_MAX]; /* HS256 only */
    size_t secret_len;
    /* Public members as base64url, NUL-terminated: RSA n/e, EC x/y, OKP x/-. */
    char pub1[JWK_MEMBER_B64_MAX + 1];
    char pub2[JWK_MEMBER_B64_MAX + 1];
    char kid[JWK_KID_MAX + 1];
    char thumbprint[JWK_THUMBPRINT_LEN + 1];
};

/* A digest-sign or -verify context for the key's alg (jws.c). NULL on failure. */
EVP_MD_CTX *jws_md_ctx_new(const struct jwk_key *key, bool sign);

#endif
