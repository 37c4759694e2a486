/* crypto/password.h: password hashing (DESIGN §4). New hashes are Argon2id (RFC 9106)
 * in PHC string format, default m = 19 MiB, t = 2, p = 1 (OWASP Password Storage
 * Cheat Sheet's first Argon2id setting); bcrypt $2a$ $2b$ $2y$ hashes imported from
 * another system verify through crypt_r and report needs_rehash, so they are
 * replaced by Argon2id at the next successful login. bcrypt reads only the first 72
 * bytes of a password (SECURITY P11): until that rehash any password sharing them
 * verifies; the rehash keeps the exact one that logged in. An unknown user is verified
 * against a dummy hash made with the same parameters, so it costs the same as a
 * wrong password and gives the same answer. */
#ifndef TESSERA_CRYPTO_PASSWORD_H
#define TESSERA_CRYPTO_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest PHC string produced or accepted ("$argon2id$v=19$m=…,t=…,p=…$salt$hash"). */
#define PASSWORD_HASH_MAX 160
/* Longest password accepted: bounds hashing work per request (NIST SP 800-63B §3.1.1.2
 * asks for at least 64 characters). */
#define PASSWORD_INPUT_MAX 1024
#define PASSWORD_SALT_BYTES 16 /* RFC 9106 §3.1: 128-bit salt */
#define PASSWORD_TAG_BYTES 32  /* RFC 9106 §4: 256-bit tag */
/* Parameter bounds for configuration and for stored hashes: a stored hash asking for
 * 4 GiB of memory must not be able to take the server down. */
#define PASSWORD_M_KIB_MIN 8
#define PASSWORD_M_KIB_MAX (1024 * 1024) /* 1 GiB */
#define PASSWORD_T_MAX 16
#define PASSWORD_P_MAX 16
#define PASSWORD_BCRYPT_COST_MAX 15 /* 2^15 rounds: about 3 s on one core */

struct password_params {
    uint32_t m_kib; /* memory in KiB */
    uint32_t t;     /* passes */
    uint32_t p;     /* lanes */
};

#define PASSWORD_PARAMS_DEFAULT ((struct password_params){ .m_kib = 19 * 1024, .t = 2, .p = 1 })

struct password_policy {
    struct password_params params;
    char dummy[PASSWORD_HASH_MAX + 1]; /* Argon2id hash of a random password, same params */
};

/* Checks params against the bounds and computes the dummy hash. 0 or -TE_INVAL / -TE_IO. */
int password_policy_init(struct password_policy *policy, const struct password_params *params);

/* New Argon2id PHC string for pw[0..len) with a random salt, NUL-terminated in out
 * (cap >= PASSWORD_HASH_MAX + 1). Returns its length, -TE_INVAL (password too long)
 * or -TE_IO. */
int password_hash(const struct password_policy *policy, const char *pw, size_t len, char *out,
                  size_t cap);

/* 0 if pw matches stored; -TE_INVAL for a mismatch, a malformed or out-of-bounds
 * stored hash, or stored == NULL (unknown user: the dummy hash is verified anyway). */
int password_verify(const struct password_policy *policy, const char *stored, const char *pw,
                    size_t len);

/* True unless stored is Argon2id with exactly the policy's parameters and sizes. */
bool password_needs_rehash(const struct password_policy *policy, const char *stored);

#endif
