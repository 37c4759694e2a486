/* tests/auth/test_session_owner.c: an owner shard's table of sessions with a rotation running
 * (auth/session_owner.c; the rotations themselves run end to end in
 * tests/integration/test_refresh.py).
 *
 * Proves:
 *  - a key added is found until removed, and never after; an unknown key is never found;
 *  - removal keeps every other key findable whatever the order, with keys whose home slots
 *    collide, neighbour one another, and wrap past the table's last slot (the probe runs
 *    Algorithm R closes up);
 *  - the table refuses a key past SESSION_BUSY_FILL_MAX (a 503 for that rotation) and takes
 *    keys again once some are removed; emptied, it holds nothing. */
#include "auth/session_owner.c"

#include <assert.h>
#include <stdio.h>

#define TEST_KEYS 1500 /* under SESSION_BUSY_FILL_MAX (2,048) */
#define TEST_ROUNDS 4

/* A key whose home slot is `home`; `n` tells keys of one home apart (the low 32 bits). */
static uint64_t key_at(size_t home, uint32_t n)
{
    return (uint64_t)home << 32 | ((uint64_t)n << 1) | 1;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13; /* xorshift64 */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Homes crowded into a few runs: the end of the table (they wrap), its start, and one slot. */
static uint64_t crowded_key(uint32_t i)
{
    static const size_t homes[] = { AUTH_SESSION_BUSY_SLOTS - 3, AUTH_SESSION_BUSY_SLOTS - 1, 0, 1, 7, 7, 7, 900 };
    size_t home = homes[i % (sizeof(homes) / sizeof(homes[0]))];
    if (i % 3 == 0)
        home = rng_next() & SESSION_BUSY_MASK; /* and some anywhere */
    return key_at(home, i);
}

static void check_all(struct auth_session_owner *o, const uint64_t *keys, const bool *present, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct session_busy *slot = busy_find(o, keys[i]);
        assert(present[i] ? slot != NULL && slot->key == keys[i] : slot == NULL);
    }
}

static void test_add_remove(void)
{
    static uint64_t keys[TEST_KEYS];
    static bool present[TEST_KEYS];
    for (int round = 0; round < TEST_ROUNDS; round++) {
        struct auth_session_owner *o = auth_session_owner_create();
        assert(o != NULL);
        for (uint32_t i = 0; i < TEST_KEYS; i++) {
            keys[i] = crowded_key(i + (uint32_t)round * TEST_KEYS);
            assert(busy_find(o, keys[i]) == NULL);
            assert(busy_add(o, keys[i]) != NULL);
            present[i] = true;
        }
        assert(o->used == TEST_KEYS);
        check_all(o, keys, present, TEST_KEYS);
        /* Remove in a random order, checking every key after each of the first removals and
         * every 50th later (the whole check is quadratic). */
        for (size_t left = TEST_KEYS, step = 0; left > 0; left--, step++) {
            size_t i = rng_next() % TEST_KEYS;
            while (!present[i])
                i = (i + 1) % TEST_KEYS;
            busy_remove(o, busy_find(o, keys[i]));
            present[i] = false;
            if (step < 200 || step % 50 == 0)
                check_all(o, keys, present, TEST_KEYS);
        }
        assert(o->used == 0);
        for (size_t s = 0; s < AUTH_SESSION_BUSY_SLOTS; s++)
            assert(o->slots[s].key == 0);
        auth_session_owner_destroy(o);
    }
}

static void test_full(void)
{
    struct auth_session_owner *o = auth_session_owner_create();
    assert(o != NULL);
    for (uint32_t i = 0; i < SESSION_BUSY_FILL_MAX; i++)
        assert(busy_add(o, key_at(i * 2 % AUTH_SESSION_BUSY_SLOTS, i)) != NULL);
    uint64_t extra = key_at(5, 99999);
    assert(busy_add(o, extra) == NULL); /* full: that rotation answers 503 */
    assert(busy_find(o, extra) == NULL);
    busy_remove(o, busy_find(o, key_at(0, 0)));
    assert(busy_add(o, extra) != NULL);
    assert(busy_find(o, extra) != NULL && busy_find(o, key_at(0, 0)) == NULL);
    auth_session_owner_destroy(o);
}

int main(void)
{
    test_add_remove();
    test_full();
    printf("test_session_owner: ok\n");
    return 0;
}
