/* tests/crypto/vectors.h: reading the shared test vectors (TESSERA_VECTORS_DIR):
 * whole files, "```vector NAME" blocks of jose/rfc-vectors.md, JSON octet arrays
 * and hex strings. Test-only helpers; they abort on a missing file. */
#ifndef TESSERA_TESTS_CRYPTO_VECTORS_H
#define TESSERA_TESTS_CRYPTO_VECTORS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((unused)) static const char *vectors_dir(void)
{
    const char *dir = getenv("TESSERA_VECTORS_DIR");
    if (dir == NULL || dir[0] == '\0') {
        fprintf(stderr, "TESSERA_VECTORS_DIR is not set\n");
        exit(1);
    }
    return dir;
}

/* Reads <vectors>/<rel> into a malloc'd NUL-terminated buffer; *len its size. */
__attribute__((unused)) static char *vectors_read(const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", vectors_dir(), rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL) {
        *len = (size_t)n;
    }
    return buf;
}

/* The one-line value of block "```vector NAME" in md, copied into a static slot
 * (valid until the 16th next call). Aborts if absent. */
__attribute__((unused)) static const char *vectors_md(const char *md, const char *name)
{
    static char slots[16][4096];
    static int next;
    char marker[256];
    snprintf(marker, sizeof(marker), "```vector %s\n", name);
    const char *p = strstr(md, marker);
    if (p == NULL) {
        fprintf(stderr, "vector %s not found\n", name);
        exit(1);
    }
    p += strlen(marker);
    const char *end = strchr(p, '\n');
    size_t n = (size_t)(end - p);
    if (n >= sizeof(slots[0])) {
        exit(1);
    }
    char *slot = slots[next++ % 16];
    memcpy(slot, p, n);
    slot[n] = '\0';
    return slot;
}

/* "[1, 2, 3]" to bytes; returns the count. */
__attribute__((unused)) static size_t vectors_octets(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (*s != '\0' && n < cap) {
        while (*s == '[' || *s == ',' || *s == ' ') {
            s++;
        }
        if (*s == ']' || *s == '\0') {
            break;
        }
        char *end;
        out[n++] = (uint8_t)strtoul(s, &end, 10);
        s = end;
    }
    return n;
}

/* Lowercase or uppercase hex to bytes; returns the count, or (size_t)-1. */
__attribute__((unused)) static size_t vectors_hex(const char *s, uint8_t *out, size_t cap)
{
    size_t len = strlen(s);
    if (len % 2 != 0 || len / 2 > cap) {
        return (size_t)-1;
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return (size_t)-1;
        }
        out[i] = (uint8_t)v;
    }
    return len / 2;
}

#endif
