/* auth/apikey_uses.c: when each API key was last used (api_keys.last_used_at, listed by
 * GET /me/api-keys and the admin's GET /users/{id}/api-keys), written in coalesced batches
 * (DESIGN §1: "writes that may be coalesced (last-used timestamps, audit records) are
 * batched").
 *
 * A shard notes a key's use when it answers for the key live (auth/apikey.c): at most once
 * per AUTH_APIKEY_USE_STEP_S for a key it has cached, so a hit pays one comparison. It writes
 * what it noted as one UPDATE (STORE_APIKEY_USES) AUTH_APIKEY_USES_FLUSH_MS after the first
 * note, one UPDATE in flight at a time; notes made meanwhile wait for the next one. A stamp
 * is thus the moment of a use less than a step before the last one, written about a second
 * later; every shard notes on its own, and a stamp never moves back.
 *
 * What can be lost, by design, since nothing is allowed or refused by a stamp: a note past
 * AUTH_APIKEY_USES_MAX waiting (its key is noted again at its next use), a batch Postgres did
 * not take (logged; its keys are noted again a step later), and what waits when the shard
 * stops (at most one flush interval: the shard is not held for it). */
#include "auth/auth_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* One note as JSON: {"t":"<tenant id>","k":"<key id>","a":<Unix s>} and its comma. */
#define USE_JSON_MAX (sizeof("{\"t\":\"\",\"k\":\"\",\"a\":},") + 2 * CT_UUID_TEXT_LEN + 20)
#define USES_JSON_CAP (AUTH_APIKEY_USES_MAX * USE_JSON_MAX + sizeof("[]"))

struct auth_key_uses {
    struct auth *auth;
    struct loop *loop;
    struct loop_timer timer;
    struct pg_query q;
    bool in_flight; /* q is out: its answer arms the timer for what waits */
    bool stopped;
    unsigned filling; /* json[filling] takes notes; the other one is q's parameter */
    unsigned count;   /* notes in json[filling] */
    size_t len;
    char *json[2];
};

struct auth_key_uses *auth_key_uses_create(struct auth *auth)
{
    struct auth_key_uses *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->auth = auth;
    u->json[0] = malloc(USES_JSON_CAP);
    u->json[1] = malloc(USES_JSON_CAP);
    if (u->json[0] == NULL || u->json[1] == NULL) {
        auth_key_uses_destroy(u);
        return NULL;
    }
    return u;
}

void auth_key_uses_destroy(struct auth_key_uses *u)
{
    if (u == NULL)
        return;
    free(u->json[0]);
    free(u->json[1]);
    free(u);
}

static void uses_send(struct auth_key_uses *u);

static void uses_timer(struct loop_timer *timer)
{
    struct auth_key_uses *u = (struct auth_key_uses *)((char *)timer - offsetof(struct auth_key_uses, timer));
    if (!u->in_flight && u->count > 0)
        uses_send(u);
}

static void uses_arm(struct auth_key_uses *u)
{
    if (loop_timer_start(u->loop, &u->timer, AUTH_APIKEY_USES_FLUSH_MS) != 0)
        log_msg(LOG_WARN, "no timer for API keys' last-use stamps: they wait for the next note", NULL);
}

static void uses_done(struct pg_query *q, const struct pg_result *r)
{
    struct auth_key_uses *u = (struct auth_key_uses *)((char *)q - offsetof(struct auth_key_uses, q));
    u->in_flight = false;
    if (pg_result_outcome(r) != PG_OK)
        log_msg(LOG_WARN, "API keys' last-use stamps were not written", "sqlstate", pg_result_sqlstate(r), NULL);
    if (!u->stopped && u->count > 0)
        uses_arm(u);
}

/* The filling batch goes out; the next notes fill the other buffer. */
static void uses_send(struct auth_key_uses *u)
{
    char *json = u->json[u->filling];
    json[u->len] = ']';
    json[u->len + 1] = '\0';
    memset(&u->q, 0, sizeof(u->q));
    u->q.params[0] = json;
    u->q.params_count = 1;
    u->q.done = uses_done;
    u->filling ^= 1;
    u->count = 0;
    u->len = 0;
    if (store_query(store_shard(u->auth->store, loop_index(u->loop)), STORE_APIKEY_USES, &u->q) == PG_OK)
        u->in_flight = true;
    else
        log_msg(LOG_DEBUG, "API keys' last-use stamps dropped: Postgres is away", NULL);
}

bool auth_key_use_note(struct auth_key_uses *u, const char *tid, const char *key_id, int64_t at)
{
    if (u->stopped || u->count == AUTH_APIKEY_USES_MAX)
        return false;
    /* Both ids are UUID text as Postgres gave them: nothing to escape. */
    int n = snprintf(u->json[u->filling] + u->len, USE_JSON_MAX, "%c{\"t\":\"%s\",\"k\":\"%s\",\"a\":%" PRId64 "}",
                     u->count == 0 ? '[' : ',', tid, key_id, at);
    if (n < 0 || (size_t)n >= USE_JSON_MAX)
        return false;
    u->len += (size_t)n;
    if (u->count++ == 0 && !u->in_flight)
        uses_arm(u);
    return true;
}

void auth_key_uses_start(struct auth_key_uses *u, struct loop *loop)
{
    u->loop = loop;
    u->timer.on_expire = uses_timer;
}

void auth_key_uses_stop(struct auth_key_uses *u)
{
    u->stopped = true;
    loop_timer_stop(u->loop, &u->timer);
}
