/* tests/crypto/jwt_fixture.h: a tenant keyset (ES256 active, RS256 next, HS256 in its
 * own set), the expectations a tenant's /verify uses, and forge(): a token with any
 * header and payload bytes, signed correctly by a chosen key (or carrying a chosen
 * signature), so each attack test fails only on the rule it targets. */
#ifndef TESSERA_TESTS_CRYPTO_JWT_FIXTURE_H
#define TESSERA_TESTS_CRYPTO_JWT_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "crypto/b64url.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "crypto/jwt.h"
#include "crypto/keyset.h"
#include "tests/crypto/check.h"

#define NOW 1900000000LL
#define ISS "https://auth.example.com/t/acme"
#define AUD "https://api.example.com"
#define TOKEN_CAP 65536

__attribute__((unused)) static struct keyset fx_keys;
__attribute__((unused)) static struct keyset fx_hs_keys;
__attribute__((unused)) static struct jwk_key *fx_es; /* active */
__attribute__((unused)) static struct jwk_key *fx_rs; /* next */
__attribute__((unused)) static struct jwk_key *fx_hs; /* HS256, alone in fx_hs_keys */
__attribute__((
    unused)) static struct jwk_key *fx_evil; /* the attacker's own ES256 key, in no set */

__attribute__((unused)) static void fx_init(void)
{
    keyset_init(&fx_keys, 900);
    keyset_init(&fx_hs_keys, 900);
    if (jwk_generate(JWK_ALG_ES256, 0, &fx_es) < 0 ||
        jwk_generate(JWK_ALG_RS256, 2048, &fx_rs) < 0 ||
        jwk_generate(JWK_ALG_HS256, 0, &fx_hs) < 0 ||
        jwk_generate(JWK_ALG_ES256, 0, &fx_evil) < 0 ||
        keyset_add(&fx_keys, fx_es, KEYSET_ACTIVE, NOW - 100) < 0 ||
        keyset_add(&fx_keys, fx_rs, KEYSET_NEXT, NOW - 100) < 0 ||
        keyset_add(&fx_hs_keys, fx_hs, KEYSET_ACTIVE, NOW - 100) < 0) {
        fprintf(stderr, "fixture setup failed\n");
        exit(1);
    }
}

__attribute__((unused)) static void fx_free(void)
{
    keyset_clear(&fx_keys);
    keyset_clear(&fx_hs_keys);
    jwk_free(fx_evil);
}

__attribute__((unused)) static struct jwt_expect fx_expect(enum jwt_kind kind)
{
    return (struct jwt_expect){
        .kind = kind,
        .issuer = SLICE_LIT(ISS),
        .audience = SLICE_LIT(AUD),
        .tenant = kind == JWT_KIND_ACCESS ? SLICE_LIT("acme") : slice_make("", 0),
        .now = NOW,
        .leeway_s = 60,
    };
}

/* A valid access-token claims object with exp/iat/nbf relative to NOW. */
__attribute__((unused)) static const char *fx_claims(void)
{
    static char text[512];
    snprintf(text, sizeof(text),
             "{\"iss\":\"%s\",\"sub\":\"user-1\",\"aud\":\"%s\",\"exp\":%lld,\"iat\":%lld,"
             "\"nbf\":%lld,\"jti\":\"j-1\",\"client_id\":\"c-1\",\"scope\":\"read write\","
             "\"sid\":\"s-1\",\"tid\":\"acme\"}",
             ISS, AUD, NOW + 900, NOW - 10, NOW - 10);
    return text;
}

/* b64(header).b64(payload).b64(sig), with sig = key's signature over the first two
 * segments (key NULL: sig_bytes as given, sig_len may be 0). Returns the length. */
__attribute__((unused)) static size_t forge_bytes(const struct jwk_key *key, const void *header,
                                                  size_t hlen, const void *payload, size_t plen,
                                                  const uint8_t *sig_bytes, size_t sig_len,
                                                  char *out)
{
    int h = b64url_encode(header, hlen, out, TOKEN_CAP);
    out[h] = '.';
    int p = b64url_encode(payload, plen, out + h + 1, TOKEN_CAP - (size_t)h - 1);
    size_t n = (size_t)h + 1 + (size_t)p;
    uint8_t sig[JWS_SIGNATURE_MAX];
    if (key != NULL) {
        int s = jws_sign_bytes(key, out, n, sig, sizeof(sig));
        if (s < 0) {
            fprintf(stderr, "forge: signing failed\n");
            exit(1);
        }
        sig_bytes = sig;
        sig_len = (size_t)s;
    }
    out[n++] = '.';
    n += (size_t)b64url_encode(sig_bytes, sig_len, out + n, TOKEN_CAP - n);
    out[n] = '\0';
    return n;
}

__attribute__((unused)) static size_t forge(const struct jwk_key *key, const char *header,
                                            const char *payload, char *out)
{
    return forge_bytes(key, header, strlen(header), payload, strlen(payload), NULL, 0, out);
}

/* The usual access-token header for key (alg, typ at+jwt, its kid). */
__attribute__((unused)) static const char *fx_header(const struct jwk_key *key)
{
    static char text[256];
    snprintf(text, sizeof(text), "{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}",
             jwk_alg_name(jwk_key_alg(key)), jwk_kid(key));
    return text;
}

__attribute__((unused)) static int
fx_verify_in(const struct keyset *keys, const struct jwt_expect *e, const char *token, size_t len)
{
    static uint8_t buf[TOKEN_CAP];
    struct jwt_claims claims;
    return jwt_verify(keys, e, token, len, buf, sizeof(buf), &claims);
}

__attribute__((unused)) static bool accepted(const char *token)
{
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    return fx_verify_in(&fx_keys, &e, token, strlen(token)) == 0;
}

/* A token with the usual header and the given claims, signed by the active key. */
__attribute__((unused)) static bool claims_accepted(const char *claims)
{
    static char token[TOKEN_CAP];
    forge(fx_es, fx_header(fx_es), claims, token);
    return accepted(token);
}

#endif
