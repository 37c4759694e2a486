/* tests/crypto/test_password.c: Argon2id PHC hashing and verification, bcrypt
 * ($2a$ $2b$ $2y$) verification through crypt_r, needs_rehash, the dummy hash for
 * unknown users, and the bounds on parameters read from stored hashes. Argon2 runs
 * with small parameters except one hash at the defaults (m = 19 MiB, t = 2, p = 1).
 * Known-answer vectors: Argon2id from the reference implementation's test suite
 * ("password"/"somesalt", m = 64 MiB, t = 2, p = 1); bcrypt "U*U" from crypt_blowfish. */
#include <crypt.h>
#include <string.h>

#include "core/err.h"
#include "crypto/password.h"
#include "tests/crypto/check.h"

static const struct password_params small = { .m_kib = 256, .t = 1, .p = 1 };

static int verify(const struct password_policy *p, const char *stored, const char *pw)
{
    return password_verify(p, stored, pw, strlen(pw));
}

static void test_argon2id_round_trip(void)
{
    struct password_policy p;
    char hash[PASSWORD_HASH_MAX + 1];
    char hash2[PASSWORD_HASH_MAX + 1];
    CHECK(password_policy_init(&p, &small) == 0);
    int n = password_hash(&p, "correct horse", 13, hash, sizeof(hash));
    CHECK(n > 0 && strncmp(hash, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    CHECK(verify(&p, hash, "correct horse") == 0);
    CHECK(verify(&p, hash, "correct hors") == -TE_INVAL);
    CHECK(verify(&p, hash, "correct horse ") == -TE_INVAL);
    CHECK(verify(&p, hash, "") == -TE_INVAL);
    CHECK(password_hash(&p, "correct horse", 13, hash2, sizeof(hash2)) > 0);
    CHECK(strcmp(hash, hash2) != 0); /* random salt */
    CHECK(!password_needs_rehash(&p, hash));
    /* Embedded NUL and long passwords are hashed as bytes. */
    CHECK(password_hash(&p, "a\0b", 3, hash, sizeof(hash)) > 0);
    CHECK(password_verify(&p, hash, "a\0b", 3) == 0 && password_verify(&p, hash, "a\0c", 3) < 0);
    static char long_pw[PASSWORD_INPUT_MAX + 1];
    memset(long_pw, 'x', sizeof(long_pw));
    CHECK(password_hash(&p, long_pw, PASSWORD_INPUT_MAX, hash, sizeof(hash)) > 0);
    CHECK(password_verify(&p, hash, long_pw, PASSWORD_INPUT_MAX) == 0);
    CHECK(password_hash(&p, long_pw, PASSWORD_INPUT_MAX + 1, hash, sizeof(hash)) == -TE_INVAL);
    CHECK(password_verify(&p, hash, long_pw, PASSWORD_INPUT_MAX + 1) == -TE_INVAL);
    CHECK(password_hash(&p, "x", 1, hash, 20) == -TE_INVAL);
}

static void test_known_answers(void)
{
    struct password_policy p;
    CHECK(password_policy_init(&p, &small) == 0);
    const char *ref = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$"
                      "CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    CHECK(verify(&p, ref, "password") == 0);
    CHECK(verify(&p, ref, "Password") == -TE_INVAL);
    CHECK(password_needs_rehash(&p, ref)); /* other parameters than the policy's */
    const char *bcrypt_ref = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    CHECK(verify(&p, bcrypt_ref, "U*U") == 0);
    CHECK(verify(&p, bcrypt_ref, "U*V") == -TE_INVAL);
    CHECK(password_needs_rehash(&p, bcrypt_ref)); /* imported bcrypt: rehash on login */
}

static void test_bcrypt_variants(void)
{
    struct password_policy p;
    CHECK(password_policy_init(&p, &small) == 0);
    static const char *prefixes[] = { "$2a$", "$2b$", "$2y$" };
    for (size_t i = 0; i < 3; i++) {
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        struct crypt_data data;
        memset(&data, 0, sizeof(data));
        CHECK(crypt_gensalt_rn(prefixes[i], 4, NULL, 0, setting, sizeof(setting)) != NULL);
        const char *h = crypt_r("imported pw", setting, &data);
        CHECK(h != NULL && strncmp(h, prefixes[i], 4) == 0);
        char stored[128];
        snprintf(stored, sizeof(stored), "%s", h);
        CHECK(verify(&p, stored, "imported pw") == 0);
        CHECK(verify(&p, stored, "imported pX") == -TE_INVAL);
        CHECK(password_verify(&p, stored, "imported pw\0tail", 16) == -TE_INVAL);
    }
    /* Out-of-bounds cost (31) and malformed strings are refused without work. */
    CHECK(verify(&p, "$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U") < 0);
    CHECK(verify(&p, "$2b$05$CCCC", "U*U") < 0);
    CHECK(verify(&p, "$1$md5$hash", "x") < 0);
    CHECK(verify(&p, "", "x") < 0);
}

static void test_stored_bounds(void)
{
    struct password_policy p;
    CHECK(password_policy_init(&p, &small) == 0);
    /* A stored hash demanding 4 GiB, 100 passes, 64 lanes, or argon2i/argon2d. */
    static const char *bad[] = {
        "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=256,t=100,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=256,t=1,p=64$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=16$m=256,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(verify(&p, bad[i], "password") == -TE_INVAL);
        CHECK(password_needs_rehash(&p, bad[i]));
    }
    struct password_policy q;
    struct password_params huge = { .m_kib = PASSWORD_M_KIB_MAX + 1, .t = 1, .p = 1 };
    struct password_params zero_t = { .m_kib = 256, .t = 0, .p = 1 };
    CHECK(password_policy_init(&q, &huge) == -TE_INVAL);
    CHECK(password_policy_init(&q, &zero_t) == -TE_INVAL);
}

/* Unknown user: the dummy hash is verified (same parameters) and the answer is "no". */
static void test_dummy_and_rehash(void)
{
    struct password_policy p;
    struct password_policy stronger;
    struct password_params more = { .m_kib = 512, .t = 2, .p = 1 };
    CHECK(password_policy_init(&p, &small) == 0 && password_policy_init(&stronger, &more) == 0);
    CHECK(strncmp(p.dummy, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    CHECK(verify(&p, NULL, "anything") == -TE_INVAL);
    CHECK(verify(&p, NULL, "") == -TE_INVAL);
    char hash[PASSWORD_HASH_MAX + 1];
    CHECK(password_hash(&p, "pw", 2, hash, sizeof(hash)) > 0);
    CHECK(!password_needs_rehash(&p, hash) && password_needs_rehash(&stronger, hash));
}

/* One hash at the defaults (19 MiB, t = 2, p = 1). */
static void test_defaults(void)
{
    struct password_policy p;
    struct password_params d = PASSWORD_PARAMS_DEFAULT;
    CHECK(d.m_kib == 19456 && d.t == 2 && d.p == 1);
    CHECK(password_policy_init(&p, &d) == 0);
    char hash[PASSWORD_HASH_MAX + 1];
    CHECK(password_hash(&p, "default pw", 10, hash, sizeof(hash)) > 0);
    CHECK(strncmp(hash, "$argon2id$v=19$m=19456,t=2,p=1$", 31) == 0);
    CHECK(verify(&p, hash, "default pw") == 0 && !password_needs_rehash(&p, hash));
}

int main(void)
{
    test_argon2id_round_trip();
    test_known_answers();
    test_bcrypt_variants();
    test_stored_bounds();
    test_dummy_and_rehash();
    test_defaults();
    return check_report("test_password");
}
