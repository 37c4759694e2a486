/* auth/pwlist.c: a binary search of the embedded common-password list (auth/pwlist.h). */
#include "auth/pwlist.h"

#include <stdlib.h>
#include <string.h>

/* Longer than any entry: a password this long cannot be on the list (checked at build:
 * embed_common_passwords.py writes pwlist_longest). */
#define PWLIST_CANDIDATE_MAX 64

static int pwlist_compare(const void *key, const void *entry)
{
    return strcmp(key, *(const char *const *)entry);
}

bool pwlist_is_common(const char *pw, size_t len)
{
    if (len == 0 || len > pwlist_longest || len >= PWLIST_CANDIDATE_MAX)
        return false;
    char lower[PWLIST_CANDIDATE_MAX];
    for (size_t i = 0; i < len; i++) {
        char c = pw[i];
        if (c == '\0')
            return false; /* never on the list; the caller refuses NUL anyway */
        lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    lower[len] = '\0';
    return bsearch(lower, pwlist_words, pwlist_count, sizeof(pwlist_words[0]), pwlist_compare) != NULL;
}
