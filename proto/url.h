/* proto/url.h: percent-decoding (RFC 3986 §2.1) of paths, query strings and
 * application/x-www-form-urlencoded bodies. Each decoder runs exactly once over
 * its input: "%252e" decodes to "%2e", never to ".". No allocation: output goes
 * to a caller buffer at least as long as the input. */
#ifndef TESSERA_PROTO_URL_H
#define TESSERA_PROTO_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/slice.h"

/* Decodes one path segment (the caller splits on '/' before decoding, so an
 * encoded "%2F" can never create a segment). Rejects (-1) a malformed escape
 * ("%zz", a trailing "%"), an encoded NUL or control byte, and an encoded '/'.
 * Returns the decoded length. */
int url_decode_path_segment(struct slice in, char *out);

/* Decodes a form/query component: '+' is a space, escapes as above; rejects a
 * malformed escape and an encoded NUL. Returns the decoded length or -1. */
int url_decode_form_component(struct slice in, char *out);

/* Iterates "k=v&k2=v2" (query string or form body) without decoding:
 * *pos starts at 0; returns true with the raw (still encoded) key and value of
 * the next pair, false at the end. Empty pairs ("a=1&&b=2") are skipped; a pair
 * without '=' has an empty value. */
bool url_form_next(struct slice in, size_t *pos, struct slice *key, struct slice *value);

/* Finds key (compared after decoding) in a query string or form body and decodes
 * its first value into out (capacity out_cap). Returns the decoded length, -1 when
 * absent, -2 when malformed or longer than out_cap. */
int url_form_get(struct slice in, const char *key, char *out, size_t out_cap);

#endif
