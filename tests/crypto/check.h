/* tests/crypto/check.h: the tiny assertion harness the crypto tests share. Each
 * CHECK counts a case; a failure prints where and makes the test exit 1. */
#ifndef TESSERA_TESTS_CRYPTO_CHECK_H
#define TESSERA_TESTS_CRYPTO_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_cases;
static int check_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_cases++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Prints the totals; returns the exit status (1 if any check failed or none ran). */
static inline int check_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_cases, check_failures);
    return check_failures == 0 && check_cases > 0 ? 0 : 1;
}

#endif
