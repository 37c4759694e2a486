/* auth/audit_batch.c: the security events that have no change of their own to commit with
 * (a client_credentials token issued, a client's failed authentication), written to audit_log
 * in batches (DESIGN §1: "writes that may be coalesced (last-used timestamps, audit records)
 * are batched"; issue 6).
 *
 * An event that records a change is written in the statement of that change (SECURITY F12)
 * and never comes here. Neither does a refused login: its failure count is a change, whose
 * statement writes the audit row too (auth/login_failure.c).
 *
 * Each shard keeps its events in a bounded FIFO and writes them as one INSERT over a JSON
 * array (store.c STORE_AUDIT_BATCH) once AUTH_AUDIT_BATCH_ROWS are waiting, or
 * TESSERA_AUDIT_FLUSH_MS after the oldest arrived; one INSERT in flight per shard. A row keeps
 * its event's moment (created_at), not its INSERT's. A batch whose outcome never came back is
 * sent again after the flush interval: one past its budget was cancelled by the server
 * (store/pg.c's statement_timeout), and one whose connection was lost may have committed, so
 * each event carries an id (the shard's random prefix and a counter) and rows already written
 * are skipped: an event is written once.
 *
 * What can be lost, and is counted in /metrics (tessera_audit_events_total{outcome="dropped"}):
 * events past AUTH_AUDIT_PENDING_MAX while Postgres is away or slower than they come, a batch
 * Postgres refuses as wrong (a defect: logged with its SQLSTATE, and never retried so it
 * cannot block the events behind it), and what is still queued when the process is killed
 * (at most TESSERA_AUDIT_FLUSH_MS worth). A SIGTERM loses none while Postgres answers: the
 * shard holds its loop (loop_hold) until its queue is written or the shutdown deadline. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"

#define AUDIT_EVENT_JSON_MAX 2048 /* one event as JSON: its fields with every quote escaped */

/* One event as a shard keeps it; "" is NULL in the row. */
struct auth_audit_event {
    uint64_t id;                    /* the shard's counter (the row's event_id with its prefix) */
    int64_t at_us;                  /* when it happened: Unix µs */
    const char *actor_kind;         /* static text: 'client', 'user' */
    const char *action;             /* static text: 'token_issued', 'client_auth_failed' */
    const char *target_kind;        /* static text or NULL */
    char slug[AUTH_SLUG_MAX + 1];
    char actor_id[AUTH_CLIENT_ID_MAX + 1];
    char target_id[AUTH_CLIENT_ID_MAX + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
    char details[AUTH_AUDIT_DETAILS_MAX + 1]; /* a JSON object made by the caller, or "" */
};

struct auth_audit_batch {
    struct auth *auth;
    struct loop *loop;
    struct auth_audit_event *events; /* a ring of AUTH_AUDIT_PENDING_MAX */
    size_t head, count;
    size_t sending;                  /* events of the INSERT in flight, from head; 0: none */
    bool stopped;                    /* auth_audit_batch_stop ran: nothing more is sent */
    uint64_t due_ms;                 /* when the oldest waiting event must be sent */
    uint64_t id_prefix;
    uint64_t next_id;
    struct loop_timer timer;
    struct pg_query q;
    char *json;                      /* the INSERT's parameter, valid while it is in flight */
};

static const size_t audit_json_cap = (size_t)AUTH_AUDIT_BATCH_ROWS * AUDIT_EVENT_JSON_MAX;

struct auth_audit_batch *auth_audit_batch_create(struct auth *auth)
{
    struct auth_audit_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->auth = auth;
    b->events = calloc(AUTH_AUDIT_PENDING_MAX, sizeof(*b->events));
    b->json = malloc(audit_json_cap);
    if (b->events == NULL || b->json == NULL ||
        getrandom(&b->id_prefix, sizeof(b->id_prefix), 0) != (ssize_t)sizeof(b->id_prefix)) {
        auth_audit_batch_destroy(b);
        return NULL;
    }
    return b;
}

void auth_audit_batch_destroy(struct auth_audit_batch *b)
{
    if (b == NULL)
        return;
    free(b->events);
    free(b->json);
    free(b);
}

/* ---- Events as JSON --------------------------------------------------------------------- */

/* An event's id as a UUID (version 8, RFC 9562 §5.8): the shard's random prefix, then the
 * counter under the variant bits. */
static void audit_event_id(uint64_t prefix, uint64_t counter, char out[CT_UUID_TEXT_LEN + 1])
{
    uint8_t b[CT_UUID_BYTES];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(prefix >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(counter >> (56 - 8 * i));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x80);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* the counter keeps 62 bits: never wraps */
    ct_uuid_format(b, out);
}

/* ,"name":"value" (or null): one per column, for every event of every batch, so no printf. */
static void audit_json_member(struct buf *out, const char *name, const char *value)
{
    buf_append_cstr(out, ",\"");
    buf_append_cstr(out, name);
    buf_append_cstr(out, "\":");
    if (value == NULL || value[0] == '\0')
        buf_append_cstr(out, "null");
    else
        buf_append_json_string(out, slice_make(value, strlen(value)));
}

static void audit_event_json(const struct auth_audit_event *e, uint64_t id_prefix, struct buf *out)
{
    char id[CT_UUID_TEXT_LEN + 1];
    audit_event_id(id_prefix, e->id, id);
    buf_append_cstr(out, "{\"slug\":");
    buf_append_json_string(out, slice_make(e->slug, strlen(e->slug)));
    audit_json_member(out, "event_id", id);
    audit_json_member(out, "actor_kind", e->actor_kind);
    audit_json_member(out, "actor_id", e->actor_id);
    audit_json_member(out, "action", e->action);
    audit_json_member(out, "target_kind", e->target_kind);
    audit_json_member(out, "target_id", e->target_id);
    audit_json_member(out, "ip", e->ip);
    audit_json_member(out, "request_id", e->request_id);
    buf_append_cstr(out, ",\"details\":");
    buf_append_cstr(out, e->details[0] != '\0' ? e->details : "null"); /* an object we built */
    buf_append_cstr(out, ",\"at_us\":");
    buf_append_i64(out, e->at_us);
    buf_append_cstr(out, "}");
}

/* The first events from head as one JSON array, as many as fit: at least one, since an
 * event's JSON (its bounded fields, each at worst doubled by escaping) is far below
 * AUDIT_EVENT_JSON_MAX. */
static size_t audit_encode(struct auth_audit_batch *b, size_t n)
{
    struct buf out;
    buf_init(&out, b->json, audit_json_cap - 1);
    buf_append_cstr(&out, "[");
    size_t done = 0;
    for (; done < n; done++) {
        size_t mark = out.len;
        if (done > 0)
            buf_append_cstr(&out, ",");
        audit_event_json(&b->events[(b->head + done) % AUTH_AUDIT_PENDING_MAX], b->id_prefix, &out);
        if (out.overflow || out.len + 2 > out.cap) { /* the rest goes in the next batch */
            out.len = mark;
            out.overflow = false;
            break;
        }
    }
    buf_append_cstr(&out, "]");
    b->json[out.len] = '\0';
    return done;
}

/* ---- The queue ----------------------------------------------------------------------------- */

static void audit_send(struct auth_audit_batch *b);

static void audit_arm(struct auth_audit_batch *b)
{
    uint64_t now = loop_now_ms(b->loop);
    loop_timer_start(b->loop, &b->timer, b->due_ms > now ? b->due_ms - now : 0);
}

static void audit_timer(struct loop_timer *timer)
{
    struct auth_audit_batch *b = (struct auth_audit_batch *)((char *)timer - offsetof(struct auth_audit_batch, timer));
    if (b->sending > 0 || b->count == 0)
        return; /* the INSERT's answer decides what comes next */
    if (loop_stopping() || loop_now_ms(b->loop) >= b->due_ms) /* due, or woken by the hold */
        audit_send(b);
    else
        audit_arm(b);
}

/* count is read by a scrape on any shard (auth_audit_batch_pending): relaxed stores. */
static void audit_set_count(struct auth_audit_batch *b, size_t count)
{
    __atomic_store_n(&b->count, count, __ATOMIC_RELAXED);
}

/* The loop is held while events wait (count > 0), until the shard stops. */
static void audit_release(struct auth_audit_batch *b)
{
    if (b->count == 0)
        loop_release(b->loop, &b->timer);
}

static void audit_dropped(struct auth_audit_batch *b, size_t n)
{
    auth_stat_add(&b->auth->shards[loop_index(b->loop)]->stats.audit_dropped, n);
}

static void audit_done(struct pg_query *q, const struct pg_result *r)
{
    struct auth_audit_batch *b = (struct auth_audit_batch *)((char *)q - offsetof(struct auth_audit_batch, q));
    size_t n = b->sending;
    enum pg_outcome outcome = pg_result_outcome(r);
    b->sending = 0;
    struct auth_shard_stats *stats = &b->auth->shards[loop_index(b->loop)]->stats;
    bool settled = outcome == PG_OK || outcome == PG_ERROR || outcome == PG_UNIQUE_VIOLATION;
    if (outcome == PG_OK) {
        auth_stat_add(&stats->audit_written, n);
        auth_stat_add(&stats->audit_batches, 1);
    } else if (settled) { /* refused as wrong: sending it again would block every event behind */
        log_msg(LOG_ERROR, "an audit batch was refused: its events are dropped", "sqlstate",
                pg_result_sqlstate(r), NULL);
        audit_dropped(b, n);
    }
    if (settled) {
        b->head = (b->head + n) % AUTH_AUDIT_PENDING_MAX;
        audit_set_count(b, b->count - n);
    }
    if (b->stopped) {
        if (!settled)
            audit_dropped(b, n); /* the shard stopped: nobody sends them again */
        return;
    }
    audit_release(b);
    if (b->count == 0)
        return;
    if (!settled) /* Postgres away or slow: the same events again after a wait */
        b->due_ms = loop_now_ms(b->loop) + b->auth->cfg->audit_flush_ms;
    else if (b->count >= AUTH_AUDIT_BATCH_ROWS)
        b->due_ms = loop_now_ms(b->loop);
    audit_arm(b);
}

static void audit_send(struct auth_audit_batch *b)
{
    size_t n = audit_encode(b, b->count < AUTH_AUDIT_BATCH_ROWS ? b->count : AUTH_AUDIT_BATCH_ROWS);
    memset(&b->q, 0, sizeof(b->q));
    b->q.params[0] = b->json;
    b->q.params_count = 1;
    b->q.done = audit_done;
    if (store_query(store_shard(b->auth->store, loop_index(b->loop)), STORE_AUDIT_BATCH, &b->q) == PG_OK) {
        b->sending = n;
        return;
    }
    b->due_ms = loop_now_ms(b->loop) + b->auth->cfg->audit_flush_ms; /* refused at once: later */
    audit_arm(b);
}

void auth_audit_batch_start(struct auth_audit_batch *b, struct loop *loop)
{
    b->loop = loop;
    b->timer.on_expire = audit_timer;
}

void auth_audit_batch_stop(struct auth_audit_batch *b)
{
    b->stopped = true;
    loop_timer_stop(b->loop, &b->timer);
    size_t lost = b->count - b->sending; /* an INSERT in flight may still commit: its answer counts */
    if (lost > 0) {
        char text[24];
        snprintf(text, sizeof(text), "%zu", lost);
        log_msg(LOG_ERROR, "audit events were not written before the shard stopped", "events", text, NULL);
        audit_dropped(b, lost);
    }
    if (b->count > 0)
        loop_release(b->loop, &b->timer);
}

size_t auth_audit_batch_pending(const struct auth_audit_batch *b)
{
    return __atomic_load_n(&b->count, __ATOMIC_RELAXED);
}

/* The queue's next slot, filled in place by the caller, then audit_queued; NULL when the
 * event cannot be kept (counted as dropped). */
static struct auth_audit_event *audit_reserve(struct auth_audit_batch *b)
{
    if (b->stopped || b->count == AUTH_AUDIT_PENDING_MAX) {
        audit_dropped(b, 1);
        return NULL;
    }
    struct auth_audit_event *slot = &b->events[(b->head + b->count) % AUTH_AUDIT_PENDING_MAX];
    slot->id = b->next_id++;
    return slot;
}

static void audit_queued(struct auth_audit_batch *b)
{
    audit_set_count(b, b->count + 1);
    if (b->count == 1)
        loop_hold(b->loop, &b->timer);
    if (b->sending > 0)
        return; /* the answer of the INSERT in flight sends what waits */
    if (b->count == 1) /* a stopping shard writes at once: the hold's wake has already fired */
        b->due_ms = loop_now_ms(b->loop) + (loop_stopping() ? 0 : b->auth->cfg->audit_flush_ms);
    if (b->count >= AUTH_AUDIT_BATCH_ROWS)
        b->due_ms = loop_now_ms(b->loop);
    audit_arm(b);
}

/* ---- Noting an event ------------------------------------------------------------------------ */

/* src when every byte is printable ASCII (client_ids, request ids and token ids are), else "":
 * a presented value is the client's to choose, and bytes that are not UTF-8 would make
 * Postgres refuse the whole batch. */
static void audit_copy_slice(char *dst, size_t cap, struct slice src)
{
    size_t len = src.len < cap ? src.len : 0;
    for (size_t i = 0; i < len; i++) {
        if (src.ptr[i] < 0x20 || src.ptr[i] > 0x7e)
            len = 0;
    }
    memcpy(dst, src.ptr, len);
    dst[len] = '\0';
}

static void audit_copy_text(char *dst, size_t cap, const char *src)
{
    audit_copy_slice(dst, cap, src != NULL ? slice_make(src, strlen(src)) : slice_make("", 0));
}

void auth_audit_note(struct auth_wait *w, const char *slug, const struct auth_audit_fields *f)
{
    struct auth_audit_batch *b = w->auth->shards[loop_index(w->loop)]->audit;
    struct auth_audit_event *e = audit_reserve(b);
    if (e == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    e->at_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    audit_copy_text(e->slug, sizeof(e->slug), slug);
    e->actor_kind = f->actor_kind;
    e->action = f->action;
    e->target_kind = f->target_kind;
    audit_copy_text(e->actor_id, sizeof(e->actor_id), f->actor_id);
    audit_copy_text(e->target_id, sizeof(e->target_id), f->target_id);
    audit_copy_slice(e->request_id, sizeof(e->request_id), http_parked_request_id(w));
    snprintf(e->ip, sizeof(e->ip), "%s", http_parked_client(w));
    bool fits = f->details != NULL && strlen(f->details) < sizeof(e->details);
    if (fits)
        strcpy(e->details, f->details); /* JSON we made: never cut, since a cut object is invalid */
    else
        e->details[0] = '\0';
    audit_queued(b);
}

void auth_audit_token_issued(struct auth_wait *w, const char *slug, const char *client_id, const char *jti,
                             const char *scope)
{
    char mem[AUTH_AUDIT_DETAILS_MAX + 1];
    struct buf details;
    buf_init(&details, mem, sizeof(mem) - 1);
    buf_append_cstr(&details, "{\"grant_type\":\"client_credentials\"");
    size_t mark = details.len;
    buf_append_cstr(&details, ",\"scope\":");
    buf_append_json_string(&details, slice_make(scope, strlen(scope)));
    if (details.overflow || details.len + 1 > details.cap) { /* a long scope: the rest still says what happened */
        details.len = mark;
        details.overflow = false;
    }
    buf_append_cstr(&details, "}");
    mem[details.len] = '\0';
    struct auth_audit_fields f = {
        .actor_kind = "client", .actor_id = client_id, .action = "token_issued",
        .target_kind = "token", .target_id = jti, .details = mem,
    };
    auth_audit_note(w, slug, &f);
}

void auth_audit_client_failed(struct auth_wait *w, const char *slug, const char *client_id)
{
    char details[64];
    snprintf(details, sizeof(details), "{\"endpoint\":\"%s\"}", http_parked_route(w)); /* our names */
    struct auth_audit_fields f = {
        .actor_kind = "client", .actor_id = client_id, .action = "client_auth_failed", .details = details,
    };
    auth_audit_note(w, slug, &f);
}
