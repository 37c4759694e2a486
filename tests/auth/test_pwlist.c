/* tests/auth/test_pwlist.c: the common-password list (auth/pwlist.c, NIST SP 800-63B §5.1.1.2).
 *
 * Proves: the embedded list is Openwall's (thousands of entries), sorted bytewise without
 * duplicates and in lower case, so the binary search finds every entry; the most common
 * passwords are found whatever their ASCII case; a password one character off, longer than any
 * entry, empty, or with a NUL is not "common"; a search for every entry finds it. */
#include "auth/pwlist.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define TEST_ENTRIES_MIN 3000 /* Openwall's password.lst holds about 3,400 distinct ones */

static bool test_common(const char *pw)
{
    return pwlist_is_common(pw, strlen(pw));
}

static void test_list_shape(void)
{
    assert(pwlist_count >= TEST_ENTRIES_MIN);
    for (size_t i = 0; i < pwlist_count; i++) {
        const char *w = pwlist_words[i];
        assert(strlen(w) > 0 && strlen(w) <= pwlist_longest);
        for (const char *c = w; *c; c++)
            assert(!(*c >= 'A' && *c <= 'Z'));
        assert(i == 0 || strcmp(pwlist_words[i - 1], w) < 0); /* sorted, no duplicates */
        assert(pwlist_is_common(w, strlen(w)));
    }
}

int main(void)
{
    test_list_shape();
    assert(test_common("password") && test_common("PASSWORD") && test_common("PassWord"));
    assert(test_common("123456") && test_common("12345678") && test_common("iloveyou"));
    assert(test_common("qwerty") && test_common("baseball"));
    assert(!test_common("password!x") && !test_common("passwor") && !test_common("12345678x"));
    assert(!test_common("correct horse battery staple")); /* longer than any entry */
    assert(!test_common(""));
    assert(!pwlist_is_common("password\0", 9)); /* a NUL is never a match */
    printf("test_pwlist: %zu common passwords, ok\n", pwlist_count);
    return 0;
}
