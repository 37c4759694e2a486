/* crypto/seal.c: see seal.h. */
#include "crypto/seal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/err.h"
#include "crypto/ct.h"

/* OpenSSL 3's GCM accepts IVs up to 1024 bits. */
#define SEAL_GCM_IV_MAX 128
/* The key file: 64 hex digits and an optional newline. */
#define SEAL_KEY_FILE_MAX (2 * SEAL_KEY_BYTES + 1)
/* Plaintext chunk per EVP update: EVP takes int lengths. */
#define SEAL_GCM_LEN_MAX (1u << 30)

static const EVP_CIPHER *seal_cipher(size_t key_len)
{
    switch (key_len) {
    case 16:
        return EVP_aes_128_gcm();
    case 24:
        return EVP_aes_192_gcm();
    case 32:
        return EVP_aes_256_gcm();
    default:
        return NULL;
    }
}

/* Cipher context with key and IV set, and every AAD part fed. */
static EVP_CIPHER_CTX *seal_gcm_ctx(bool enc, const uint8_t *key, size_t key_len, const uint8_t *iv,
                                    size_t iv_len, const struct slice *aad, size_t n_aad)
{
    const EVP_CIPHER *cipher = seal_cipher(key_len);
    if (cipher == NULL || iv_len == 0 || iv_len > SEAL_GCM_IV_MAX) {
        return NULL; /* a zero-length IV breaks GCM (SP 800-38D §5.2.1.1) */
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL && EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, enc) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)iv_len, NULL) == 1 &&
             EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc) == 1;
    for (size_t i = 0; ok && i < n_aad; i++) {
        int out_len;
        ok = aad[i].len <= SEAL_GCM_LEN_MAX &&
             (aad[i].len == 0 || EVP_CipherUpdate(ctx, NULL, &out_len, (const uint8_t *)aad[i].ptr,
                                                  (int)aad[i].len) == 1);
    }
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int seal_gcm_run(EVP_CIPHER_CTX *ctx, const uint8_t *in, size_t len, uint8_t *out)
{
    int out_len = 0;
    if (len > SEAL_GCM_LEN_MAX) {
        return -TE_INVAL;
    }
    if (len > 0 &&
        (EVP_CipherUpdate(ctx, out, &out_len, in, (int)len) != 1 || (size_t)out_len != len)) {
        return -TE_INVAL;
    }
    return 0;
}

static int seal_gcm_encrypt_parts(const uint8_t *key, size_t key_len, const uint8_t *iv,
                                  size_t iv_len, const struct slice *aad, size_t n_aad,
                                  const uint8_t *pt, size_t len, uint8_t *ct,
                                  uint8_t tag[SEAL_TAG_BYTES])
{
    EVP_CIPHER_CTX *ctx = seal_gcm_ctx(true, key, key_len, iv, iv_len, aad, n_aad);
    if (ctx == NULL) {
        return -TE_INVAL;
    }
    int final_len = 0;
    int rc = seal_gcm_run(ctx, pt, len, ct);
    if (rc == 0 && (EVP_CipherFinal_ex(ctx, ct + len, &final_len) != 1 || final_len != 0 ||
                    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SEAL_TAG_BYTES, tag) != 1)) {
        rc = -TE_IO;
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

static int seal_gcm_decrypt_parts(const uint8_t *key, size_t key_len, const uint8_t *iv,
                                  size_t iv_len, const struct slice *aad, size_t n_aad,
                                  const uint8_t *ct, size_t len, const uint8_t *tag, size_t tag_len,
                                  uint8_t *pt)
{
    if (tag_len != SEAL_TAG_BYTES) {
        return -TE_INVAL; /* never a truncated tag */
    }
    EVP_CIPHER_CTX *ctx = seal_gcm_ctx(false, key, key_len, iv, iv_len, aad, n_aad);
    if (ctx == NULL) {
        return -TE_INVAL;
    }
    uint8_t tag_copy[SEAL_TAG_BYTES];
    memcpy(tag_copy, tag, sizeof(tag_copy));
    int final_len = 0;
    int rc = seal_gcm_run(ctx, ct, len, pt);
    if (rc == 0 &&
        (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SEAL_TAG_BYTES, tag_copy) != 1 ||
         EVP_CipherFinal_ex(ctx, pt + len, &final_len) != 1)) {
        rc = -TE_INVAL;
    }
    EVP_CIPHER_CTX_free(ctx);
    if (rc < 0 && len > 0) {
        OPENSSL_cleanse(pt, len); /* unauthenticated plaintext never escapes */
    }
    return rc;
}

int seal_gcm_encrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                     const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                     uint8_t tag[SEAL_TAG_BYTES])
{
    struct slice a = slice_make((const char *)aad, aad_len);
    return seal_gcm_encrypt_parts(key, key_len, iv, iv_len, &a, 1, pt, len, ct, tag);
}

int seal_gcm_decrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                     const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                     const uint8_t *tag, size_t tag_len, uint8_t *pt)
{
    struct slice a = slice_make((const char *)aad, aad_len);
    return seal_gcm_decrypt_parts(key, key_len, iv, iv_len, &a, 1, ct, len, tag, tag_len, pt);
}

int seal(const struct seal_key *key, struct slice owner, const uint8_t *pt, size_t len,
         uint8_t *out, size_t cap)
{
    assert(key != NULL && out != NULL && (pt != NULL || len == 0));
    if (len > SEAL_PLAINTEXT_MAX || owner.len > SEAL_AAD_MAX) {
        return -TE_INVAL;
    }
    if (cap < len + SEAL_OVERHEAD) {
        return -TE_NOMEM;
    }
    out[0] = SEAL_VERSION;
    out[1] = (uint8_t)(key->key_id >> 24);
    out[2] = (uint8_t)(key->key_id >> 16);
    out[3] = (uint8_t)(key->key_id >> 8);
    out[4] = (uint8_t)key->key_id;
    int rc = ct_random_bytes(out + 5, SEAL_NONCE_BYTES);
    if (rc < 0) {
        return rc;
    }
    struct slice aad[2] = { slice_make((const char *)out, SEAL_HEADER_BYTES), owner };
    rc = seal_gcm_encrypt_parts(key->bytes, SEAL_KEY_BYTES, out + 5, SEAL_NONCE_BYTES, aad, 2, pt,
                                len, out + SEAL_HEADER_BYTES, out + SEAL_HEADER_BYTES + len);
    return rc < 0 ? rc : (int)(len + SEAL_OVERHEAD);
}

static uint32_t seal_blob_key_id(const uint8_t *blob)
{
    return (uint32_t)blob[1] << 24 | (uint32_t)blob[2] << 16 | (uint32_t)blob[3] << 8 | blob[4];
}

int seal_open(const struct seal_key *const *keys, size_t n, struct slice owner, const uint8_t *blob,
              size_t len, uint8_t *out, size_t cap)
{
    assert(keys != NULL && blob != NULL && out != NULL);
    if (len < SEAL_OVERHEAD || len - SEAL_OVERHEAD > SEAL_PLAINTEXT_MAX ||
        blob[0] != SEAL_VERSION || owner.len > SEAL_AAD_MAX) {
        return -TE_INVAL;
    }
    size_t pt_len = len - SEAL_OVERHEAD;
    if (cap < pt_len) {
        return -TE_NOMEM;
    }
    const struct seal_key *key = NULL;
    for (size_t i = 0; i < n && key == NULL; i++) {
        key = keys[i]->key_id == seal_blob_key_id(blob) ? keys[i] : NULL;
    }
    if (key == NULL) {
        return -TE_INVAL;
    }
    struct slice aad[2] = { slice_make((const char *)blob, SEAL_HEADER_BYTES), owner };
    int rc = seal_gcm_decrypt_parts(key->bytes, SEAL_KEY_BYTES, blob + 5, SEAL_NONCE_BYTES, aad, 2,
                                    blob + SEAL_HEADER_BYTES, pt_len,
                                    blob + SEAL_HEADER_BYTES + pt_len, SEAL_TAG_BYTES, out);
    return rc < 0 ? -TE_INVAL : (int)pt_len;
}

bool seal_needs_reseal(const struct seal_key *current, const uint8_t *blob, size_t len)
{
    assert(current != NULL && blob != NULL);
    return len < SEAL_OVERHEAD || blob[0] != SEAL_VERSION ||
           seal_blob_key_id(blob) != current->key_id;
}

static int seal_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int seal_key_parse(const char *text, size_t len, struct seal_key *out)
{
    if (len == 2 * SEAL_KEY_BYTES + 1 && text[len - 1] == '\n') {
        len--;
    }
    if (len != 2 * SEAL_KEY_BYTES) {
        return -TE_INVAL;
    }
    for (size_t i = 0; i < SEAL_KEY_BYTES; i++) {
        int hi = seal_hex_digit(text[2 * i]);
        int lo = seal_hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(out->bytes, sizeof(out->bytes));
            return -TE_INVAL;
        }
        out->bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int seal_key_load(const char *path, uint32_t key_id, struct seal_key *out)
{
    assert(path != NULL && out != NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -TE_IO;
    }
    struct stat st;
    char text[SEAL_KEY_FILE_MAX + 1];
    ssize_t n = -1;
    int rc = -TE_INVAL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) == 0) {
        n = read(fd, text, sizeof(text)); /* one more than allowed: detects longer files */
        rc = n < 0 ? -TE_IO : seal_key_parse(text, (size_t)n, out);
    }
    close(fd);
    OPENSSL_cleanse(text, sizeof(text));
    if (rc == 0) {
        out->key_id = key_id;
    }
    return rc;
}

int seal_key_load_env(uint32_t key_id, struct seal_key *out)
{
    const char *path = getenv(SEAL_MASTER_KEY_ENV);
    if (path == NULL || path[0] == '\0') {
        return -TE_INVAL;
    }
    return seal_key_load(path, key_id, out);
}

void seal_key_wipe(struct seal_key *key)
{
    OPENSSL_cleanse(key, sizeof(*key));
}
