/* core/ring.c: the single-producer/single-consumer message ring and the mailbox
 * (one ring per ordered pair of shards, one eventfd and one wake flag per shard).
 *
 * Ring: head and tail are free-running 64-bit counters (they never wrap in practice:
 * 2^64 messages). The producer owns head, the consumer owns tail; each publishes its
 * counter with a release store and reads the other's with an acquire load, so a
 * slot's contents written before head moves are visible to the consumer that sees
 * head, and a slot read before tail moves is finished before the producer reuses it.
 * Each side caches the other's counter and re-reads the shared one only when its
 * cached view says full (producer) or empty (consumer): in a busy ring that is once
 * per RING_SLOTS messages, not once per message, so the two cache lines do not bounce.
 *
 * Atomics: ring.h keeps head and tail as plain uint64_t (so the struct stays a plain
 * layout the shard code can embed); they are only ever touched through the GCC
 * __atomic builtins, which implement the C11 memory model on plain objects.
 *
 * Mailbox wake-up protocol, and why no wake-up is lost:
 *   sender   S1: push the message, publishing head with a seq_cst store
 *            S2: load woken (seq_cst); if 0, exchange it to 1 (seq_cst) and, if the
 *                exchange saw 0, write 1 to the receiver's eventfd
 *   receiver R1: store woken = 0 (seq_cst)
 *            R2: pop from every incoming ring, reading head with seq_cst loads, until
 *                every ring was seen empty; a drain that stops at max messages
 *                instead reads every head once more (seq_cst) and, if a message
 *                waits, wakes itself as a sender would
 * All of these are seq_cst operations, so they fall in one total order S (C17
 * 7.17.3). Take a message whose sender did not write the eventfd because S2 found
 * the flag at 1. Let R2 be the receiver's last load of that ring's head in the drain.
 * If S1 precedes R2 in S, R2 sees the message: it is handled now, or it triggers the
 * self-wake. Otherwise R2 precedes S1, so R1 precedes S2 in S, and S2 reads R1's 0 or
 * a later modification; it read 1, so some thread set the flag 0 -> 1 after R1, and
 * that thread writes the eventfd after R1: the receiver's next eventfd read
 * completes and it drains again. Either way the message is not stranded. A
 * release/acquire pair alone would not do: a store followed by a load of another
 * variable may be reordered (store buffering) unless both are seq_cst. We use seq_cst
 * accesses rather than atomic_thread_fence so that ThreadSanitizer, which does not
 * model fences, can check the protocol too. On x86-64 the cost per send is one
 * locked store (xchg) to the sender's own head line plus a read of the receiver's
 * flag line, which stays shared until the receiver next drains.
 *
 * A drain that stops at max with messages still waiting wakes its own shard (same
 * flag, same eventfd), so the shard comes back for the rest after serving its other
 * completions, whatever its loop does with the return value. */
#include "core/ring.h"
#include "core/wake.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The mailbox holds shards * (shards - 1) rings of sizeof(struct ring) (~128 KiB)
 * each, allocated at once: 64 shards take ~0.5 GiB of address space, 256 take
 * ~8.5 GiB. Pages are touched only as rings fill, so memory in use follows traffic,
 * but past 256 shards even the address space is unreasonable; one shard per core
 * makes 256 a generous ceiling. mailbox_create refuses more. */
#define MAILBOX_SHARDS_MAX 256

#define RING_INDEX_MASK ((uint64_t)RING_SLOTS - 1)

_Static_assert(sizeof(struct ring) % CACHE_LINE_BYTES == 0, "rings tile on cache lines");
_Static_assert(sizeof(struct ring_msg) == 32, "RING_SLOTS * 32 bytes per ring, DESIGN §6");

/* Per shard. The first line is written by senders (woken) and by the receiver when
 * it drains; the receiver's private state is on a line of its own. */
struct mailbox_shard {
    alignas(CACHE_LINE_BYTES) struct wake wake;
    alignas(CACHE_LINE_BYTES) unsigned next_ring; /* receiver only: round-robin cursor */
};

struct mailbox {
    unsigned shards;
    struct ring *rings;           /* [to * (shards - 1) + from'], from' skips to itself */
    struct mailbox_shard *shard;  /* [shards] */
};

void ring_init(struct ring *ring)
{
    assert(ring != NULL);
    __atomic_store_n(&ring->head, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ring->tail, 0, __ATOMIC_RELAXED);
    ring->tail_cached = 0;
    ring->head_cached = 0;
}

/* order_seq_cst: publish head with a seq_cst store (the mailbox wake protocol)
 * rather than a release store. */
static int ring_push_ordered(struct ring *ring, const struct ring_msg *msg, bool order_seq_cst)
{
    assert(ring != NULL);
    assert(msg != NULL);
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED); /* ours */
    assert(head - ring->tail_cached <= RING_SLOTS);
    if (head - ring->tail_cached == RING_SLOTS) {
        ring->tail_cached = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        assert(head - ring->tail_cached <= RING_SLOTS);
        if (head - ring->tail_cached == RING_SLOTS)
            return -TE_FULL; /* back-pressure: the caller keeps the message, nothing dropped */
    }
    ring->slots[head & RING_INDEX_MASK] = *msg;
    if (order_seq_cst)
        __atomic_store_n(&ring->head, head + 1, __ATOMIC_SEQ_CST);
    else
        __atomic_store_n(&ring->head, head + 1, __ATOMIC_RELEASE);
    return 0;
}

/* order_seq_cst: read head with a seq_cst load (the mailbox wake protocol). */
static int ring_pop_ordered(struct ring *ring, struct ring_msg *msg, bool order_seq_cst)
{
    assert(ring != NULL);
    assert(msg != NULL);
    uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_RELAXED); /* ours */
    assert(ring->head_cached - tail <= RING_SLOTS);
    if (ring->head_cached == tail) {
        if (order_seq_cst)
            ring->head_cached = __atomic_load_n(&ring->head, __ATOMIC_SEQ_CST);
        else
            ring->head_cached = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
        assert(ring->head_cached - tail <= RING_SLOTS);
        if (ring->head_cached == tail)
            return -TE_EMPTY;
    }
    *msg = ring->slots[tail & RING_INDEX_MASK];
    __atomic_store_n(&ring->tail, tail + 1, __ATOMIC_RELEASE);
    return 0;
}

int ring_push(struct ring *ring, const struct ring_msg *msg)
{
    return ring_push_ordered(ring, msg, false);
}

int ring_pop(struct ring *ring, struct ring_msg *msg)
{
    return ring_pop_ordered(ring, msg, false);
}

size_t ring_count(const struct ring *ring)
{
    assert(ring != NULL);
    /* tail first: head read later is never behind it, so the difference is not
     * negative; it may exceed RING_SLOTS if the consumer moved in between. */
    uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
    assert(head >= tail);
    uint64_t count = head - tail;
    return count > RING_SLOTS ? RING_SLOTS : (size_t)count;
}

static struct ring *mailbox_ring(struct mailbox *mailbox, unsigned from, unsigned to)
{
    assert(from < mailbox->shards);
    assert(to < mailbox->shards);
    assert(from != to);
    unsigned column = from < to ? from : from - 1;
    return &mailbox->rings[(size_t)to * (mailbox->shards - 1) + column];
}

/* The sending shard whose messages arrive on incoming ring `column` of `to`. */
static unsigned mailbox_ring_sender(unsigned to, unsigned column)
{
    return column < to ? column : column + 1;
}

struct mailbox *mailbox_create(unsigned shards)
{
    if (shards == 0 || shards > MAILBOX_SHARDS_MAX)
        return NULL;
    struct mailbox *mailbox = calloc(1, sizeof(*mailbox));
    if (mailbox == NULL)
        return NULL;
    mailbox->shards = shards;
    size_t rings = (size_t)shards * (shards - 1);
    if (rings > 0) { /* one shard has no rings, and aligned_alloc(…, 0) may fail */
        mailbox->rings = aligned_alloc(CACHE_LINE_BYTES, rings * sizeof(struct ring));
        if (mailbox->rings == NULL)
            goto fail;
        for (size_t i = 0; i < rings; i++)
            ring_init(&mailbox->rings[i]);
    }
    mailbox->shard = aligned_alloc(CACHE_LINE_BYTES, shards * sizeof(struct mailbox_shard));
    if (mailbox->shard == NULL)
        goto fail;
    for (unsigned i = 0; i < shards; i++) {
        memset(&mailbox->shard[i], 0, sizeof(mailbox->shard[i]));
        mailbox->shard[i].wake.eventfd = -1;
    }
    for (unsigned i = 0; i < shards; i++) {
        if (wake_init(&mailbox->shard[i].wake) != 0)
            goto fail;
    }
    return mailbox;
fail:
    mailbox_destroy(mailbox);
    return NULL;
}

void mailbox_destroy(struct mailbox *mailbox)
{
    if (mailbox == NULL)
        return;
    if (mailbox->shard != NULL) {
        for (unsigned i = 0; i < mailbox->shards; i++)
            wake_close(&mailbox->shard[i].wake);
    }
    free(mailbox->shard);
    free(mailbox->rings);
    free(mailbox);
}

/* Writes the eventfd of `to` unless it was already written since its last drain. */
static void mailbox_wake(struct mailbox *mailbox, unsigned to)
{
    wake_signal(&mailbox->shard[to].wake);
}

int mailbox_send(struct mailbox *mailbox, unsigned from, unsigned to, const struct ring_msg *msg)
{
    assert(mailbox != NULL);
    assert(msg != NULL);
    struct ring_msg stamped = *msg;
    stamped.from = from; /* the receiver can trust it: the ring it came on says who */
    int rc = ring_push_ordered(mailbox_ring(mailbox, from, to), &stamped, true);
    if (rc != 0)
        return rc;
    mailbox_wake(mailbox, to);
    return 0;
}

/* Whether any incoming ring of `to` holds a message (receiver side). Its loads of
 * head are seq_cst: a ring it sees empty counts as seen empty after R1. */
static bool mailbox_pending(struct mailbox *mailbox, unsigned to)
{
    for (unsigned from = 0; from < mailbox->shards; from++) {
        if (from == to)
            continue;
        struct ring *ring = mailbox_ring(mailbox, from, to);
        uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_RELAXED); /* ours */
        if (__atomic_load_n(&ring->head, __ATOMIC_SEQ_CST) != tail)
            return true;
    }
    return false;
}

size_t mailbox_drain(struct mailbox *mailbox, unsigned to,
                     void (*handle)(void *arg, const struct ring_msg *msg), void *arg, size_t max)
{
    assert(mailbox != NULL);
    assert(to < mailbox->shards);
    assert(handle != NULL);
    struct mailbox_shard *shard = &mailbox->shard[to];
    unsigned incoming = mailbox->shards - 1;
    if (incoming == 0)
        return 0;
    wake_clear(&shard->wake); /* R1, see the top */
    struct ring *rings = &mailbox->rings[(size_t)to * incoming];
    size_t handled = 0;
    unsigned empty_in_a_row = 0; /* all rings seen empty once it reaches incoming */
    unsigned column = shard->next_ring;
    assert(column < incoming);
    while (handled < max && empty_in_a_row < incoming) {
        struct ring_msg msg;
        if (ring_pop_ordered(&rings[column], &msg, true) == 0) {
            assert(msg.from == mailbox_ring_sender(to, column)); /* paired with the send */
            handle(arg, &msg);
            handled++;
            empty_in_a_row = 0;
        } else {
            empty_in_a_row++;
        }
        column = column + 1 == incoming ? 0 : column + 1; /* one message per ring per turn */
    }
    shard->next_ring = column;
    if (handled == max && mailbox_pending(mailbox, to))
        mailbox_wake(mailbox, to); /* come back for the rest: no other write will come */
    return handled;
}

int mailbox_eventfd(const struct mailbox *mailbox, unsigned shard)
{
    assert(mailbox != NULL);
    assert(shard < mailbox->shards);
    return mailbox->shard[shard].wake.eventfd;
}
