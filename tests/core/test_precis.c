/* tests/core/test_precis.c: the PRECIS profiles of core/precis.c (SECURITY P06, P07).
 * Proves: the P06 names (Alice, alice, fullwidth ａｌｉｃｅ; " alice " when looked up, refused
 * when set) normalise to one "alice" while Cyrillic-а "аlice" stays different; RFC 8265 §3.4's UsernameCaseMapped
 * examples and §4.3's OpaqueString examples give the RFC's verdicts; the P07 password "é"
 * typed as NFC and as NFD is one byte string; invalid UTF-8 (overlong, surrogate, truncated,
 * beyond U+10FFFF) is refused by both; the input bound and the output bound hold (refused,
 * nothing written past cap) and a result is itself normalised (idempotent). */
#include "core/precis.c"

#include <stdio.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        checks++;                                                                   \
        if (!(cond)) {                                                              \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

#define TEST_OUT_MAX 512

typedef int (*profile_fn)(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

/* profile(in) == expected, and the result normalises to itself. */
static bool maps_to(profile_fn profile, const char *in, const char *expected)
{
    char out[TEST_OUT_MAX], again[TEST_OUT_MAX];
    size_t len = 0, len2 = 0;
    if (profile(in, strlen(in), out, sizeof(out), &len) != 0)
        return false;
    if (len != strlen(expected) || memcmp(out, expected, len) != 0 || out[len] != '\0')
        return false;
    return profile(out, len, again, sizeof(again), &len2) == 0 && len2 == len &&
           memcmp(again, out, len) == 0;
}

static bool refused_n(profile_fn profile, const char *in, size_t n)
{
    char out[TEST_OUT_MAX];
    size_t len = 99;
    return profile(in, n, out, sizeof(out), &len) == -TE_INVAL && len == 0 && out[0] == '\0';
}

static bool refused(profile_fn profile, const char *in)
{
    return refused_n(profile, in, strlen(in));
}

/* SECURITY P06: the names of one account, and a confusable that is another. */
static void test_p06_usernames(void)
{
    CHECK(maps_to(precis_username, "Alice", "alice"));
    CHECK(maps_to(precis_username, "alice", "alice"));
    /* Surrounding spaces: refused where a name is set, trimmed where one is looked up. */
    CHECK(refused(precis_username, " alice "));
    CHECK(refused(precis_username, "alice\xe3\x80\x80"));   /* U+3000 width-maps to a space */
    CHECK(maps_to(precis_username_lookup, " alice ", "alice"));
    CHECK(maps_to(precis_username_lookup, "\xe3\x80\x80" "Alice\xc2\xa0", "alice"));
    CHECK(maps_to(precis_username_lookup, "\xef\xbd\x81lice", "alice"));
    CHECK(refused(precis_username_lookup, " al ice "));    /* inside: still refused */
    CHECK(refused(precis_username_lookup, " \xe3\x80\x80 "));  /* empty once trimmed */
    CHECK(maps_to(precis_username, "\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85",
                  "alice"));                                  /* fullwidth ａｌｉｃｅ */
    CHECK(maps_to(precis_username, "\xef\xbc\xa1LICE", "alice")); /* fullwidth Ａ + ASCII */
    /* Cyrillic а (U+0430): kept as typed, so not "alice" (confusables are not folded). */
    CHECK(maps_to(precis_username, "\xd0\xb0lice", "\xd0\xb0lice"));
    CHECK(maps_to(precis_username, "\xd0\x90lice", "\xd0\xb0lice")); /* Cyrillic А lowered */
    CHECK(maps_to(precis_username, "jos\x65\xcc\x81", "jos\xc3\xa9")); /* NFD é → NFC */
    CHECK(maps_to(precis_username, "JOS\xc3\x89", "jos\xc3\xa9"));
    CHECK(maps_to(precis_username, "\xef\xbd\xb1", "\xe3\x82\xa2")); /* halfwidth ｱ → ア */
    CHECK(refused(precis_username, "al ice"));                /* a space inside */
    CHECK(refused(precis_username, "al\xc2\xa0ice"));         /* NBSP inside */
    CHECK(refused(precis_username, "   "));
    CHECK(refused(precis_username, ""));
    CHECK(refused(precis_username, "ali\tce"));               /* control */
    CHECK(refused(precis_username, "ali\x7f" "ce"));          /* DEL */
    CHECK(refused(precis_username, "al\xe2\x80\x8bice"));     /* U+200B zero width space */
    CHECK(refused(precis_username, "al\xc2\xad" "ice"));      /* U+00AD soft hyphen (Cf) */
    CHECK(refused(precis_username, "\xef\xac\x81le"));        /* U+FB01 ligature: HasCompat */
    CHECK(refused(precis_username, "x\xc2\xb2"));             /* U+00B2 superscript two */
    CHECK(refused(precis_username, "ali\xee\x80\x80"));       /* U+E000 private use */
}

/* RFC 8265 §3.4, the UsernameCaseMapped column of the examples table. */
static void test_rfc8265_username_examples(void)
{
    CHECK(maps_to(precis_username, "juliet@example.com", "juliet@example.com"));
    CHECK(maps_to(precis_username, "fussball", "fussball"));
    CHECK(maps_to(precis_username, "fu\xc3\x9f" "ball", "fu\xc3\x9f" "ball")); /* ß kept */
    CHECK(maps_to(precis_username, "\xcf\x80", "\xcf\x80"));                  /* π */
    CHECK(maps_to(precis_username, "\xce\xa3", "\xcf\x83"));                  /* Σ → σ */
    CHECK(maps_to(precis_username, "\xcf\x83", "\xcf\x83"));                  /* σ */
    CHECK(maps_to(precis_username, "\xcf\x82", "\xcf\x82"));                  /* ς kept */
    CHECK(maps_to(precis_username, "\xe1\xbe\x88", "\xe1\xbe\x80"));          /* ᾈ → ᾀ */
    CHECK(refused(precis_username, "foo bar"));
    CHECK(refused(precis_username, "henry\xe2\x85\xa3"));                     /* henryⅣ */
    CHECK(refused(precis_username, "\xe2\x99\x9a"));                          /* ♚ */
    /* RFC 5892 §2.6 exceptions: U+3007 (Nl) is PVALID, U+0640 TATWEEL (Lm) is not. */
    CHECK(maps_to(precis_username, "a\xe3\x80\x87", "a\xe3\x80\x87"));
    CHECK(refused(precis_username, "a\xd9\x80" "b"));
}

/* SECURITY P07 and RFC 8265 §4.3's OpaqueString examples. */
static void test_p07_passwords(void)
{
    CHECK(maps_to(precis_password, "caf\xc3\xa9-longer", "caf\xc3\xa9-longer"));
    CHECK(maps_to(precis_password, "cafe\xcc\x81-longer", "caf\xc3\xa9-longer")); /* NFD → NFC */
    CHECK(maps_to(precis_password, "correct horse battery staple", "correct horse battery staple"));
    CHECK(maps_to(precis_password, "Correct Horse Battery Staple", "Correct Horse Battery Staple"));
    /* πßå, and "Jack of ♦s" */
    CHECK(maps_to(precis_password, "\xcf\x80\xc3\x9f\xc3\xa5", "\xcf\x80\xc3\x9f\xc3\xa5"));
    CHECK(maps_to(precis_password, "Jack of \xe2\x99\xa6s", "Jack of \xe2\x99\xa6s"));
    CHECK(maps_to(precis_password, "Foo\xe1\x9a\x80" "Bar", "Foo Bar"));    /* OGHAM SPACE MARK */
    CHECK(maps_to(precis_password, "a\xc2\xa0" "b\xe3\x80\x80" "c", "a b c")); /* NBSP, U+3000 */
    CHECK(maps_to(precis_password, "\xef\xbd\x81" "B", "\xef\xbd\x81" "B")); /* no width/case map */
    CHECK(maps_to(precis_password, " pad ", " pad "));                      /* spaces kept */
    CHECK(refused(precis_password, ""));
    CHECK(refused(precis_password, "my cat is a \tby"));                   /* control */
    CHECK(refused(precis_password, "bell\x07"));
}

static void test_invalid_utf8(void)
{
    static const char *const bad[] = {
        "\xc0\xaf",             /* overlong '/' */
        "\xe0\x80\xaf",         /* overlong, 3 bytes */
        "\xed\xa0\x80",         /* U+D800, a surrogate */
        "\xf4\x90\x80\x80",     /* beyond U+10FFFF */
        "abc\xc3",              /* truncated */
        "\x80" "abc",           /* a lone continuation byte */
        "\xff",
        "caf\xe9",              /* Latin-1 é */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(refused(precis_username, bad[i]));
        CHECK(refused(precis_password, bad[i]));
    }
    CHECK(refused_n(precis_password, "pass\0word", 9)); /* NUL is a control (P09 holds too) */
    CHECK(refused_n(precis_username, "ali\0ce", 6));
}

static void test_bounds(void)
{
    static char big[PRECIS_INPUT_MAX + 2];
    static char out[PRECIS_OUTPUT_MAX];
    size_t len = 0;
    memset(big, 'a', sizeof(big) - 1);
    CHECK(precis_password(big, PRECIS_INPUT_MAX, out, sizeof(out), &len) == 0);
    CHECK(len == PRECIS_INPUT_MAX);
    CHECK(precis_password(big, PRECIS_INPUT_MAX + 1, out, sizeof(out), &len) == -TE_INVAL);
    CHECK(precis_username(big, PRECIS_INPUT_MAX + 1, out, sizeof(out), &len) == -TE_INVAL);
    /* The result must fit cap - 1 bytes and a NUL; nothing is written past cap. */
    char small[8];
    memset(small, 'Z', sizeof(small));
    CHECK(precis_username("abcdefg", 7, small, 8, &len) == 0 && len == 7 && small[7] == '\0');
    char guard[16];
    memset(guard, 'Z', sizeof(guard));
    CHECK(precis_username("abcdefgh", 8, guard, 8, &len) == -TE_NOMEM && len == 0);
    CHECK(guard[8] == 'Z' && guard[0] == '\0');
    memset(guard, 'Z', sizeof(guard));
    CHECK(precis_password("abcdefgh", 8, guard, 8, &len) == -TE_NOMEM && len == 0);
    CHECK(guard[8] == 'Z');
    /* Growth: U+0130 (2 bytes) lowers to i + U+0307 (3 bytes). */
    CHECK(maps_to(precis_username, "\xc4\xb0", "i\xcc\x87"));
    memset(guard, 'Z', sizeof(guard));
    CHECK(precis_username("\xc4\xb0", 2, guard, 3, &len) == -TE_NOMEM);
    CHECK(guard[3] == 'Z');
}

int main(void)
{
    test_p06_usernames();
    test_rfc8265_username_examples();
    test_p07_passwords();
    test_invalid_utf8();
    test_bounds();
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
