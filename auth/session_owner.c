/* auth/session_owner.c: a session's refresh-token rotations on its owner shard (DESIGN §1:
 * "a session, a refresh-token family and a rate-limit bucket belong to shard xxh3(key) % N. A
 * request that lands on another shard is forwarded to the owner as a message, and the answer
 * comes back the same way"). See auth_int.h.
 *
 * The owner keeps, for each of its sessions with a rotation running, a FIFO of the rotations
 * waiting behind it (the ops themselves, linked through `next`). So one statement per session
 * reaches Postgres from this instance at a time: a second presentation of a token waits here
 * for the first to commit and then finds the token rotated (reuse, RFC 9700 §4.14.2), instead
 * of waiting on the row lock inside Postgres with one of the shard's pipelined connections
 * held behind it. A rotation whose request's backstop has answered 503 before its turn comes
 * is not run: nobody would read its new token, and running it would spend the client's
 * current one. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"

#define SESSION_BUSY_MASK (AUTH_SESSION_BUSY_SLOTS - 1)
#define SESSION_BUSY_FILL_MAX (AUTH_SESSION_BUSY_SLOTS / 2) /* half full at most: probes stay short */

_Static_assert((AUTH_SESSION_BUSY_SLOTS & (AUTH_SESSION_BUSY_SLOTS - 1)) == 0,
               "the table's index wraps with a mask");

struct session_busy {
    uint64_t key;                 /* 0: free */
    struct auth_session_op *head; /* running */
    struct auth_session_op *tail; /* the last one waiting (head when none waits) */
};

struct auth_session_owner {
    struct session_busy slots[AUTH_SESSION_BUSY_SLOTS];
    unsigned used;
};

struct auth_session_owner *auth_session_owner_create(void)
{
    return calloc(1, sizeof(struct auth_session_owner));
}

void auth_session_owner_destroy(struct auth_session_owner *owner)
{
    free(owner);
}

/* ---- The table: open addressing, linear probing ------------------------------------------- */

static size_t busy_home(uint64_t key)
{
    return (size_t)(key >> 32) & SESSION_BUSY_MASK; /* the low bits pick the owner shard */
}

static struct session_busy *busy_find(struct auth_session_owner *o, uint64_t key)
{
    for (size_t i = busy_home(key); o->slots[i].key != 0; i = (i + 1) & SESSION_BUSY_MASK) {
        if (o->slots[i].key == key)
            return &o->slots[i];
    }
    return NULL;
}

static struct session_busy *busy_add(struct auth_session_owner *o, uint64_t key)
{
    if (o->used >= SESSION_BUSY_FILL_MAX)
        return NULL;
    size_t i = busy_home(key);
    while (o->slots[i].key != 0)
        i = (i + 1) & SESSION_BUSY_MASK;
    o->used++;
    o->slots[i].key = key;
    return &o->slots[i];
}

/* Deletion without tombstones (Knuth, TAOCP vol. 3, §6.4, Algorithm R): each later entry of the
 * probe run moves back into the hole unless its home lies cyclically in (hole, its slot]. */
static void busy_remove(struct auth_session_owner *o, struct session_busy *slot)
{
    size_t hole = (size_t)(slot - o->slots);
    for (size_t i = (hole + 1) & SESSION_BUSY_MASK; o->slots[i].key != 0; i = (i + 1) & SESSION_BUSY_MASK) {
        size_t home = busy_home(o->slots[i].key);
        bool stays = hole <= i ? hole < home && home <= i : hole < home || home <= i;
        if (!stays) {
            o->slots[hole] = o->slots[i];
            hole = i;
        }
    }
    o->slots[hole] = (struct session_busy){ 0 };
    o->used--;
}

/* ---- On the owner ---------------------------------------------------------------------------- */

static void owner_rotated(struct pg_query *q, const struct pg_result *r);
static void owner_reuse_done(struct pg_query *q, const struct pg_result *r);
static void owner_finish(struct auth_session_op *op);

/* One of op's statements on the owner's connection; false when Postgres refused it at once
 * (the verdict says so). */
static bool owner_send(struct auth_session_op *op, enum store_stmt stmt, const char *const *params,
                       void (*done)(struct pg_query *q, const struct pg_result *r))
{
    memcpy(op->w.q.params, params, sizeof(op->w.q.params[0]) * AUTH_SESSION_PARAMS);
    op->w.q.params_count = AUTH_SESSION_PARAMS;
    op->w.q.done = done;
    op->outcome = store_query(auth_store(op->w.auth, op->w.loop), stmt, &op->w.q);
    if (op->outcome == PG_OK)
        return true;
    op->verdict = AUTH_SESSION_FAILED;
    return false;
}

/* op's turn has come: false when its verdict is known at once. */
static bool owner_start(struct auth *auth, struct loop *loop, struct auth_session_op *op)
{
    op->w.auth = auth;
    op->w.loop = loop;
    if (loop_now_us() > op->run_by_us) {
        op->verdict = AUTH_SESSION_EXPIRED;
        return false;
    }
    auth_stat_add(&auth->shards[loop_index(loop)]->stats.session_rotations, 1);
    return owner_send(op, STORE_SESSION_ROTATE, op->rotate, owner_rotated);
}

/* Hands op back with its verdict; its done runs at once when it was asked on this shard. */
static void owner_answer(struct auth *auth, struct loop *loop, struct auth_session_op *op)
{
    unsigned self = loop_index(loop);
    if (op->origin == self) {
        op->done(op);
        return;
    }
    struct ring_msg answer = { .kind = AUTH_MSG_SESSION_ANSWER, .ptr = op };
    auth_reply(&auth->shards[self]->replies, op->origin, &answer);
}

/* A rotation arrives at its owner: it runs now, or waits behind its session's running one. */
static void owner_take(struct auth *auth, struct loop *loop, struct auth_session_op *op)
{
    struct auth_shard *shard = auth->shards[loop_index(loop)];
    op->next = NULL;
    struct session_busy *slot = busy_find(shard->sessions, op->key);
    if (slot != NULL) {
        slot->tail->next = op;
        slot->tail = op;
        auth_stat_add(&shard->stats.session_waits, 1);
        return;
    }
    if ((slot = busy_add(shard->sessions, op->key)) == NULL) {
        op->verdict = AUTH_SESSION_BUSY;
        owner_answer(auth, loop, op);
        return;
    }
    slot->head = slot->tail = op;
    if (!owner_start(auth, loop, op))
        owner_finish(op);
}

/* op, its session's running rotation, has its verdict: answered, and the next one waiting
 * started. Those whose verdict comes at once (Postgres away, expired) are answered in turn by
 * this loop rather than by recursion, as a queue may be long. The table is updated before each
 * answer, which may start another request's rotation on this shard. */
static void owner_finish(struct auth_session_op *op)
{
    struct auth *auth = op->w.auth;
    struct loop *loop = op->w.loop;
    struct auth_session_owner *o = auth->shards[loop_index(loop)]->sessions;
    for (;;) {
        struct session_busy *slot = busy_find(o, op->key);
        assert(slot != NULL && slot->head == op);
        struct auth_session_op *next = op->next;
        if (next != NULL)
            slot->head = next;
        else
            busy_remove(o, slot);
        owner_answer(auth, loop, op); /* op is its sender's again: not touched after this */
        if (next == NULL || owner_start(auth, loop, next))
            return;
        op = next;
    }
}

static void owner_rotated(struct pg_query *q, const struct pg_result *r)
{
    struct auth_session_op *op = (struct auth_session_op *)q; /* w.q is the first member */
    op->outcome = pg_result_outcome(r);
    if (op->outcome != PG_OK) {
        op->verdict = AUTH_SESSION_FAILED;
    } else if (pg_result_rows(r) == 1) { /* columns as STORE_SESSION_ROTATE's RETURNING */
        op->verdict = AUTH_SESSION_ROTATED;
        snprintf(op->user_id, sizeof(op->user_id), "%s", pg_result_value(r, 0, 1));
        if (op->client_scopes != NULL)
            snprintf(op->client_scopes, JWT_SCOPE_MAX + 1, "%s", pg_result_value(r, 0, 2));
        op->lifetime_s = strtoll(pg_result_value(r, 0, 3), NULL, 10);
    } else if (owner_send(op, STORE_SESSION_REUSE, op->reuse, owner_reuse_done)) {
        return; /* not the current token: was it the previous one? */
    }
    owner_finish(op);
}

/* The reuse check's answer: a revoked session is spread like any revocation (DESIGN §1). */
static void owner_reuse_done(struct pg_query *q, const struct pg_result *r)
{
    struct auth_session_op *op = (struct auth_session_op *)q;
    op->outcome = pg_result_outcome(r);
    op->verdict = op->outcome == PG_OK ? AUTH_SESSION_REFUSED : AUTH_SESSION_FAILED;
    if (op->outcome == PG_OK) {
        op->w.result = r;
        op->reused = auth_session_spread(&op->w) > 0;
        op->w.result = NULL;
        if (op->reused)
            log_msg(LOG_WARN, "refresh token reuse: session revoked", "session", op->sid, NULL);
    }
    owner_finish(op);
}

void auth_session_on_ask(struct auth *auth, struct loop *loop, const struct ring_msg *msg)
{
    owner_take(auth, loop, msg->ptr);
}

/* ---- On the asking shard --------------------------------------------------------------------- */

void auth_session_rotate(struct auth_wait *w, struct auth_session_op *op)
{
    struct auth *auth = w->auth;
    op->key = XXH3_64bits(op->sid, strlen(op->sid)) | 1;
    op->origin = loop_index(w->loop);
    op->run_by_us = auth_backstop_us(w);
    op->reused = false;
    unsigned owner = (unsigned)((op->key >> 17) % auth->cfg->shards);
    if (owner == op->origin) {
        owner_take(auth, w->loop, op);
        return;
    }
    struct auth_shard *shard = auth->shards[op->origin];
    struct ring_msg ask = { .kind = AUTH_MSG_SESSION_ASK, .ptr = op };
    if (shard->session_asks >= AUTH_SESSION_ASKS_MAX || loop_send_message(w->loop, owner, &ask) != 0) {
        op->verdict = AUTH_SESSION_BUSY;
        op->done(op);
        return;
    }
    shard->session_asks++;
    auth_stat_add(&shard->stats.session_forwarded, 1);
}

void auth_session_answered(struct auth *auth, struct loop *loop, const struct ring_msg *msg)
{
    auth->shards[loop_index(loop)]->session_asks--;
    struct auth_session_op *op = msg->ptr;
    op->done(op);
}
