/* core/ring.h: a bounded single-producer/single-consumer message ring, and the
 * mailbox that connects every ordered pair of shards with one ring.
 *
 * A ring is owned by exactly two threads: the one that pushes and the one that
 * pops. It never drops: ring_push answers -TE_FULL and the sender parks the
 * message and retries (back-pressure, DESIGN §6). A message carried to another
 * shard that points at memory goes back to its sender to be freed (STYLE §3).
 *
 * The mailbox wakes a shard through an eventfd the shard keeps a read in flight
 * on (through its io_uring). A sender writes the eventfd only when the receiver
 * has not yet been woken since its last drain, so a burst of messages costs one
 * system call, not one per message. */
#ifndef TESSERA_CORE_RING_H
#define TESSERA_CORE_RING_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define RING_SLOTS 4096 /* DESIGN §6: 4,096 messages per ordered pair of shards */
#define CACHE_LINE_BYTES 64

_Static_assert((RING_SLOTS & (RING_SLOTS - 1)) == 0, "ring index wraps with a mask");

struct ring_msg {
    uint32_t kind;   /* what the receiver does with it; meaning set by the sender's module */
    uint32_t from;   /* sending shard */
    uint64_t a;      /* payload words, meaning by kind */
    uint64_t b;
    void *ptr;       /* sender-owned memory, when the kind carries some */
};

/* head and tail are free-running counters (index = counter & (RING_SLOTS - 1)), read
 * and written with atomic builtins only (acquire/release, core/ring.c). Each side
 * keeps a private copy of the other side's counter on its own cache line, so it
 * reads the shared one only when the copy says full (producer) or empty (consumer). */
struct ring {
    alignas(CACHE_LINE_BYTES) uint64_t head; /* written by the producer only */
    uint64_t tail_cached;                    /* producer's private copy of tail */
    alignas(CACHE_LINE_BYTES) uint64_t tail; /* written by the consumer only */
    uint64_t head_cached;                    /* consumer's private copy of head */
    alignas(CACHE_LINE_BYTES) struct ring_msg slots[RING_SLOTS];
};

void ring_init(struct ring *ring);

/* Producer side. Returns 0, or -TE_FULL when RING_SLOTS messages are unread. */
int ring_push(struct ring *ring, const struct ring_msg *msg);

/* Consumer side. Returns 0 with *msg filled, or -TE_EMPTY. */
int ring_pop(struct ring *ring, struct ring_msg *msg);

/* Messages currently in the ring (either side; a snapshot). */
size_t ring_count(const struct ring *ring);

struct mailbox;

/* One ring for every ordered pair (from, to) of shards, from != to, and one eventfd
 * per shard. Returns NULL on failure. */
struct mailbox *mailbox_create(unsigned shards);
void mailbox_destroy(struct mailbox *mailbox);

/* Called by shard `from` only. Pushes to the (from, to) ring and wakes `to` if it
 * needs waking. The message's from is set to `from`. Returns 0 or -TE_FULL (nothing
 * was sent). */
int mailbox_send(struct mailbox *mailbox, unsigned from, unsigned to, const struct ring_msg *msg);

/* Called by shard `to` only. Clears its wake flag, then pops up to max messages
 * from all its incoming rings (round robin, order kept per sender) and calls
 * handle for each. Returns the number handled. If it stops at max with messages
 * still waiting, it writes its own eventfd, so the rest are not stranded. */
size_t mailbox_drain(struct mailbox *mailbox, unsigned to,
                     void (*handle)(void *arg, const struct ring_msg *msg), void *arg, size_t max);

/* The eventfd shard `shard` reads (an 8-byte read) to learn that messages wait. */
int mailbox_eventfd(const struct mailbox *mailbox, unsigned shard);

#endif
