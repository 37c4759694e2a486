/* crypto/keyset.h: a tenant's signing keys and their lifecycle (DESIGN §4), in memory.
 *
 * States: NEXT (published in the JWKS, not yet signing), ACTIVE (signs; at most one),
 * RETIRED (no longer signs; verifies until retired_at + verify_window_s, the longest
 * token lifetime, then may be dropped), PUBLISHED (a verify-only key imported from
 * someone's JWKS). Every key in a set has a distinct kid; a set never mixes HS256 and
 * asymmetric keys (Wycheproof "MixedKeySet": a symmetric key next to public keys
 * invites alg confusion). Storage comes with the store module; this is the model. */
#ifndef TESSERA_CRYPTO_KEYSET_H
#define TESSERA_CRYPTO_KEYSET_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "crypto/jwk.h"

/* active + next + a few retired: rotation is weeks apart and tokens live minutes. */
#define KEYSET_KEYS_MAX 8
/* A JWKS document larger than this is refused before parsing. */
#define KEYSET_JWKS_MAX (KEYSET_KEYS_MAX * JWK_JSON_MAX)

enum keyset_state { KEYSET_NEXT, KEYSET_ACTIVE, KEYSET_RETIRED, KEYSET_PUBLISHED };

struct keyset_entry {
    struct jwk_key *key; /* owned by the set */
    enum keyset_state state;
    int64_t added_at;   /* Unix seconds */
    int64_t retired_at; /* when it stopped signing; 0 while NEXT or ACTIVE */
};

struct keyset {
    struct keyset_entry entries[KEYSET_KEYS_MAX];
    size_t n;
    int64_t verify_window_s; /* how long a retired key keeps verifying */
};

void keyset_init(struct keyset *set, int64_t verify_window_s);
/* Frees every key. */
void keyset_clear(struct keyset *set);

/* Adds key in state (NEXT, ACTIVE or PUBLISHED); the set owns it on success only.
 * -TE_INVAL: duplicate kid, symmetric/asymmetric mix, a second ACTIVE key, a
 * private-less key as ACTIVE/NEXT; -TE_FULL: no room. */
int keyset_add(struct keyset *set, struct jwk_key *key, enum keyset_state state, int64_t now);

/* The key that signs now, or NULL. */
const struct jwk_key *keyset_signing_key(const struct keyset *set);

/* The key with this kid that may verify at time now: ACTIVE, NEXT, PUBLISHED, or
 * RETIRED within the window. NULL otherwise (unknown kid: no fetch, no query). */
const struct jwk_key *keyset_find(const struct keyset *set, struct slice kid, int64_t now);

/* NEXT becomes ACTIVE and the old ACTIVE becomes RETIRED. -TE_INVAL without a NEXT. */
int keyset_rotate(struct keyset *set, int64_t now);

/* Drops RETIRED keys whose window has passed; returns how many. */
size_t keyset_prune(struct keyset *set, int64_t now);

/* JWKS of the keys that verify now (RFC 7517 §5), public members only. 0,
 * -TE_INVAL (symmetric set: never published) or -TE_NOMEM. */
int keyset_render_jwks(const struct keyset *set, int64_t now, struct buf *out);

/* Fills an empty set (a JWKS refresh builds a new set and swaps it in) with the
 * keys of {"keys":[...]} as PUBLISHED keys, all or nothing: any key refused
 * by jwk_import (alg taken from each JWK), a duplicate kid, a mixed set, a missing
 * kid refuses the whole document (-TE_INVAL); more than KEYSET_KEYS_MAX keys: -TE_FULL. */
int keyset_import_jwks(struct keyset *set, const char *json, size_t len, int64_t now);

#endif
