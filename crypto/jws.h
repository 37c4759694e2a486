/* crypto/jws.h: JWS compact serialization (RFC 7515 §7.1), sign and verify.
 *
 * Verification is in three steps so the JWT layer can pick the key by kid between
 * them: jws_parse (split, strict base64url, decode into the caller's buffer),
 * jws_header_parse (header JSON to a fixed struct), jws_verify_parsed (the header
 * alg must equal the key's alg byte for byte, then the signature). jws_verify does
 * all three. Nothing is allocated per call: the header is read by jscan (no DOM),
 * and signatures use a per-thread, per-key EVP context set up on the thread's first
 * use of the key and freed when the thread exits (jws.c).
 *
 * Never accepted: alg "none" or any name but the key's own, a JWS JSON
 * serialization, other than three segments, "crit" (Tessera understands no
 * extension, RFC 7515 §4.1.11), "b64" (RFC 7797), "zip" (RFC 7516 §4.1.3). The
 * header members jku, x5u, jwk and x5c are never read: keys come from the tenant. */
#ifndef TESSERA_CRYPTO_JWS_H
#define TESSERA_CRYPTO_JWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"
#include "crypto/jwk.h"

/* Largest compact token accepted by default (DESIGN §6, SECURITY J24). */
#define JWS_TOKEN_MAX 8192
/* Largest signature: RSA-4096 (512 bytes). */
#define JWS_SIGNATURE_MAX (JWK_RSA_BITS_MAX / 8)
/* Decoded header bound: Tessera's headers are under 150 bytes; a header carrying an
 * embedded RSA jwk is about 700. Larger headers are refused before JSON parsing. */
#define JWS_HEADER_MAX 2048
/* Longest typ / cty value kept ("application/at+jwt" is 18). */
#define JWS_TYP_MAX 64

struct jws_parsed {
    struct slice signing_input; /* ASCII(header_b64 '.' payload_b64), into the token */
    struct slice header_json;   /* decoded, in the caller's buffer */
    struct slice payload;       /* decoded, in the caller's buffer */
    uint8_t signature[JWS_SIGNATURE_MAX];
    size_t signature_len;
};

struct jws_header {
    enum jwk_alg alg; /* JWK_ALG_UNSET if the name is not one of ours */
    bool has_kid;
    char kid[JWK_KID_MAX + 1]; /* printable ASCII, NUL-terminated */
    bool has_typ;
    char typ[JWS_TYP_MAX + 1];
    bool has_cty;
    char cty[JWS_TYP_MAX + 1];
};

/* Splits and decodes token[0..len): len <= max_len, exactly two '.', non-empty
 * header and signature segments (the payload may be empty, RFC 7515 §7.1), strict
 * base64url. buf receives header and payload; cap >= len always suffices.
 * 0, or -TE_INVAL (malformed or too long), -TE_NOMEM (buf too small). */
int jws_parse(const char *token, size_t len, size_t max_len, uint8_t *buf, size_t cap,
              struct jws_parsed *out);

/* Parses the header JSON (duplicates rejected, RFC 7515 §4): an object whose alg is
 * a string; kid, typ, cty, if present, strings within bounds (kid printable); no
 * crit, b64 or zip. An alg that is not one of ours gives alg = JWK_ALG_UNSET and
 * still returns 0 (the verify step refuses it). 0 or -TE_INVAL. */
int jws_header_parse(struct slice header_json, struct jws_header *out);

/* 0 if header->alg equals the key's alg and the signature verifies over
 * parsed->signing_input; -TE_INVAL otherwise. */
int jws_verify_parsed(const struct jwk_key *key, const struct jws_parsed *parsed,
                      const struct jws_header *header);

/* parse + header_parse + verify_parsed with max_len JWS_TOKEN_MAX. */
int jws_verify(const struct jwk_key *key, const char *token, size_t len, uint8_t *buf, size_t cap,
               struct jws_parsed *out);

/* The signature primitive over raw bytes, as the key's alg defines it (ES256: 64-byte
 * r||s; HS256: the 32-byte tag; RS256/PS256: modulus-sized). 0 or -TE_INVAL. */
int jws_verify_bytes(const struct jwk_key *key, const void *msg, size_t msg_len, const uint8_t *sig,
                     size_t sig_len);
/* Signs raw bytes; returns the signature length or -TE_INVAL (no private part) /
 * -TE_NOMEM (cap too small) / -TE_IO. */
int jws_sign_bytes(const struct jwk_key *key, const void *msg, size_t msg_len, uint8_t *sig,
                   size_t cap);

/* Builds b64(header_json).b64(payload).b64(signature) into out (no NUL). The header
 * must parse with jws_header_parse and name the key's alg. Returns the token length,
 * -TE_INVAL or -TE_NOMEM. */
int jws_sign(const struct jwk_key *key, struct slice header_json, const uint8_t *payload,
             size_t payload_len, char *out, size_t cap);

#endif
