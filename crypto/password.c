/* crypto/password.c: see password.h. */
#include "crypto/password.h"

#include <argon2.h>
#include <assert.h>
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/err.h"
#include "crypto/ct.h"

/* bcrypt strings: "$2b$" cost "$" 22 salt + 31 hash characters = 60. */
#define PASSWORD_BCRYPT_LEN 60
/* bcrypt reads at most 72 bytes of the password (a known limit of the algorithm). */
#define PASSWORD_BCRYPT_INPUT_MAX 72

static bool password_params_valid(const struct password_params *p)
{
    return p->m_kib >= PASSWORD_M_KIB_MIN && p->m_kib <= PASSWORD_M_KIB_MAX && p->t >= 1 &&
           p->t <= PASSWORD_T_MAX && p->p >= 1 && p->p <= PASSWORD_P_MAX &&
           p->m_kib >= 8 * p->p; /* RFC 9106 §3.1: m >= 8p */
}

static int password_argon2(const struct password_params *params, const char *pw, size_t len,
                           char *out, size_t cap)
{
    uint8_t salt[PASSWORD_SALT_BYTES];
    if (len > PASSWORD_INPUT_MAX || cap < PASSWORD_HASH_MAX + 1) {
        return -TE_INVAL;
    }
    int rc = ct_random_bytes(salt, sizeof(salt));
    if (rc < 0) {
        return rc;
    }
    rc = argon2id_hash_encoded(params->t, params->m_kib, params->p, pw, len, salt, sizeof(salt),
                               PASSWORD_TAG_BYTES, out, PASSWORD_HASH_MAX + 1);
    return rc == ARGON2_OK ? (int)strlen(out) : -TE_IO;
}

int password_policy_init(struct password_policy *policy, const struct password_params *params)
{
    assert(policy != NULL && params != NULL);
    if (!password_params_valid(params)) {
        return -TE_INVAL;
    }
    policy->params = *params;
    uint8_t random_pw[32];
    int rc = ct_random_bytes(random_pw, sizeof(random_pw));
    if (rc == 0) {
        rc = password_argon2(params, (const char *)random_pw, sizeof(random_pw), policy->dummy,
                             sizeof(policy->dummy));
    }
    OPENSSL_cleanse(random_pw, sizeof(random_pw));
    return rc < 0 ? rc : 0;
}

int password_hash(const struct password_policy *policy, const char *pw, size_t len, char *out,
                  size_t cap)
{
    assert(policy != NULL && (pw != NULL || len == 0) && out != NULL);
    return password_argon2(&policy->params, pw, len, out, cap);
}

/* Reads "$argon2id$v=19$m=M,t=T,p=P$" and checks the bounds and the version. */
static int password_argon2_params(const char *stored, struct password_params *out)
{
    unsigned v;
    unsigned m;
    unsigned t;
    unsigned p;
    int end = 0;
    if (sscanf(stored, "$argon2id$v=%u$m=%u,t=%u,p=%u$%n", &v, &m, &t, &p, &end) != 4 || end == 0 ||
        v != ARGON2_VERSION_13) {
        return -TE_INVAL;
    }
    *out = (struct password_params){ .m_kib = m, .t = t, .p = p };
    return password_params_valid(out) ? end : -TE_INVAL;
}

static bool password_is_bcrypt(const char *stored)
{
    return strlen(stored) == PASSWORD_BCRYPT_LEN &&
           (strncmp(stored, "$2a$", 4) == 0 || strncmp(stored, "$2b$", 4) == 0 ||
            strncmp(stored, "$2y$", 4) == 0);
}

/* crypt_r over a heap crypt_data (32 KiB: too big for a worker stack), compared in
 * constant time against the stored string. */
static int password_bcrypt_verify(const char *stored, const char *pw, size_t len)
{
    unsigned cost = 0;
    if (sscanf(stored + 4, "%2u$", &cost) != 1 || cost < 4 || cost > PASSWORD_BCRYPT_COST_MAX ||
        stored[6] != '$') {
        return -TE_INVAL;
    }
    char input[PASSWORD_BCRYPT_INPUT_MAX + 1];
    size_t n = len < PASSWORD_BCRYPT_INPUT_MAX ? len : PASSWORD_BCRYPT_INPUT_MAX;
    if (memchr(pw, '\0', len) != NULL) {
        return -TE_INVAL; /* crypt takes a C string: a NUL would cut the password */
    }
    memcpy(input, pw, n);
    input[n] = '\0';
    struct crypt_data *data = calloc(1, sizeof(*data));
    if (data == NULL) {
        return -TE_NOMEM;
    }
    const char *out = crypt_r(input, stored, data);
    int rc = out != NULL && strlen(out) == PASSWORD_BCRYPT_LEN &&
                     ct_memeq(out, stored, PASSWORD_BCRYPT_LEN)
                 ? 0
                 : -TE_INVAL;
    OPENSSL_cleanse(input, sizeof(input));
    OPENSSL_cleanse(data, sizeof(*data));
    free(data);
    return rc;
}

static int password_verify_stored(const char *stored, const char *pw, size_t len)
{
    struct password_params params;
    if (strlen(stored) > PASSWORD_HASH_MAX) {
        return -TE_INVAL;
    }
    if (password_argon2_params(stored, &params) >= 0) {
        return argon2id_verify(stored, pw, len) == ARGON2_OK ? 0 : -TE_INVAL;
    }
    if (password_is_bcrypt(stored)) {
        return password_bcrypt_verify(stored, pw, len);
    }
    return -TE_INVAL;
}

int password_verify(const struct password_policy *policy, const char *stored, const char *pw,
                    size_t len)
{
    assert(policy != NULL && (pw != NULL || len == 0));
    if (len > PASSWORD_INPUT_MAX) {
        len = PASSWORD_INPUT_MAX; /* still do the work: the answer is no either way */
        stored = NULL;
    }
    if (stored == NULL) {
        (void)password_verify_stored(policy->dummy, pw, len);
        return -TE_INVAL;
    }
    return password_verify_stored(stored, pw, len);
}

bool password_needs_rehash(const struct password_policy *policy, const char *stored)
{
    assert(policy != NULL && stored != NULL);
    struct password_params params;
    int end = password_argon2_params(stored, &params);
    if (end < 0 || params.m_kib != policy->params.m_kib || params.t != policy->params.t ||
        params.p != policy->params.p) {
        return true;
    }
    /* Salt and tag sizes: base64 without padding of 16 and 32 bytes is 22 + '$' + 43. */
    return strlen(stored + end) != 22 + 1 + 43;
}
