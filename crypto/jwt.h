/* crypto/jwt.h: JWT issuance and validation, RFC 7519 as profiled by RFC 8725 (best
 * current practice) and RFC 9068 (access tokens). DESIGN §4 lists the claims.
 *
 * Validation order: size bound, compact JWS split and strict base64url, header
 * (duplicates rejected, no crit/b64/zip/cty, kid required), key chosen by kid from
 * the tenant's keyset only (jku, x5u, jwk, x5c never read), signature with the
 * key's alg, typ for the expected kind, then the claims (duplicates rejected):
 * exp/nbf/iat against an injected clock with leeway, iss and aud byte-exact, and
 * the kind's required claims. Every failure is -TE_INVAL; no result is cached (only
 * per-thread EVP contexts, jws.c). JSON is read by crypto/jscan.h, strictly. */
#ifndef TESSERA_CRYPTO_JWT_H
#define TESSERA_CRYPTO_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "crypto/keyset.h"

/* Clock skew tolerated on exp/nbf/iat unless configured (RFC 7519 §4.1.4: "a few
 * minutes" at most; a minute covers NTP-synchronised hosts). */
#define JWT_LEEWAY_DEFAULT_S 60
/* Longest sub, client_id, jti, sid, tid, nonce copied out; longer is refused. */
#define JWT_ID_MAX 255
/* Longest scope string (space-separated, RFC 9068 §2.2.3). */
#define JWT_SCOPE_MAX 1024
/* NumericDates beyond year 9999 are refused, so now + leeway never overflows. */
#define JWT_NUMERICDATE_MAX 253402300799LL

enum jwt_kind {
    JWT_KIND_ACCESS, /* typ at+jwt (RFC 9068 §2.1); sub client_id jti iat required */
    JWT_KIND_ID,     /* typ JWT or absent (OIDC Core §2); sub iat required */
    /* An ID token offered back as id_token_hint (OIDC RP-Initiated Logout 1.0 §2): as an ID
     * token, but an expired one is still a hint (exp must be there, its moment is not
     * checked), and an empty audience takes the token's own: aud must then be one string,
     * copied into client_id (the client it was issued to). */
    JWT_KIND_ID_HINT,
};

struct jwt_expect {
    enum jwt_kind kind;
    struct slice issuer;   /* byte-exact (RFC 8725 §3.8) */
    struct slice audience; /* must appear in aud, byte-exact (RFC 8725 §3.9); a hint's may
                            * be empty (JWT_KIND_ID_HINT) */
    struct slice tenant;   /* access tokens: tid must equal it when non-empty */
    int64_t now;           /* Unix seconds: the injected clock */
    int64_t leeway_s;
    size_t max_len; /* 0: JWS_TOKEN_MAX */
};

struct jwt_claims {
    char kid[JWK_KID_MAX + 1];
    char sub[JWT_ID_MAX + 1];
    char client_id[JWT_ID_MAX + 1]; /* empty when absent (ID tokens); a hint's aud */
    char jti[JWT_ID_MAX + 1];
    char sid[JWT_ID_MAX + 1];
    char tid[JWT_ID_MAX + 1];
    char nonce[JWT_ID_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1];
    int64_t exp; /* whole seconds (a fractional NumericDate is truncated here) */
    int64_t iat;
    int64_t nbf; /* 0 when absent */
};

/* Validates token[0..len) for expect against keys. buf is scratch for the decoded
 * header and payload (cap >= len suffices); out is filled on success only.
 * 0 or -TE_INVAL (-TE_NOMEM if buf is too small). */
int jwt_verify(const struct keyset *keys, const struct jwt_expect *expect, const char *token,
               size_t len, uint8_t *buf, size_t cap, struct jwt_claims *out);

/* Signs payload_json (the caller's claims object) with header
 * {"alg":<key alg>,"typ":<typ>,"kid":<key kid>}. Returns the token length,
 * -TE_INVAL or -TE_NOMEM. */
int jwt_sign(const struct jwk_key *key, const char *typ, struct slice payload_json, char *out,
             size_t cap);

/* The access-token claims of DESIGN §4, rendered as a JSON object by jwt_access_render. */
struct jwt_access {
    struct slice iss, sub, aud, jti, client_id, scope, sid, tid;
    int64_t iat;
    int64_t lifetime_s; /* exp = iat + lifetime_s; nbf = iat */
};

/* Appends the claims object; 0 or -TE_NOMEM (out overflowed). */
int jwt_access_render(const struct jwt_access *claims, struct buf *out);

#endif
