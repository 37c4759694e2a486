/* core/wake.h: waking a shard through the eventfd it keeps a read in flight on,
 * at most once per drain. Senders call wake_signal after publishing their item;
 * the shard calls wake_clear before taking items. The ordering argument (why no
 * wake-up is lost) is at the top of core/ring.c; core/workers.c uses the same. */
#ifndef TESSERA_CORE_WAKE_H
#define TESSERA_CORE_WAKE_H

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct wake {
    atomic_int woken; /* 1 from a sender's eventfd write until the shard's next drain */
    int eventfd;
};

/* Returns 0, or -1 when no eventfd can be had. */
static inline int wake_init(struct wake *wake)
{
    atomic_init(&wake->woken, 0);
    wake->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return wake->eventfd < 0 ? -1 : 0;
}

static inline void wake_close(struct wake *wake)
{
    if (wake->eventfd >= 0)
        close(wake->eventfd);
    wake->eventfd = -1;
}

/* S2: after the item is published. The plain load first keeps the flag's cache line
 * shared while it is set, the common case in a burst. */
static inline void wake_signal(struct wake *wake)
{
    if (atomic_load_explicit(&wake->woken, memory_order_seq_cst) != 0)
        return;
    if (atomic_exchange_explicit(&wake->woken, 1, memory_order_seq_cst) != 0)
        return;
    /* At most one write per drain: the counter cannot reach its 2^64 - 2 limit, so a
     * non-blocking write cannot fail with EAGAIN; anything else is a bug. */
    uint64_t one = 1;
    ssize_t written = write(wake->eventfd, &one, sizeof(one));
    assert(written == (ssize_t)sizeof(one));
    (void)written;
}

/* R1: before the shard takes items. */
static inline void wake_clear(struct wake *wake)
{
    atomic_store_explicit(&wake->woken, 0, memory_order_seq_cst);
}

#endif
