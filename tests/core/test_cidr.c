/* tests/core/test_cidr.c: addresses and ranges of TESSERA_TRUSTED_PROXIES (core/cidr.h), and
 * the variable itself (core/config.c): IPv4, IPv6, IPv4-mapped IPv6 taken as IPv4, prefixes
 * on and off byte boundaries, every malformed form refused, and the list's bound. */
#include "core/cidr.h"
#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tests/crypto/check.h"

static int parse_range(const char *text, struct cidr *out)
{
    return cidr_parse(text, strlen(text), out);
}

/* Whether address lies in range (both well-formed: a malformed one fails the check). */
static bool in_range(const char *range, const char *address)
{
    struct cidr r;
    struct cidr_addr a;
    bool ok = parse_range(range, &r) == 0 && cidr_addr_parse(address, strlen(address), &a) == 0;
    CHECK(ok);
    return ok && cidr_match(&r, 1, &a);
}

static void test_addresses(void)
{
    struct cidr_addr a;
    CHECK(cidr_addr_parse("192.0.2.1", 9, &a) == 0 && a.family == AF_INET && a.bytes[0] == 192 && a.bytes[3] == 1);
    CHECK(cidr_addr_parse("2001:db8::1", 11, &a) == 0 && a.family == AF_INET6 && a.bytes[0] == 0x20 &&
          a.bytes[15] == 1);
    CHECK(cidr_addr_parse("::ffff:192.0.2.1", 16, &a) == 0 && a.family == AF_INET && a.bytes[0] == 192);
    /* Only the first len bytes count: the text need not end there. */
    CHECK(cidr_addr_parse("10.1.2.3, 10.9.9.9", 8, &a) == 0 && a.bytes[3] == 3);
    static const char *const bad[] = {
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4:80", "[::1]", "::1%eth0", "01.2.3.4x", " 1.2.3.4",
        "unknown", "1.2.3.4/8", "2001:db8:::1", "0x7f.0.0.1",
        "aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa", /* longer than any address text */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(cidr_addr_parse(bad[i], strlen(bad[i]), &a) == -1);
}

static void test_ranges(void)
{
    struct cidr r;
    CHECK(parse_range("10.0.0.0/8", &r) == 0 && r.bits == 8 && r.addr.family == AF_INET);
    CHECK(parse_range("192.0.2.7", &r) == 0 && r.bits == 32);
    CHECK(parse_range("2001:db8::/32", &r) == 0 && r.bits == 32 && r.addr.family == AF_INET6);
    CHECK(parse_range("::1", &r) == 0 && r.bits == 128);
    CHECK(parse_range("0.0.0.0/0", &r) == 0 && r.bits == 0);
    static const char *const bad[] = {
        "10.0.0.1/8", /* bits past the prefix */
        "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "10.0.0.0/0008",
        "/8", "10.0.0.0//8", "2001:db8::1/64",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(parse_range(bad[i], &r) == -1);

    CHECK(in_range("10.0.0.0/8", "10.255.1.2"));
    CHECK(!in_range("10.0.0.0/8", "11.0.0.1"));
    CHECK(in_range("172.16.0.0/12", "172.31.255.255"));
    CHECK(!in_range("172.16.0.0/12", "172.32.0.0"));
    CHECK(in_range("192.0.2.7", "192.0.2.7"));
    CHECK(!in_range("192.0.2.7", "192.0.2.8"));
    CHECK(in_range("2001:db8::/32", "2001:db8:ffff::1"));
    CHECK(!in_range("2001:db8::/32", "2001:db9::1"));
    CHECK(in_range("0.0.0.0/0", "203.0.113.9"));
    CHECK(!in_range("0.0.0.0/0", "::1"));            /* families never mix */
    CHECK(in_range("127.0.0.0/8", "::ffff:127.0.0.1")); /* a dual-stack peer's IPv4 */
    CHECK(!in_range("::/0", "127.0.0.1"));
}

static int load(const char *value, struct config *cfg, char *text, size_t cap)
{
    setenv("TESSERA_TRUSTED_PROXIES", value, 1);
    FILE *err = fmemopen(text, cap, "w");
    int bad = config_load(cfg, err);
    fclose(err);
    return bad;
}

static void test_config_variable(void)
{
    static struct config cfg;
    char text[1024];
    unsetenv("TESSERA_TRUSTED_PROXIES");
    CHECK(config_load(&cfg, stderr) == 0 && cfg.trusted_proxies_count == 0);
    CHECK(load("127.0.0.1, 10.0.0.0/8,2001:db8::/32", &cfg, text, sizeof(text)) == 0 &&
          cfg.trusted_proxies_count == 3 && cfg.trusted_proxies[1].bits == 8);
    CHECK(load("", &cfg, text, sizeof(text)) == 0 && cfg.trusted_proxies_count == 0);
    memset(text, 0, sizeof(text));
    CHECK(load("127.0.0.1,10.0.0.1/8", &cfg, text, sizeof(text)) == 1 && strstr(text, "TESSERA_TRUSTED_PROXIES"));
    char many[CONFIG_TRUSTED_PROXIES_MAX * 16 + 16] = "";
    for (int i = 0; i <= CONFIG_TRUSTED_PROXIES_MAX; i++) /* one too many */
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.%d.1,", i);
    memset(text, 0, sizeof(text));
    CHECK(load(many, &cfg, text, sizeof(text)) == 1 && strstr(text, "at most 32"));
    unsetenv("TESSERA_TRUSTED_PROXIES");
}

int main(void)
{
    test_addresses();
    test_ranges();
    test_config_variable();
    return check_report("test_cidr");
}
