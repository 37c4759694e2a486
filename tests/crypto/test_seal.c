/* tests/crypto/test_seal.c: the sealed-blob format of seal.h. Round trip; owner
 * binding; every byte of a blob tampered (header, nonce, ciphertext, tag) fails;
 * truncation fails; master key rotation (open with old and new, needs_reseal);
 * random nonces differ; the master key file's format and permission rules. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "crypto/seal.h"
#include "tests/crypto/check.h"

static struct seal_key k1 = { .key_id = 1 };
static struct seal_key k2 = { .key_id = 2 };

static void test_round_trip_and_binding(void)
{
    const struct seal_key *keys[] = { &k1 };
    const uint8_t secret[] = "-----BEGIN PRIVATE KEY----- not really";
    uint8_t blob[256];
    uint8_t out[256];
    int n = seal(&k1, SLICE_LIT("tenant-a\0kid-1"), secret, sizeof(secret), blob, sizeof(blob));
    CHECK(n == (int)(sizeof(secret) + SEAL_OVERHEAD));
    CHECK(blob[0] == SEAL_VERSION && blob[4] == 1);
    CHECK(memmem(blob, (size_t)n, "PRIVATE", 7) == NULL);
    int m = seal_open(keys, 1, SLICE_LIT("tenant-a\0kid-1"), blob, (size_t)n, out, sizeof(out));
    CHECK(m == (int)sizeof(secret) && memcmp(out, secret, sizeof(secret)) == 0);
    /* Owner binding: another tenant, another kid, empty owner. */
    CHECK(seal_open(keys, 1, SLICE_LIT("tenant-b\0kid-1"), blob, (size_t)n, out, sizeof(out)) ==
          -TE_INVAL);
    CHECK(seal_open(keys, 1, SLICE_LIT("tenant-a\0kid-2"), blob, (size_t)n, out, sizeof(out)) ==
          -TE_INVAL);
    CHECK(seal_open(keys, 1, SLICE_LIT(""), blob, (size_t)n, out, sizeof(out)) == -TE_INVAL);
    /* Output buffer too small; empty plaintext works. */
    CHECK(seal_open(keys, 1, SLICE_LIT("tenant-a\0kid-1"), blob, (size_t)n, out, 3) == -TE_NOMEM);
    CHECK(seal(&k1, SLICE_LIT("o"), secret, sizeof(secret), blob, 20) == -TE_NOMEM);
    n = seal(&k1, SLICE_LIT("o"), NULL, 0, blob, sizeof(blob));
    CHECK(n == SEAL_OVERHEAD && seal_open(keys, 1, SLICE_LIT("o"), blob, (size_t)n, out, 0) == 0);
}

static void test_tamper_every_byte(void)
{
    const struct seal_key *keys[] = { &k1 };
    const uint8_t secret[32] = { 1, 2, 3 };
    uint8_t blob[128];
    uint8_t out[128];
    int n = seal(&k1, SLICE_LIT("owner"), secret, sizeof(secret), blob, sizeof(blob));
    int opened = 0;
    for (int i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            blob[i] ^= (uint8_t)(1 << b);
            memset(out, 0xaa, sizeof(out));
            opened +=
                seal_open(keys, 1, SLICE_LIT("owner"), blob, (size_t)n, out, sizeof(out)) >= 0;
            blob[i] ^= (uint8_t)(1 << b);
        }
    }
    CHECK(opened == 0);
    for (int cut = 0; cut < n; cut++) {
        CHECK(seal_open(keys, 1, SLICE_LIT("owner"), blob, (size_t)cut, out, sizeof(out)) ==
              -TE_INVAL);
    }
    CHECK(seal_open(keys, 1, SLICE_LIT("owner"), blob, (size_t)n, out, sizeof(out)) == 32);
}

static void test_rotation(void)
{
    const uint8_t secret[] = "client secret";
    uint8_t old_blob[128];
    uint8_t new_blob[128];
    uint8_t out[128];
    int n_old = seal(&k1, SLICE_LIT("o"), secret, sizeof(secret), old_blob, sizeof(old_blob));
    CHECK(seal_needs_reseal(&k2, old_blob, (size_t)n_old));
    CHECK(!seal_needs_reseal(&k1, old_blob, (size_t)n_old));
    const struct seal_key *both[] = { &k2, &k1 };
    const struct seal_key *only_new[] = { &k2 };
    int m = seal_open(both, 2, SLICE_LIT("o"), old_blob, (size_t)n_old, out, sizeof(out));
    CHECK(m == (int)sizeof(secret));
    int n_new = seal(&k2, SLICE_LIT("o"), out, (size_t)m, new_blob, sizeof(new_blob)); /* reseal */
    CHECK(!seal_needs_reseal(&k2, new_blob, (size_t)n_new));
    CHECK(seal_open(only_new, 1, SLICE_LIT("o"), new_blob, (size_t)n_new, out, sizeof(out)) == m);
    CHECK(seal_open(only_new, 1, SLICE_LIT("o"), old_blob, (size_t)n_old, out, sizeof(out)) ==
          -TE_INVAL);
    /* A blob relabelled with the other key id (header is authenticated) fails. */
    old_blob[4] = 2;
    CHECK(seal_open(both, 2, SLICE_LIT("o"), old_blob, (size_t)n_old, out, sizeof(out)) ==
          -TE_INVAL);
}

static void test_nonces_differ(void)
{
    uint8_t a[64];
    uint8_t b[64];
    int same = 0;
    for (int i = 0; i < 1000; i++) {
        seal(&k1, SLICE_LIT("o"), (const uint8_t *)"x", 1, a, sizeof(a));
        seal(&k1, SLICE_LIT("o"), (const uint8_t *)"x", 1, b, sizeof(b));
        same += memcmp(a + 5, b + 5, SEAL_NONCE_BYTES) == 0;
    }
    CHECK(same == 0);
}

static int write_key_file(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fputs(text, f);
    fclose(f);
    return chmod(path, mode);
}

static void test_key_file(void)
{
    char path[] = "/tmp/tessera_seal_key_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    struct seal_key k;
    CHECK(write_key_file(path, hex, 0600) == 0);
    CHECK(seal_key_load(path, 7, &k) == 0 && k.key_id == 7 && k.bytes[31] == 0x1f &&
          k.bytes[1] == 1);
    char with_nl[80];
    snprintf(with_nl, sizeof(with_nl), "%s\n", hex);
    CHECK(write_key_file(path, with_nl, 0400) == 0 && seal_key_load(path, 7, &k) == 0);
    CHECK(write_key_file(path, hex, 0644) == 0 && seal_key_load(path, 7, &k) == -TE_INVAL);
    CHECK(write_key_file(path, hex, 0640) == 0 && seal_key_load(path, 7, &k) == -TE_INVAL);
    snprintf(with_nl, sizeof(with_nl), "%s\n\n", hex);
    CHECK(write_key_file(path, with_nl, 0600) == 0 && seal_key_load(path, 7, &k) == -TE_INVAL);
    CHECK(write_key_file(path, "00", 0600) == 0 && seal_key_load(path, 7, &k) == -TE_INVAL);
    snprintf(with_nl, sizeof(with_nl), "%.62szz", hex);
    CHECK(write_key_file(path, with_nl, 0600) == 0 && seal_key_load(path, 7, &k) == -TE_INVAL);
    CHECK(write_key_file(path, hex, 0600) == 0);
    setenv(SEAL_MASTER_KEY_ENV, path, 1);
    CHECK(seal_key_load_env(3, &k) == 0 && k.key_id == 3);
    unsetenv(SEAL_MASTER_KEY_ENV);
    CHECK(seal_key_load_env(3, &k) == -TE_INVAL);
    unlink(path);
    CHECK(seal_key_load(path, 7, &k) == -TE_IO);
    seal_key_wipe(&k);
    CHECK(k.bytes[0] == 0 && k.bytes[31] == 0);
}

int main(void)
{
    for (int i = 0; i < SEAL_KEY_BYTES; i++) {
        k1.bytes[i] = (uint8_t)i;
        k2.bytes[i] = (uint8_t)(0xff - i);
    }
    test_round_trip_and_binding();
    test_tamper_every_byte();
    test_rotation();
    test_nonces_differ();
    test_key_file();
    return check_report("test_seal");
}
