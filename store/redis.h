/* store/redis.h: a Redis client on a shard's io_uring loop (DESIGN §1: Redis carries
 * ephemeral state and fans revocations out). hiredis' async context drives the
 * protocol; its socket is watched through loop_watch, so no second event library
 * runs and the shard never blocks. Nobody outside store/ sees a redisAsyncContext.
 *
 * Commands are bounded (REDIS_PENDING_MAX in flight per client → -TE_FULL, answer
 * 503) and each has a deadline (REDIS_COMMAND_BUDGET_MS → REDIS_KIND_TIMEOUT). A
 * lost connection completes every command in flight with REDIS_KIND_UNAVAILABLE
 * at once, then reconnects with jittered exponential backoff. A client made with
 * redis_client_subscribe is a subscriber: it (re)subscribes its channels on every
 * connect and hands each message to its callback.
 *
 * The host is resolved once, when the client is made (before the loop serves): a
 * reconnect never resolves names on the shard's thread. */
#ifndef TESSERA_STORE_REDIS_H
#define TESSERA_STORE_REDIS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "core/slice.h"

#define REDIS_PENDING_MAX 4096       /* commands in flight per client: past it, back-pressure */
#define REDIS_COMMAND_BUDGET_MS 1000 /* Redis answers in well under a millisecond when well */
#define REDIS_BACKOFF_MIN_MS 50      /* first reconnect delay, doubled per failure ... */
#define REDIS_BACKOFF_MAX_MS 5000    /* ... up to this, each with up to 50% random jitter */
#define REDIS_ARGS_MAX 16            /* arguments of one command */
#define REDIS_CHANNELS_MAX 8         /* channels one subscriber follows */
#define REDIS_URL_BYTES_MAX 256

enum redis_reply_kind {
    REDIS_KIND_STRING,      /* bulk string: str, len */
    REDIS_KIND_STATUS,      /* +OK and kin: str, len */
    REDIS_KIND_INTEGER,     /* integer */
    REDIS_KIND_NIL,         /* key absent */
    REDIS_KIND_ARRAY,       /* elements (only the count is exposed: count) */
    REDIS_KIND_ERROR,       /* -ERR ...: str, len */
    REDIS_KIND_UNAVAILABLE, /* not connected, or the connection was lost */
    REDIS_KIND_TIMEOUT,     /* no answer within the budget */
};

struct redis_reply {
    enum redis_reply_kind kind;
    struct slice str;
    long long integer;
    size_t count;
};

struct redis_cmd;
typedef void (*redis_done_fn)(struct redis_cmd *cmd, const struct redis_reply *reply);

/* Embedded in the caller's request state; free to reuse once done has run. done
 * runs exactly once, on the shard's thread, and never inside redis_command. */
struct redis_cmd {
    redis_done_fn done;
    uint32_t budget_ms; /* 0: REDIS_COMMAND_BUDGET_MS */
    /* private */
    uint32_t slot;
};

struct redis_client;

/* Where a TESSERA_REDIS_URL points: redis://[:password@]host[:port][/db]. */
struct redis_endpoint {
    char host[INET6_ADDRSTRLEN]; /* the resolved address */
    int port;
    int db;
    char password[128];
};
/* Parses url and resolves its host now: 0, or -TE_INVAL. */
int redis_parse_url(const char *url, struct redis_endpoint *out);

/* One PUBLISH over a connection of its own, blocking up to timeout_ms per step: for the admin
 * CLI, which has no loop. 0, -TE_INVAL (a bad URL) or -TE_IO (Redis refused or did not answer). */
int redis_publish_once(const char *url, const char *channel, const char *message, int timeout_ms);

/* url: redis://host[:port][/db]. Resolves the host now. NULL (reason logged) on a bad
 * URL or a name that does not resolve. Connecting starts at redis_client_start. */
struct redis_client *redis_client_create(struct loop *loop, const char *url);
/* Starts connecting; call on the loop's thread (from the on_start hook). */
void redis_client_start(struct redis_client *client);
/* Disconnects; commands in flight complete with UNAVAILABLE before it returns. On the
 * loop's thread, and not from inside a command's done callback. */
void redis_client_stop(struct redis_client *client);
void redis_client_destroy(struct redis_client *client);
bool redis_client_ready(const struct redis_client *client);
/* Connections made so far (the first plus reconnects): for tests and metrics. */
uint64_t redis_client_connects(const struct redis_client *client);

/* Sends a command (argv form: binary-safe arguments). Returns 0, or -TE_FULL when
 * REDIS_PENDING_MAX are in flight, -TE_CLOSED when not connected (done not called). */
int redis_command(struct redis_client *client, struct redis_cmd *cmd, int argc,
                  const struct slice *argv);

/* Makes the client a subscriber of channel (before redis_client_start); on_message
 * runs on the shard's thread for every message published there. */
typedef void (*redis_message_fn)(void *arg, struct slice channel, struct slice message);
int redis_client_subscribe(struct redis_client *client, const char *channel,
                           redis_message_fn on_message, void *arg);

#endif
