/* auth/revoked.c: each shard's copy of the revocation set, and DESIGN §1's protocol that
 * keeps it complete.
 *
 * The set: an open-addressing table of 64-bit keys (XXH3 of tenant id, kind and value)
 * with the revoked token's exp, read with plain loads on the shard that owns it; no lock,
 * no shared atomic. It grows by doubling up to AUTH_REVOKED_MAX (DESIGN §6: 4M entries per
 * shard), dropping expired entries on every rebuild; full of live entries, it evicts the
 * one that expires first.
 *
 * How a revocation reaches it: the revoking shard inserts the row (getting its seq),
 * applies it, and sends it to every other local shard over the rings (this instance:
 * within a ring hop); then PUBLISHes the seq on the events channel, and every shard of every
 * instance reads "seq > last" from the primary. The same read runs at start (the shard is
 * not ready until it has caught up), every AUTH_REVOKED_POLL_MS (so a lost message or a
 * Redis outage delays a revocation by at most that, SECURITY F04/F06) and after every
 * event. Applying a revocation twice is harmless (F07). */
#include "auth/auth_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "core/log.h"

#define REVOKED_INITIAL_SLOTS 4096 /* a power of two; most tenants revoke little */
#define REVOKED_NOT_BEFORE_SLOTS 256 /* a power of two: one entry per logout-all, not per session */
#define REVOKED_CATCHUP_ROWS 1000  /* the statement's LIMIT: a full page asks for the next */

/* One open-addressing table: keys (0: an empty slot) with the moment each entry may be
 * dropped and, in the not-before table only, the moment before which the subject's tokens
 * were issued. */
struct revoked_table {
    uint64_t *keys;
    int64_t *until;   /* dropped once until + the leeway has passed */
    int64_t *nb;      /* NULL in the set; the not-before of each entry in the other */
    uint64_t *stamp;  /* NULL in the set; in the other, not_before_adds when the entry was last
                       * applied (auth_revoked_not_before_stamp) */
    size_t cap;       /* a power of two */
    size_t count;
};

struct auth_revoked {
    struct auth *auth;
    struct loop *loop;
    struct revoked_table set;        /* jti, sid, client: until = the revoked token's exp */
    struct revoked_table not_before; /* sub: until = the last exp a token issued before nb
                                      * can carry */
    uint64_t not_before_adds; /* not-befores applied: auth_revoked_not_before_epoch */
    int64_t last_seq;
    bool caught_up;   /* the first catch-up completed: the shard may report ready */
    bool in_flight;   /* a catch-up query is running */
    bool again;       /* an event came while it ran: read once more */
    struct pg_query q;
    char seq_param[24];
    struct loop_timer poll;
};

/* Appends s to buf at *n, then a NUL separator when sep, cut at the buffer's end. */
static void revoked_key_part(char *buf, size_t cap, size_t *n, const char *s, bool sep)
{
    size_t len = strnlen(s, cap - *n);
    memcpy(buf + *n, s, len);
    *n += len;
    if (sep && *n < cap)
        buf[(*n)++] = '\0';
}

/* On the hot path (three or four per verification, none per cached check): plain copies, no
 * formatting. */
uint64_t auth_revoked_key(const char *tenant_id, const char *kind, const char *value)
{
    char buf[CT_UUID_TEXT_LEN + 8 + 260]; /* values are bounded by the schema (256) */
    size_t n = 0;
    revoked_key_part(buf, sizeof(buf), &n, tenant_id, true);
    revoked_key_part(buf, sizeof(buf), &n, kind, true);
    revoked_key_part(buf, sizeof(buf), &n, value, false);
    return XXH3_64bits(buf, n) | 1; /* never 0, the empty slot */
}

/* ---- The tables -------------------------------------------------------------------------- */

static int revoked_table_init(struct revoked_table *t, size_t cap, bool with_nb)
{
    t->cap = cap;
    t->count = 0;
    t->keys = calloc(cap, sizeof(*t->keys));
    t->until = calloc(cap, sizeof(*t->until));
    t->nb = with_nb ? calloc(cap, sizeof(*t->nb)) : NULL;
    t->stamp = with_nb ? calloc(cap, sizeof(*t->stamp)) : NULL;
    return t->keys == NULL || t->until == NULL || (with_nb && (t->nb == NULL || t->stamp == NULL)) ? -TE_NOMEM
                                                                                                 : 0;
}

static void revoked_table_free(struct revoked_table *t)
{
    free(t->keys);
    free(t->until);
    free(t->nb);
    free(t->stamp);
}

static size_t revoked_find(const struct revoked_table *t, uint64_t key)
{
    size_t mask = t->cap - 1;
    size_t i = (size_t)(key >> 7) & mask;
    while (t->keys[i] != 0 && t->keys[i] != key)
        i = (i + 1) & mask;
    return i;
}

static bool revoked_live(const struct revoked_table *t, size_t i, int64_t now)
{
    return t->keys[i] != 0 && t->until[i] + JWT_LEEWAY_DEFAULT_S > now;
}

bool auth_revoked_has(const struct auth_revoked *r, uint64_t key, int64_t now)
{
    if (r == NULL || r->set.count == 0)
        return false;
    size_t i = revoked_find(&r->set, key);
    return r->set.keys[i] == key && revoked_live(&r->set, i, now);
}

bool auth_revoked_before(const struct auth_revoked *r, uint64_t key, int64_t iat, int64_t now)
{
    if (r == NULL || r->not_before.count == 0)
        return false;
    size_t i = revoked_find(&r->not_before, key);
    return r->not_before.keys[i] == key && revoked_live(&r->not_before, i, now) &&
           iat < r->not_before.nb[i];
}

uint64_t auth_revoked_not_before_stamp(const struct auth_revoked *r, uint64_t key, int64_t now)
{
    if (r == NULL || r->not_before.count == 0)
        return 0;
    size_t i = revoked_find(&r->not_before, key);
    bool live = r->not_before.keys[i] == key && revoked_live(&r->not_before, i, now);
    return live ? r->not_before.stamp[i] : 0;
}

uint64_t auth_revoked_not_before_epoch(const struct auth_revoked *r)
{
    return r == NULL ? 0 : r->not_before_adds;
}

/* Moves the live entries into a table of cap slots (expired ones, and `skip`, are dropped). */
static int revoked_rebuild(struct revoked_table *t, size_t cap, int64_t now, size_t skip)
{
    struct revoked_table old = *t;
    if (revoked_table_init(t, cap, old.nb != NULL) != 0) {
        revoked_table_free(t);
        *t = old;
        return -TE_NOMEM;
    }
    for (size_t i = 0; i < old.cap; i++) {
        if (i == skip || !revoked_live(&old, i, now))
            continue;
        size_t j = revoked_find(t, old.keys[i]);
        t->keys[j] = old.keys[i];
        t->until[j] = old.until[i];
        if (t->nb != NULL) {
            t->nb[j] = old.nb[i];
            t->stamp[j] = old.stamp[i];
        }
        t->count++;
    }
    revoked_table_free(&old);
    return 0;
}

/* Room for one more entry, keeping the load under one half. */
static int revoked_make_room(struct revoked_table *t, int64_t now)
{
    if ((t->count + 1) * 2 <= t->cap)
        return 0;
    if (t->cap < AUTH_REVOKED_MAX)
        return revoked_rebuild(t, t->cap * 2, now, SIZE_MAX);
    int rc = revoked_rebuild(t, t->cap, now, SIZE_MAX); /* full size: drop the expired */
    if (rc != 0 || (t->count + 1) * 2 <= t->cap)
        return rc;
    size_t nearest = SIZE_MAX; /* still full of live entries: evict the nearest until */
    for (size_t i = 0; i < t->cap; i++) {
        if (t->keys[i] != 0 && (nearest == SIZE_MAX || t->until[i] < t->until[nearest]))
            nearest = i;
    }
    log_msg(LOG_WARN, "revocation set full: the entry expiring first was evicted", NULL);
    return revoked_rebuild(t, t->cap, now, nearest);
}

/* The slot of key in t, made when new; SIZE_MAX when the entry is useless or there is no
 * room (then the next catch-up reads everything again). */
static size_t revoked_slot(struct auth_revoked *r, struct revoked_table *t, uint64_t key, int64_t until)
{
    int64_t now = (int64_t)time(NULL);
    if (until + JWT_LEEWAY_DEFAULT_S <= now)
        return SIZE_MAX; /* every token it could refuse is dead anyway */
    if (revoked_make_room(t, now) != 0) {
        log_msg(LOG_ERROR, "out of memory for a revocation: the next catch-up retries", NULL);
        r->last_seq = 0;
        return SIZE_MAX;
    }
    size_t i = revoked_find(t, key);
    if (t->keys[i] == 0) {
        t->count++;
        t->keys[i] = key;
    }
    if (until > t->until[i])
        t->until[i] = until;
    return i;
}

void auth_revoked_add(struct auth_revoked *r, uint64_t key, int64_t exp)
{
    revoked_slot(r, &r->set, key, exp);
}

void auth_revoked_add_not_before(struct auth_revoked *r, uint64_t key, int64_t nb, int64_t until)
{
    r->not_before_adds++;
    size_t i = revoked_slot(r, &r->not_before, key, until);
    if (i == SIZE_MAX)
        return;
    if (nb > r->not_before.nb[i])
        r->not_before.nb[i] = nb; /* the latest logout-all wins; applying twice is harmless */
    r->not_before.stamp[i] = r->not_before_adds; /* a second one in the same second: same nb */
}

/* ---- The fan-out message ----------------------------------------------------------------- */

#define REVOKED_EXP_BITS 40   /* Unix seconds: until the year 36812 */
#define REVOKED_SENT_BITS 24  /* µs modulo 2^24: a hop is timed right up to 16.7 s; a longer
                               * one (a ring that full is logged by its sender) would wrap */

static uint64_t revoked_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* one clock for every thread of the process */
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t auth_revoked_pack(int64_t exp)
{
    uint64_t exp_mask = (UINT64_C(1) << REVOKED_EXP_BITS) - 1;
    uint64_t e = exp < 0 ? 0 : (uint64_t)exp > exp_mask ? exp_mask : (uint64_t)exp;
    uint64_t sent = revoked_monotonic_us() & ((UINT64_C(1) << REVOKED_SENT_BITS) - 1);
    return e | sent << REVOKED_EXP_BITS;
}

int64_t auth_revoked_unpack(uint64_t packed, uint64_t *hop_us)
{
    uint64_t sent = packed >> REVOKED_EXP_BITS;
    *hop_us = (revoked_monotonic_us() - sent) & ((UINT64_C(1) << REVOKED_SENT_BITS) - 1);
    return (int64_t)(packed & ((UINT64_C(1) << REVOKED_EXP_BITS) - 1));
}

#define REVOKED_NB_BITS 40     /* the not-before message: nb in Unix seconds, */
#define REVOKED_SPAN_BITS 24   /* and until - nb (194 days; a longer span is cut, and the
                                * catch-up's row, with the full span, extends it) */

uint64_t auth_revoked_pack_not_before(int64_t nb, int64_t until)
{
    uint64_t nb_mask = (UINT64_C(1) << REVOKED_NB_BITS) - 1;
    uint64_t span_mask = (UINT64_C(1) << REVOKED_SPAN_BITS) - 1;
    uint64_t n = nb < 0 ? 0 : (uint64_t)nb > nb_mask ? nb_mask : (uint64_t)nb;
    uint64_t span = until <= nb ? 0 : (uint64_t)(until - nb) > span_mask ? span_mask : (uint64_t)(until - nb);
    return n | span << REVOKED_NB_BITS;
}

void auth_revoked_unpack_not_before(uint64_t packed, int64_t *nb, int64_t *until)
{
    *nb = (int64_t)(packed & ((UINT64_C(1) << REVOKED_NB_BITS) - 1));
    *until = *nb + (int64_t)(packed >> REVOKED_NB_BITS);
}

/* ---- Catch-up ---------------------------------------------------------------------------- */

static void revoked_catch_up(struct auth_revoked *r);

static void revoked_rows(struct pg_query *q, const struct pg_result *res)
{
    struct auth_revoked *r = (struct auth_revoked *)((char *)q - offsetof(struct auth_revoked, q));
    r->in_flight = false;
    if (pg_result_outcome(res) != PG_OK)
        return; /* the poll tries again */
    int rows = pg_result_rows(res);
    for (int i = 0; i < rows; i++) {
        int64_t seq = strtoll(pg_result_value(res, i, 0), NULL, 10);
        const char *kind = pg_result_value(res, i, 2);
        uint64_t key = auth_revoked_key(pg_result_value(res, i, 1), kind, pg_result_value(res, i, 3));
        int64_t until = strtoll(pg_result_value(res, i, 4), NULL, 10);
        if (strcmp(kind, "sub") == 0)
            auth_revoked_add_not_before(r, key, strtoll(pg_result_value(res, i, 5), NULL, 10), until);
        else
            auth_revoked_add(r, key, until);
        if (seq > r->last_seq)
            r->last_seq = seq;
    }
    if (rows < REVOKED_CATCHUP_ROWS)
        r->caught_up = true;
    if (rows == REVOKED_CATCHUP_ROWS || r->again)
        revoked_catch_up(r);
}

static void revoked_catch_up(struct auth_revoked *r)
{
    if (r->in_flight) {
        r->again = true;
        return;
    }
    r->again = false;
    snprintf(r->seq_param, sizeof(r->seq_param), "%" PRId64, r->last_seq);
    memset(&r->q, 0, sizeof(r->q));
    r->q.params[0] = r->seq_param;
    r->q.params_count = 1;
    r->q.done = revoked_rows;
    if (store_query(store_shard(r->auth->store, loop_index(r->loop)), STORE_REVOKED_SINCE, &r->q) == PG_OK)
        r->in_flight = true;
}

static void revoked_poll(struct loop_timer *timer)
{
    struct auth_revoked *r = (struct auth_revoked *)((char *)timer - offsetof(struct auth_revoked, poll));
    revoked_catch_up(r);
    loop_timer_start(r->loop, &r->poll, AUTH_REVOKED_POLL_MS);
}

struct auth_revoked *auth_revoked_create(struct auth *auth)
{
    struct auth_revoked *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->auth = auth;
    if (revoked_table_init(&r->set, REVOKED_INITIAL_SLOTS, false) != 0 ||
        revoked_table_init(&r->not_before, REVOKED_NOT_BEFORE_SLOTS, true) != 0) {
        auth_revoked_destroy(r);
        return NULL;
    }
    return r;
}

void auth_revoked_destroy(struct auth_revoked *r)
{
    if (r == NULL)
        return;
    revoked_table_free(&r->set);
    revoked_table_free(&r->not_before);
    free(r);
}

void auth_revoked_start(struct auth_revoked *r, struct loop *loop)
{
    r->loop = loop;
    r->poll.on_expire = revoked_poll;
    revoked_catch_up(r);
    loop_timer_start(loop, &r->poll, AUTH_REVOKED_POLL_MS);
}

void auth_revoked_stop(struct auth_revoked *r)
{
    loop_timer_stop(r->loop, &r->poll);
}

bool auth_revoked_ready(const struct auth_revoked *r)
{
    return r->caught_up;
}

void auth_revoked_heard(struct auth_revoked *r, int64_t seq)
{
    if (seq > r->last_seq)
        revoked_catch_up(r); /* a gap or news: read what this shard has not seen (F07) */
}
