/* core/cidr.h: IP addresses and address ranges (RFC 4632 CIDR notation, RFC 4291 §2.3 for
 * IPv6 prefixes) as the configuration names them and the HTTP layer matches peers against
 * them: TESSERA_TRUSTED_PROXIES, whose X-Forwarded-For is believed (proto/http_server.c). */
#ifndef TESSERA_CORE_CIDR_H
#define TESSERA_CORE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CIDR_ADDR_BYTES 16     /* an IPv6 address; an IPv4 one uses the first 4 */
#define CIDR_TEXT_BYTES_MAX 64 /* the longest range text parsed: an IPv6 address and /128 */

struct cidr_addr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bytes[CIDR_ADDR_BYTES];
};

struct cidr {
    struct cidr_addr addr; /* the bits past the prefix are zero */
    uint8_t bits;          /* the prefix length: 0-32 (IPv4), 0-128 (IPv6) */
};

/* One address as text ("192.0.2.1", "2001:db8::1"; no brackets, no port, no zone). 0, or -1
 * when text[0..len) is not one. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is taken as the
 * IPv4 address, as a dual-stack listener reports an IPv4 peer. */
int cidr_addr_parse(const char *text, size_t len, struct cidr_addr *out);

/* An address or a range ("10.0.0.0/8", "2001:db8::/32"; a bare address is a /32 or /128).
 * 0, or -1 when it is neither, or when bits are set past the prefix. */
int cidr_parse(const char *text, size_t len, struct cidr *out);

/* Whether addr lies in one of the count ranges. */
bool cidr_match(const struct cidr *ranges, size_t count, const struct cidr_addr *addr);

#endif
