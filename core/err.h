/* core/err.h: the error codes every module returns, negated, the way liburing
 * returns -errno. 0 is success; a positive value is a count (bytes, items). */
#ifndef TESSERA_CORE_ERR_H
#define TESSERA_CORE_ERR_H

enum te_err {
    TE_OK = 0,
    TE_FULL = 1,     /* a bounded queue is full: back-pressure, the caller waits or answers 503 */
    TE_EMPTY = 2,    /* nothing to take */
    TE_INVAL = 3,    /* bad argument or bad input */
    TE_NOMEM = 4,    /* a pool or arena is exhausted */
    TE_CLOSED = 5,   /* the peer or the object is gone */
    TE_TIMEOUT = 6,  /* a deadline passed */
    TE_IO = 7,       /* a system call failed; errno-level detail is logged where it happened */
};

#endif
