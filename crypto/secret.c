/* crypto/secret.c: see secret.h. */
#include "crypto/secret.h"

#include <assert.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/err.h"
#include "crypto/b64url.h"
#include "crypto/ct.h"

/* 43 base64url characters encoding 32 random bytes, written at out (no NUL). */
static int secret_random_text(char out[SECRET_RANDOM_CHARS])
{
    uint8_t raw[SECRET_RANDOM_BYTES];
    int rc = ct_random_bytes(raw, sizeof(raw));
    if (rc == 0) {
        rc = b64url_encode(raw, sizeof(raw), out, SECRET_RANDOM_CHARS) == SECRET_RANDOM_CHARS
                 ? 0
                 : -TE_IO;
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

/* True if s is exactly 43 canonical base64url characters (32 bytes). */
static bool secret_random_valid(const char *s, size_t len)
{
    uint8_t raw[SECRET_RANDOM_BYTES];
    bool ok = len == SECRET_RANDOM_CHARS &&
              b64url_decode(s, len, raw, sizeof(raw)) == SECRET_RANDOM_BYTES;
    OPENSSL_cleanse(raw, sizeof(raw));
    return ok;
}

static bool secret_session_id_valid(struct slice id)
{
    if (id.len == 0 || id.len > SECRET_SESSION_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < id.len; i++) {
        char c = id.ptr[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

int secret_api_key_new(char key[SECRET_API_KEY_LEN + 1], uint8_t digest[HASH_SHA256_BYTES],
                       char prefix[SECRET_DISPLAY_PREFIX_LEN + 1])
{
    memcpy(key, "sk_", 3);
    int rc = secret_random_text(key + 3);
    if (rc < 0) {
        return rc;
    }
    key[SECRET_API_KEY_LEN] = '\0';
    return secret_api_key_parse(slice_make(key, SECRET_API_KEY_LEN), digest, prefix);
}

int secret_api_key_parse(struct slice presented, uint8_t digest[HASH_SHA256_BYTES],
                         char prefix[SECRET_DISPLAY_PREFIX_LEN + 1])
{
    if (presented.len != SECRET_API_KEY_LEN || memcmp(presented.ptr, "sk_", 3) != 0 ||
        !secret_random_valid(presented.ptr + 3, SECRET_RANDOM_CHARS)) {
        return -TE_INVAL;
    }
    memcpy(prefix, presented.ptr + 3, SECRET_DISPLAY_PREFIX_LEN);
    prefix[SECRET_DISPLAY_PREFIX_LEN] = '\0';
    return hash_sha256(presented.ptr, presented.len, digest);
}

int secret_refresh_new(struct slice session_id, char token[SECRET_REFRESH_MAX + 1],
                       uint8_t digest[HASH_SHA256_BYTES])
{
    if (!secret_session_id_valid(session_id)) {
        return -TE_INVAL;
    }
    size_t n = 0;
    memcpy(token, "rt_", 3);
    n += 3;
    memcpy(token + n, session_id.ptr, session_id.len);
    n += session_id.len;
    token[n++] = '.';
    int rc = secret_random_text(token + n);
    if (rc < 0) {
        return rc;
    }
    n += SECRET_RANDOM_CHARS;
    token[n] = '\0';
    rc = hash_sha256(token, n, digest);
    return rc < 0 ? rc : (int)n;
}

int secret_refresh_parse(struct slice presented, char session_id[SECRET_SESSION_ID_MAX + 1],
                         uint8_t digest[HASH_SHA256_BYTES])
{
    if (presented.len > SECRET_REFRESH_MAX || presented.len < 3 + 1 + 1 + SECRET_RANDOM_CHARS ||
        memcmp(presented.ptr, "rt_", 3) != 0) {
        return -TE_INVAL;
    }
    size_t id_len = presented.len - 3 - 1 - SECRET_RANDOM_CHARS;
    struct slice id = slice_make(presented.ptr + 3, id_len);
    const char *secret = presented.ptr + 3 + id_len + 1;
    if (presented.ptr[3 + id_len] != '.' || !secret_session_id_valid(id) ||
        !secret_random_valid(secret, SECRET_RANDOM_CHARS)) {
        return -TE_INVAL;
    }
    memcpy(session_id, id.ptr, id.len);
    session_id[id.len] = '\0';
    return hash_sha256(presented.ptr, presented.len, digest);
}

int secret_client_new(char secret[SECRET_CLIENT_SECRET_LEN + 1], uint8_t digest[HASH_SHA256_BYTES])
{
    int rc = secret_random_text(secret);
    if (rc < 0) {
        return rc;
    }
    secret[SECRET_CLIENT_SECRET_LEN] = '\0';
    return hash_sha256(secret, SECRET_CLIENT_SECRET_LEN, digest);
}

int secret_client_parse(struct slice presented, uint8_t digest[HASH_SHA256_BYTES])
{
    if (!secret_random_valid(presented.ptr, presented.len)) {
        return -TE_INVAL;
    }
    return hash_sha256(presented.ptr, presented.len, digest);
}

bool secret_digest_eq(const uint8_t a[HASH_SHA256_BYTES], const uint8_t b[HASH_SHA256_BYTES])
{
    return ct_memeq(a, b, HASH_SHA256_BYTES);
}

/* RFC 7636 §4.1: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~". */
bool secret_pkce_verifier_valid(struct slice v)
{
    if (v.len < SECRET_PKCE_VERIFIER_MIN || v.len > SECRET_PKCE_VERIFIER_MAX) {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == '~';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool secret_pkce_s256_check(struct slice verifier, struct slice challenge)
{
    uint8_t digest[HASH_SHA256_BYTES];
    char expected[SECRET_RANDOM_CHARS];
    if (!secret_pkce_verifier_valid(verifier) || challenge.len != SECRET_RANDOM_CHARS ||
        hash_sha256(verifier.ptr, verifier.len, digest) < 0 ||
        b64url_encode(digest, sizeof(digest), expected, sizeof(expected)) != SECRET_RANDOM_CHARS) {
        return false;
    }
    return ct_memeq(expected, challenge.ptr, SECRET_RANDOM_CHARS);
}
