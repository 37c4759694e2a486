/* crypto/b64url.h: strict base64url without padding (RFC 7515 §2, RFC 4648 §5).
 *
 * The decoder accepts exactly the encoder's output: only [A-Za-z0-9_-], no '=',
 * no whitespace, length never ≡ 1 (mod 4), and the unused low bits of the last
 * character zero (RFC 4648 §3.5), so every byte string has one encoding and a
 * token cannot be altered without changing its signed bytes' meaning. */
#ifndef TESSERA_CRYPTO_B64URL_H
#define TESSERA_CRYPTO_B64URL_H

#include <stddef.h>
#include <stdint.h>

/* Longest input either direction accepts: 64 KiB is far above any token (8 KiB),
 * JWK member (an RSA-4096 modulus is 683 characters) or sealed blob we handle. */
#define B64URL_INPUT_MAX 65536

/* Characters that encode n bytes (no padding, no NUL). */
#define B64URL_ENCODED_LEN(n) (((n) / 3) * 4 + ((n) % 3 == 0 ? 0 : (n) % 3 + 1))
/* Bytes that n characters can decode to at most. */
#define B64URL_DECODED_MAX(n) (((n) / 4) * 3 + ((n) % 4 == 0 ? 0 : (n) % 4 - 1))

/* Encodes in[0..in_len) into out; writes no NUL. Returns the number of
 * characters written, or -TE_INVAL (input too long) / -TE_NOMEM (out too small). */
int b64url_encode(const uint8_t *in, size_t in_len, char *out, size_t out_cap);

/* Decodes strictly. Returns the number of bytes written, -TE_INVAL for any
 * non-canonical or malformed input, -TE_NOMEM when out_cap is too small. */
int b64url_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap);

#endif
