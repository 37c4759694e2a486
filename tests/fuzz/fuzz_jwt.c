/* tests/crypto/fuzz_jwt.c: libFuzzer target for the JWT parser and validator
 * (jws_parse, jws_header_parse, jwt_verify) against a fixed keyset: an ES256 key
 * (the RFC 7515 A.3 key, kid "es") and an HS256 key (kid "hs"). Any input must be
 * refused or accepted without a sanitizer report; an accepted token must be one the
 * keys really signed, which a fuzzer cannot produce, so acceptance aborts. Seeds:
 * tokens from tests/crypto (e.g. the RFC 7515 vectors). Built by tests/fuzz. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/jws.h"
#include "crypto/jwt.h"
#include "crypto/keyset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct keyset fuzz_keys;

static void fuzz_init(void)
{
    static const char es[] = "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"es\",\"alg\":\"ES256\","
                             "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                             "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";
    static const char hs[] = "{\"kty\":\"oct\",\"kid\":\"hs\",\"alg\":\"HS256\","
                             "\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr8\"}";
    struct jwk_key *es_key = NULL;
    struct jwk_key *hs_key = NULL;
    keyset_init(&fuzz_keys, 600);
    if (jwk_import(es, strlen(es), JWK_ALG_UNSET, &es_key) < 0 ||
        jwk_import(hs, strlen(hs), JWK_ALG_UNSET, &hs_key) < 0 ||
        keyset_add(&fuzz_keys, es_key, KEYSET_PUBLISHED, 0) < 0) {
        abort();
    }
    jwk_free(hs_key); /* imported to fuzz jwk_import's happy path; sets never mix */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static uint8_t buf[JWS_TOKEN_MAX];
    if (!ready) {
        fuzz_init();
        ready = 1;
    }
    struct jws_parsed parsed;
    struct jws_header header;
    if (jws_parse((const char *)data, size, JWS_TOKEN_MAX, buf, sizeof(buf), &parsed) == 0) {
        (void)jws_header_parse(parsed.header_json, &header);
    }
    struct jwt_expect expect = {
        .kind = size % 3 == 0 ? JWT_KIND_ACCESS : size % 3 == 1 ? JWT_KIND_ID : JWT_KIND_ID_HINT,
        .issuer = SLICE_LIT("joe"),
        .audience = size % 3 == 2 && (size & 4) ? slice_make(NULL, 0) : SLICE_LIT("aud"),
        .now = 1300819000,
        .leeway_s = 60,
    };
    struct jwt_claims claims;
    if (jwt_verify(&fuzz_keys, &expect, (const char *)data, size, buf, sizeof(buf), &claims) == 0) {
        abort();
    }
    struct jwk_key *key = NULL;
    if (jwk_import((const char *)data, size, JWK_ALG_UNSET, &key) == 0) {
        jwk_free(key);
    }
    return 0;
}
