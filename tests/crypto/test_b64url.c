/* tests/crypto/test_b64url.c: strict base64url (RFC 7515 §2, RFC 4648 §3.5, §5),
 * RFC 7636 Appendix A, SECURITY.md J23 cases, round trips at every length, and
 * the constant-time compare / UUIDv7 helpers of ct.h. */
#include <stdint.h>
#include <string.h>

#include "core/err.h"
#include "crypto/b64url.h"
#include "crypto/ct.h"
#include "tests/crypto/check.h"

static int dec(const char *s, uint8_t *out, size_t cap)
{
    return b64url_decode(s, strlen(s), out, cap);
}

static void test_rfc7636_a(void)
{
    static const uint8_t octets[] = { 3, 236, 255, 224, 193 };
    char enc[16];
    uint8_t out[16];
    int n = b64url_encode(octets, sizeof(octets), enc, sizeof(enc));
    CHECK(n == 7 && memcmp(enc, "A-z_4ME", 7) == 0);
    CHECK(dec("A-z_4ME", out, sizeof(out)) == 5 && memcmp(out, octets, 5) == 0);
    CHECK(dec("A-z_4ME=", out, sizeof(out)) == -TE_INVAL);
    CHECK(dec("A+z/4ME", out, sizeof(out)) == -TE_INVAL);
    CHECK(dec("A-z_4MF", out, sizeof(out)) == -TE_INVAL); /* non-zero unused bits */
}

/* J23: padding, '+', '/', whitespace, non-canonical bits, length ≡ 1 (mod 4). */
static void test_j23_rejects(void)
{
    static const char *bad[] = {
        "AA==", "AAA=", "AA=",    "A",     "AAAAA", "QUJ+",   "QUJ/",  "QU J",  "QUJ\n", "QU\rJ",
        "AB",   "AAB",  "AAAAAB", " QUJD", "QUJD ", "QUJD\t", "QUJD.", "QU\"J", "=",
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(dec(bad[i], out, sizeof(out)) == -TE_INVAL);
    }
    /* Every byte value outside the alphabet is refused in every position. */
    for (int c = 0; c < 256; c++) {
        char s[5] = "AAAA";
        int valid = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
        s[1] = (char)c;
        int rc = b64url_decode(s, 4, out, sizeof(out));
        CHECK(valid ? rc == 3 : rc == -TE_INVAL);
    }
    /* The canonical forms of the same lengths decode. */
    CHECK(dec("AA", out, sizeof(out)) == 1 && out[0] == 0);
    CHECK(dec("AAA", out, sizeof(out)) == 2);
    CHECK(dec("", out, sizeof(out)) == 0);
}

static void test_round_trip_every_length(void)
{
    uint8_t in[300];
    char enc[B64URL_ENCODED_LEN(300)];
    uint8_t out[300];
    for (size_t i = 0; i < sizeof(in); i++) {
        in[i] = (uint8_t)(i * 37 + 11);
    }
    for (size_t n = 0; n <= sizeof(in); n++) {
        int e = b64url_encode(in, n, enc, sizeof(enc));
        CHECK(e == (int)B64URL_ENCODED_LEN(n));
        int d = b64url_decode(enc, (size_t)e, out, sizeof(out));
        CHECK(d == (int)n && memcmp(in, out, n) == 0);
        CHECK(B64URL_DECODED_MAX((size_t)e) == n);
    }
}

static void test_bounds(void)
{
    uint8_t in[4] = { 1, 2, 3, 4 };
    char enc[8];
    uint8_t out[4];
    CHECK(b64url_encode(in, 4, enc, 5) == -TE_NOMEM); /* needs 6 */
    CHECK(b64url_encode(in, 4, enc, 6) == 6);
    CHECK(b64url_decode(enc, 6, out, 3) == -TE_NOMEM);
    CHECK(b64url_decode(enc, 6, out, 4) == 4);
    /* Malformed input reports -TE_INVAL even when the buffer is also too small. */
    CHECK(b64url_decode("AAAA!AAA", 8, out, 1) == -TE_INVAL);
    static char huge[B64URL_INPUT_MAX + 4];
    memset(huge, 'A', sizeof(huge));
    CHECK(b64url_decode(huge, sizeof(huge), out, sizeof(out)) == -TE_INVAL);
}

static void test_ct(void)
{
    uint8_t a[32] = { 0 };
    uint8_t b[32] = { 0 };
    CHECK(ct_memeq(a, b, sizeof(a)));
    b[31] = 1;
    CHECK(!ct_memeq(a, b, sizeof(a)));
    CHECK(ct_random_bytes(a, sizeof(a)) == 0);
    CHECK(ct_random_bytes(b, sizeof(b)) == 0);
    CHECK(!ct_memeq(a, b, sizeof(a))); /* 2^-256 chance of a false failure */

    uint8_t u1[CT_UUID_BYTES];
    uint8_t u2[CT_UUID_BYTES];
    char text[CT_UUID_TEXT_LEN + 1];
    uint64_t ms = 0x0189abcdef01ull;
    CHECK(ct_uuid7(ms, u1) == 0 && ct_uuid7(ms + 1, u2) == 0);
    CHECK(u1[6] >> 4 == 7 && (u1[8] & 0xc0) == 0x80);
    CHECK(memcmp(u1, u2, CT_UUID_BYTES) < 0); /* time-ordered */
    ct_uuid_format(u1, text);
    CHECK(strlen(text) == 36 && memcmp(text, "0189abcd-ef01-7", 15) == 0);
    CHECK(text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b');
}

int main(void)
{
    test_rfc7636_a();
    test_j23_rejects();
    test_round_trip_every_length();
    test_bounds();
    test_ct();
    return check_report("test_b64url");
}
