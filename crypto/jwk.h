/* crypto/jwk.h: signing keys as JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037).
 *
 * A key carries exactly one algorithm (RFC 8725 §3.1): RS256, PS256, ES256 (P-256),
 * EdDSA (Ed25519) or HS256. The header of a token must name that algorithm; a key
 * is never used as another type (no HS256 keyed with an RSA public key).
 *
 * Keys are heap objects with process lifetime (sized at start-up or key rotation,
 * never per request): jwk_import / jwk_generate create, jwk_free destroys. Once
 * built a key is immutable and may be shared between threads. */
#ifndef TESSERA_CRYPTO_JWK_H
#define TESSERA_CRYPTO_JWK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/slice.h"

enum jwk_alg {
    JWK_ALG_UNSET = 0, /* only as "take the JWK's own alg member" in jwk_import */
    JWK_ALG_RS256,     /* RSASSA-PKCS1-v1_5 SHA-256, RFC 7518 §3.3 */
    JWK_ALG_PS256,     /* RSASSA-PSS SHA-256, MGF1-SHA-256, salt 32, RFC 7518 §3.5 */
    JWK_ALG_ES256,     /* ECDSA P-256 SHA-256, r||s 64 bytes, RFC 7518 §3.4 */
    JWK_ALG_EDDSA,     /* Ed25519, RFC 8037 §3.1 */
    JWK_ALG_HS256,     /* HMAC-SHA-256, key >= 32 bytes, RFC 7518 §3.2 */
};

/* A JWK document larger than this is refused before parsing: an RSA-4096 private
 * JWK is about 3.3 KiB. */
#define JWK_JSON_MAX 8192
/* Longest kid kept from an imported JWK or accepted in a token header; Tessera's
 * own kids are 43-character thumbprints (RFC 7638). */
#define JWK_KID_MAX 128
/* Base64url SHA-256: the RFC 7638 thumbprint Tessera uses as kid. */
#define JWK_THUMBPRINT_LEN 43
/* RSA moduli accepted: at least 2048 bits (RFC 7518 §3.3), at most 4096 so an
 * imported key cannot make every verification arbitrarily slow. */
#define JWK_RSA_BITS_MIN 2048
#define JWK_RSA_BITS_MAX 4096
/* HS256 secrets: at least the hash size (RFC 7518 §3.2); longer than one SHA-256
 * block (64) gains nothing, 128 bounds the copy. */
#define JWK_HMAC_KEY_MIN 32
#define JWK_HMAC_KEY_MAX 128

struct jwk_key;

/* "RS256" etc.; NULL for JWK_ALG_UNSET. */
const char *jwk_alg_name(enum jwk_alg alg);
/* Byte-exact match against the five names (RFC 7515 §4.1.1: case-sensitive).
 * JWK_ALG_UNSET for anything else, "none" and "HS256\0" included. */
enum jwk_alg jwk_alg_parse(struct slice name);

/* A usable kid: 1..JWK_KID_MAX bytes of printable ASCII (it is a map key and may be
 * logged; never a path, SQL text or anything interpreted, SECURITY J07). */
bool jwk_kid_valid(struct slice kid);

/* Imports one JWK (public or private). expect is the algorithm the caller wants
 * the key for, or JWK_ALG_UNSET to take the JWK's "alg" member (then required).
 * Refused (-TE_INVAL): unknown kty; alg absent, unsupported (RS384, ES512, ...),
 * different from expect or not matching kty/crv; use other than "sig"; key_ops
 * other than an array of "sign"/"verify"; RSA modulus outside 2048..4096 bits,
 * e even or 1, a ROCA-fingerprinted modulus; EC curve other than P-256 or point
 * not on it; private part not matching the public part; HMAC key < 32 bytes;
 * duplicate members; kid not a printable string of at most JWK_KID_MAX bytes.
 * Returns 0 and *out, or -TE_INVAL / -TE_NOMEM. */
int jwk_import(const char *json, size_t len, enum jwk_alg expect, struct jwk_key **out);

/* Generates a fresh key: RS256/PS256 with rsa_bits 2048 or 3072 (4096 allowed),
 * ES256, EdDSA, or HS256 (32 random bytes). kid = thumbprint. */
int jwk_generate(enum jwk_alg alg, unsigned rsa_bits, struct jwk_key **out);

void jwk_free(struct jwk_key *key);

enum jwk_alg jwk_key_alg(const struct jwk_key *key);
bool jwk_has_private(const struct jwk_key *key);
bool jwk_is_symmetric(const struct jwk_key *key);
/* The kid: the imported JWK's "kid" if it had one, else the thumbprint. NUL-terminated. */
const char *jwk_kid(const struct jwk_key *key);
/* RFC 7638 thumbprint (SHA-256, base64url), NUL-terminated. */
const char *jwk_thumbprint(const struct jwk_key *key);

/* Appends the public JWK as one JSON object: kty, use "sig", alg, kid and the
 * public members only (never d, p, q, dp, dq, qi or k). -TE_INVAL for an HS256
 * key (a secret has no public form), -TE_NOMEM if out overflowed, else 0. */
int jwk_export_public(const struct jwk_key *key, struct buf *out);

/* Appends the whole JWK, private members included (RSA d p q dp dq qi, EC/OKP d,
 * oct k), in the form jwk_import reads back. Only for sealing at rest (seal.h): never
 * logged, published or sent. The caller wipes out->data after use. 0, -TE_INVAL (no
 * private part), -TE_NOMEM (overflow) or -TE_IO. */
int jwk_export_private(const struct jwk_key *key, struct buf *out);

/* Appends {"keys":[...]} (RFC 7517 §5) with every key's public JWK. */
int jwk_set_render(const struct jwk_key *const *keys, size_t n, struct buf *out);

#endif
