/* crypto/keyset.c: see keyset.h. */
#include "crypto/keyset.h"

#include <assert.h>
#include <string.h>

#include <jansson.h>

#include "core/err.h"

void keyset_init(struct keyset *set, int64_t verify_window_s)
{
    assert(set != NULL && verify_window_s >= 0);
    memset(set, 0, sizeof(*set));
    set->verify_window_s = verify_window_s;
}

void keyset_clear(struct keyset *set)
{
    for (size_t i = 0; i < set->n; i++) {
        jwk_free(set->entries[i].key);
    }
    set->n = 0;
}

static struct keyset_entry *keyset_by_state(struct keyset *set, enum keyset_state state)
{
    for (size_t i = 0; i < set->n; i++) {
        if (set->entries[i].state == state) {
            return &set->entries[i];
        }
    }
    return NULL;
}

int keyset_add(struct keyset *set, struct jwk_key *key, enum keyset_state state, int64_t now)
{
    assert(set != NULL && key != NULL && state != KEYSET_RETIRED);
    if (set->n == KEYSET_KEYS_MAX) {
        return -TE_FULL;
    }
    if (state != KEYSET_PUBLISHED && !jwk_has_private(key)) {
        return -TE_INVAL;
    }
    if (state == KEYSET_ACTIVE && keyset_by_state(set, KEYSET_ACTIVE) != NULL) {
        return -TE_INVAL;
    }
    for (size_t i = 0; i < set->n; i++) {
        const struct jwk_key *other = set->entries[i].key;
        if (strcmp(jwk_kid(other), jwk_kid(key)) == 0 ||
            jwk_is_symmetric(other) != jwk_is_symmetric(key)) {
            return -TE_INVAL;
        }
    }
    set->entries[set->n++] = (struct keyset_entry){
        .key = key,
        .state = state,
        .added_at = now,
        .retired_at = 0,
    };
    return 0;
}

const struct jwk_key *keyset_signing_key(const struct keyset *set)
{
    const struct keyset_entry *e = keyset_by_state((struct keyset *)set, KEYSET_ACTIVE);
    return e != NULL ? e->key : NULL;
}

static bool keyset_verifies(const struct keyset *set, const struct keyset_entry *e, int64_t now)
{
    if (e->state != KEYSET_RETIRED) {
        return true;
    }
    return now < e->retired_at + set->verify_window_s;
}

const struct jwk_key *keyset_find(const struct keyset *set, struct slice kid, int64_t now)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct keyset_entry *e = &set->entries[i];
        if (slice_eq_cstr(kid, jwk_kid(e->key))) {
            return keyset_verifies(set, e, now) ? e->key : NULL;
        }
    }
    return NULL;
}

int keyset_rotate(struct keyset *set, int64_t now)
{
    struct keyset_entry *next = keyset_by_state(set, KEYSET_NEXT);
    if (next == NULL) {
        return -TE_INVAL;
    }
    struct keyset_entry *active = keyset_by_state(set, KEYSET_ACTIVE);
    if (active != NULL) {
        active->state = KEYSET_RETIRED;
        active->retired_at = now;
    }
    next->state = KEYSET_ACTIVE;
    return 0;
}

size_t keyset_prune(struct keyset *set, int64_t now)
{
    size_t kept = 0;
    size_t dropped = 0;
    for (size_t i = 0; i < set->n; i++) {
        struct keyset_entry *e = &set->entries[i];
        if (!keyset_verifies(set, e, now)) {
            jwk_free(e->key);
            dropped++;
            continue;
        }
        set->entries[kept++] = *e;
    }
    set->n = kept;
    return dropped;
}

int keyset_render_jwks(const struct keyset *set, int64_t now, struct buf *out)
{
    const struct jwk_key *keys[KEYSET_KEYS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (keyset_verifies(set, &set->entries[i], now)) {
            keys[n++] = set->entries[i].key;
        }
    }
    return jwk_set_render(keys, n, out);
}

static int keyset_import_one(struct keyset *set, const json_t *jwk, int64_t now)
{
    char *text = json_dumps(jwk, JSON_COMPACT);
    struct jwk_key *key = NULL;
    int rc = text == NULL ? -TE_NOMEM : jwk_import(text, strlen(text), JWK_ALG_UNSET, &key);
    free(text);
    if (rc == 0 && json_object_get(jwk, "kid") == NULL) {
        rc = -TE_INVAL; /* tokens name their key; a key without kid cannot be chosen */
    }
    if (rc == 0) {
        rc = keyset_add(set, key, KEYSET_PUBLISHED, now);
    }
    if (rc < 0) {
        jwk_free(key);
    }
    return rc;
}

int keyset_import_jwks(struct keyset *set, const char *json, size_t len, int64_t now)
{
    assert(set != NULL && json != NULL);
    if (set->n != 0 || len > KEYSET_JWKS_MAX) {
        return -TE_INVAL;
    }
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *keys = json_object_get(root, "keys");
    int rc = json_is_array(keys) && json_array_size(keys) > 0 ? 0 : -TE_INVAL;
    struct keyset staged;
    keyset_init(&staged, set->verify_window_s);
    for (size_t i = 0; rc == 0 && i < json_array_size(keys); i++) {
        rc = keyset_import_one(&staged, json_array_get(keys, i), now);
    }
    json_decref(root);
    if (rc == 0) {
        *set = staged; /* all or nothing: the set changes only when every key passed */
    } else {
        keyset_clear(&staged);
    }
    return rc;
}
