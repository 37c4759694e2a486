/* core/precis.c: RFC 8265 UsernameCaseMapped and OpaqueString over GNU libunistring
 * (core/precis.h says what each does and refuses). The input is validated first (u8_check:
 * libunistring's other functions would turn invalid bytes into U+FFFD silently), mapped code
 * point by code point into a bounded work buffer, then case-mapped and normalised straight
 * into the caller's buffer. */
#include "core/precis.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "core/err.h"

/* The mapped input before case mapping and NFC: width mapping and space mapping never make
 * a code point's UTF-8 longer (<wide>/<narrow> targets: ASCII, Latin-1, or 3 bytes from 3;
 * a space becomes one byte), so the input's bound is the buffer's. */
#define PRECIS_WORK_MAX PRECIS_INPUT_MAX
#define PRECIS_SPACE 0x20u

_Static_assert(PRECIS_OUTPUT_MAX > PRECIS_WORK_MAX, "a result has room to grow");

/* The next code point of valid UTF-8 (checked by u8_check), and its length. */
static ucs4_t precis_next(const uint8_t *s, size_t left, size_t *used)
{
    ucs4_t cp = 0;
    int n = u8_mbtouc(&cp, s, left);
    assert(n > 0);
    *used = (size_t)n;
    return cp;
}

/* RFC 8265 §3.3.2 rule 1: a fullwidth or halfwidth character becomes its decomposition
 * mapping (one code point for every <wide> and <narrow> entry of UnicodeData.txt). */
static ucs4_t precis_width_map(ucs4_t cp)
{
    ucs4_t decomposition[UC_DECOMPOSITION_MAX_LENGTH];
    int tag = -1;
    int n = uc_decomposition(cp, &tag, decomposition);
    if (n == 1 && (tag == UC_DECOMP_WIDE || tag == UC_DECOMP_NARROW))
        return decomposition[0];
    return cp;
}

static bool precis_is_space(ucs4_t cp)
{
    return uc_is_general_category(cp, UC_CATEGORY_Zs);
}

/* Appends cp to work[*len..cap). False when it does not fit. */
static bool precis_put(uint8_t *work, size_t cap, size_t *len, ucs4_t cp)
{
    int n = u8_uctomb(work + *len, cp, (ptrdiff_t)(cap - *len));
    if (n <= 0)
        return false;
    *len += (size_t)n;
    return true;
}

/* Validates in and maps it code point by code point into work: width mapping for a username,
 * non-ASCII spaces to U+0020 for a password. 0 with *len, or -TE_INVAL. */
static int precis_map(const char *in, size_t len, bool username, uint8_t *work, size_t *out_len)
{
    const uint8_t *s = (const uint8_t *)in;
    if (len > PRECIS_INPUT_MAX || u8_check(s, len) != NULL)
        return -TE_INVAL;
    *out_len = 0;
    for (size_t i = 0; i < len;) {
        size_t used = 0;
        ucs4_t cp = precis_next(s + i, len - i, &used);
        if (username)
            cp = precis_width_map(cp);
        else if (cp >= 0x80 && precis_is_space(cp))
            cp = PRECIS_SPACE; /* RFC 8265 §4.2.2 rule 1 */
        if (!precis_put(work, PRECIS_WORK_MAX, out_len, cp))
            return -TE_INVAL; /* cannot happen: mapping never grows (PRECIS_WORK_MAX) */
        i += used;
    }
    return 0;
}

/* Trims leading and trailing spaces (Zs) of work[0..*len): the span that stays. */
static const uint8_t *precis_trim(const uint8_t *work, size_t *len)
{
    size_t start = 0, end = *len;
    while (start < end) {
        size_t used = 0;
        if (!precis_is_space(precis_next(work + start, end - start, &used)))
            break;
        start += used;
    }
    while (end > start) {
        ucs4_t cp = 0;
        const uint8_t *prev = u8_prev(&cp, work + end, work + start);
        assert(prev != NULL); /* valid UTF-8: a code point ends here */
        if (!precis_is_space(cp))
            break;
        end = (size_t)(prev - work);
    }
    *len = end - start;
    return work + start;
}

/* RFC 5892 §2.6 Exceptions (RFC 8264 §9.6) that overrule the general category: DISALLOWED
 * letters and marks (ARABIC TATWEEL, NKO LAJANYALAN, HANGUL tone marks, VERTICAL KANA REPEAT
 * marks, VERTICAL IDEOGRAPHIC ITERATION MARK)... */
static bool precis_exception_disallowed(ucs4_t cp)
{
    return cp == 0x0640 || cp == 0x07fa || cp == 0x302e || cp == 0x302f ||
           (cp >= 0x3031 && cp <= 0x3035) || cp == 0x303b;
}

/* ...and PVALID code points that are not letters or digits (ARABIC SIGN SINDHI AMPERSAND and
 * POSTPOSITION MEN, TIBETAN MARK INTERSYLLABIC TSHEG, IDEOGRAPHIC NUMBER ZERO). */
static bool precis_exception_valid(ucs4_t cp)
{
    return cp == 0x06fd || cp == 0x06fe || cp == 0x0f0b || cp == 0x3007;
}

/* RFC 8264 §9 IdentifierClass: PVALID when ASCII7 (0x21..0x7E, §9.11) or LetterDigits (Ll,
 * Lu, Lo, Lm, Nd, Mn, Mc: RFC 5892 §2.1) without a compatibility decomposition (HasCompat,
 * §9.17); everything else refused: controls, format characters, unassigned, spaces,
 * symbols, non-ASCII punctuation. CONTEXTJ/CONTEXTO code points are refused outright (no
 * context rules: none is needed for names typed on a login form). */
static bool precis_username_refuses(ucs4_t cp)
{
    if (cp < 0x80)
        return cp <= PRECIS_SPACE || cp == 0x7f;
    if (precis_exception_valid(cp))
        return false;
    bool letter_digit = uc_is_general_category(cp, UC_CATEGORY_Ll) ||
                        uc_is_general_category(cp, UC_CATEGORY_Lu) ||
                        uc_is_general_category(cp, UC_CATEGORY_Lo) ||
                        uc_is_general_category(cp, UC_CATEGORY_Lm) ||
                        uc_is_general_category(cp, UC_CATEGORY_Nd) ||
                        uc_is_general_category(cp, UC_CATEGORY_Mn) ||
                        uc_is_general_category(cp, UC_CATEGORY_Mc);
    if (!letter_digit || precis_exception_disallowed(cp))
        return true;
    ucs4_t decomposition[UC_DECOMPOSITION_MAX_LENGTH];
    int tag = -1;
    int n = uc_decomposition(cp, &tag, decomposition);
    return n > 0 && tag != UC_DECOMP_CANONICAL; /* HasCompat */
}

static bool precis_password_refuses(ucs4_t cp)
{
    return uc_is_general_category(cp, UC_CATEGORY_Cc); /* FreeformClass: Controls (§9.12) */
}

/* Every code point of out[0..len) passes; false at the first refused one. */
static bool precis_all_allowed(const uint8_t *out, size_t len, bool (*refuses)(ucs4_t cp))
{
    for (size_t i = 0; i < len;) {
        size_t used = 0;
        if (refuses(precis_next(out + i, len - i, &used)))
            return false;
        i += used;
    }
    return true;
}

/* Stores what libunistring returned: it wrote into out when out was large enough, else it
 * allocated (too long a result: freed and refused). */
static int precis_finish(uint8_t *result, size_t result_len, char *out, size_t cap, size_t *out_len)
{
    if (result == NULL)
        return -TE_NOMEM; /* ENOMEM inside libunistring */
    if (result != (uint8_t *)out) {
        free(result);
        return -TE_NOMEM;
    }
    assert(result_len < cap);
    out[result_len] = '\0';
    *out_len = result_len;
    return 0;
}

/* UsernameCaseMapped, with surrounding spaces trimmed after width mapping when trim (a
 * lookup), else left to be refused as spaces (a name being set). */
static int precis_username_profile(const char *in, size_t len, bool trim, char *out, size_t cap,
                                   size_t *out_len)
{
    assert(cap > 0);
    uint8_t work[PRECIS_WORK_MAX];
    size_t mapped = 0;
    *out_len = 0;
    out[0] = '\0';
    int rc = precis_map(in, len, true, work, &mapped);
    if (rc != 0)
        return rc;
    const uint8_t *name = trim ? precis_trim(work, &mapped) : work;
    if (mapped == 0)
        return -TE_INVAL; /* empty after mapping (RFC 8265 §3.3.2) */
    size_t result_len = cap - 1;
    /* RFC 8265 §3.3.2 rules 3 and 4: toLowerCase, then NFC, in one call. */
    uint8_t *result = u8_tolower(name, mapped, NULL, UNINORM_NFC, (uint8_t *)out, &result_len);
    rc = precis_finish(result, result_len, out, cap, out_len);
    if (rc == 0 && !precis_all_allowed((const uint8_t *)out, *out_len, precis_username_refuses))
        rc = -TE_INVAL;
    if (rc != 0) {
        out[0] = '\0';
        *out_len = 0;
    }
    return rc;
}

int precis_password(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    assert(cap > 0);
    uint8_t work[PRECIS_WORK_MAX];
    size_t mapped = 0;
    *out_len = 0;
    out[0] = '\0';
    int rc = precis_map(in, len, false, work, &mapped);
    if (rc == 0 && mapped == 0)
        rc = -TE_INVAL; /* RFC 8265 §4.2.2: empty is refused */
    if (rc == 0) {
        size_t result_len = cap - 1;
        uint8_t *result = u8_normalize(UNINORM_NFC, work, mapped, (uint8_t *)out, &result_len);
        rc = precis_finish(result, result_len, out, cap, out_len);
    }
    if (rc == 0 && !precis_all_allowed((const uint8_t *)out, *out_len, precis_password_refuses))
        rc = -TE_INVAL;
    if (rc != 0) {
        explicit_bzero(out, cap); /* a password refused leaves nothing behind */
        *out_len = 0;
    }
    explicit_bzero(work, sizeof(work));
    return rc;
}

int precis_username(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    return precis_username_profile(in, len, false, out, cap, out_len);
}

int precis_username_lookup(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    return precis_username_profile(in, len, true, out, cap, out_len);
}
